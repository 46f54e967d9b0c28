#!/usr/bin/env python3
"""Reads a lab boot log, prints each test's result and the figures side by
side (ring over grant pages + event channels vs plain TCP between the same
two domains over the bridge), and exits non-zero unless every test passed
and the lab ran to its end."""
import re
import sys

log = open(sys.argv[1], encoding="utf-8", errors="replace").read()
tests = re.findall(r"XENTEST (\S+) (PASS|FAIL) ?(.*)", log)
figures = {}
for name, value, unit in re.findall(r"FIGURE (\S+) ([0-9.]+) (\S+)", log):
    figures[name] = (float(value), unit)
done = re.search(r"XENLAB_DONE failed=(\d+) elapsed=([0-9.]+)", log)

print("== Xen lab results")
for name, verdict, detail in tests:
    print(f"  {verdict:4}  {name:18} {detail.strip()}")


def show(patterns):
    """Prints the last six distinct lines matching each pattern."""
    for pat in patterns:
        seen = []
        for line in re.findall(pat, log):
            line = re.sub(r"^\[\S+\]\s*", "", line.strip())
            if line not in seen:
                seen.append(line)
        for line in seen[-6:]:
            print("        " + line)


print("== the real driver with an instance in another domain (driver-over-xen)")
show((r"xen fetch .*", r"xen keep-alive: .*", r"curl: port .*", r"XFLOW 169\.254\.100\.1:.*", r"XLIST .*",
      r"XGONE .*"))
print("== the PV unikernel as the driver's instance (tests 16-22, 35, 36)")
show((r"instance: max_sockets.*", r"INS_PV_JOINED driver=.*", r"ukr fetch .*", r"ukr keep-alive: .*",
      r"UFLOW 169\.254\.100\.1:.*", r"ukr udp: .*", r"ukr ipv6.*", r"ukr block: .*", r"ukr limit: .*"))
for marker in ("XENCHAN_CONNECTED", "XENCHAN_EXCHANGE_OK", "XENCHAN_SNOOP_REFUSED", "XENCHAN_CLOSED",
               "XENCHAN_INS_JOINED", "XENCHAN_INS_SERVED", "XENCHAN_PEER_GONE"):
    for line in re.findall(marker + r".*", log):
        print("        " + line.strip())
print("== instance domains made by ins-xen-agent (tests 23-27; unikernels 28-33)")
for pat in (r"XAGENT created .*", r"\bspawn fetch .*", r"\bspawn load: .*", r"FIGURE spawn_\S+ .*",
            r"XSPAWN_REFUSED .*", r"INS_PV_JOINED driver=\S+ channel=k.*", r"ukspawn fetch .*",
            r"ukspawn load: .*", r"\bspawn rate: .*", r"ukspawn rate: .*", r"ukspawn scale: .*", r"ukspawn rotate: .*",
            r"FIGURE ukspawn_\S+ .*"):
    for line in dict.fromkeys(re.sub(r"^\[\S+\]\s*", "", x.strip()) for x in re.findall(pat, log)):
        print("        " + line)
print("== the kernel module in a PVM whose kernel is tests/kmod's (tests 39-46)")
show((r"KPVM kernel .*", r"KPVM listeners .*", r"kmod fetch .*", r"kmod keep-alive: .*", r"kmod failover: .*", r"kmod xen .*", r"KPVM attach-xen.*", r"KPVM xen channel pages.*", r"KPVM hostile: .*", r"KPVM kmemleak .*",
      r"kmod probe.*", r"KPROBE \d+ rounds.*", r"KPROBE mapped .*"))
print("== figures (QEMU TCG: only the ratios mean anything)")
for label, ukl, lnx in (("boot: xl create -> ready", "ukl_boot_s", "linux_boot_s"),
                        ("boot: xl create returned -> ready", "ukl_after_xl_create_s", "linux_after_xl_create_s")):
    if ukl in figures and lnx in figures:
        u, n = figures[ukl][0], figures[lnx][0]
        print(f"  {label:34} unikernel {u:.2f} s, Linux domU {n:.2f} s: unikernel at {u / n:.2f} of Linux")
    else:
        print(f"  {label:34} missing ({ukl} / {lnx})")
for label, ukl, lnx in (("instance domains: up, 2 joined", "ukspawn_up_s", "spawn_up_s"),
                        ("instance domain memory", "ukspawn_domain_mem_mib", "spawn_domain_mem_mib"),
                        ("req/s, one keep-alive connection", "ukspawn_ka_rps", "spawn_ka_rps"),
                        ("req/s, a connection each", "ukspawn_conn_rps", "spawn_conn_rps"),
                        ("failover: destroy -> replaced", "ukspawn_replace_s", "spawn_replace_s")):
    if ukl in figures and lnx in figures:
        (u, unit), n = figures[ukl], figures[lnx][0]
        print(f"  {label:34} unikernel {u:.1f} {unit}, Linux domU {n:.1f} {unit}: unikernel at {u / n:.2f} of Linux")
    elif ukl in figures or lnx in figures:
        print(f"  {label:34} missing ({ukl} / {lnx})")
for label, mod, nat in (("kpvm req/s, one keep-alive connection", "kpvm_module_ka_rps", "kpvm_native_ka_rps"),
                        ("kpvm req/s, a connection each", "kpvm_module_conn_rps", "kpvm_native_conn_rps")):
    if mod in figures and nat in figures and figures[nat][0] > 0:
        m, n = figures[mod][0], figures[nat][0]
        print(f"  {label:34} through ins.ko {m:.1f}, native {n:.1f}: module at {m / n:.2f} of native")
for label, xen, loc in (("kpvm req/s, one keep-alive connection", "kpvm_xen_instance_ka_rps", "kpvm_module_ka_rps"),
                        ("kpvm req/s, a connection each", "kpvm_xen_instance_conn_rps", "kpvm_module_conn_rps")):
    if xen in figures and loc in figures and figures[loc][0] > 0:
        x, l = figures[xen][0], figures[loc][0]
        print(f"  {label:34} through an instance domain {x:.1f}, a local instance {l:.1f}: {x / l:.2f}")
rows = [("round trip, 64 B", "ring_rtt_us", "tcp_rtt_us", "us", False),
        ("throughput, 16 KiB frames", "ring_mib_s", "tcp_mib_s", "MiB/s", True)]
print(f"  {'':28}{'xen ring':>12}{'tcp/bridge':>12}   ratio")
for label, ring, tcp, unit, higher_better in rows:
    if ring in figures and tcp in figures:
        r, t = figures[ring][0], figures[tcp][0]
        ratio = (r / t) if higher_better else (t / r)
        print(f"  {label:28}{r:>10.1f} {unit:<1}{t:>10.1f} {unit:<1}   ring {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'}")
    else:
        print(f"  {label:28} missing ({ring} / {tcp})")
ok = bool(done) and int(done.group(1)) == 0 and tests and all(v == "PASS" for _, v, _ in tests)
# The whole lab has 46 tests; INS_XEN_TESTS=unikernel (LAB_TESTS unikernel)
# runs the unikernel's 14 (16, 17, 20, 35, 36, 21, 22, 18, 19, then 11-15),
# INS_XEN_TESTS=spawn the 13 of tests/xen/spawn.sh (23-33, 37, 38), INS_XEN_TESTS=hostile
# test 34 (tests/xen/hostile.sh), INS_XEN_TESTS=kmod tests 39-46 (tests/xen/kmod.sh).
part = re.search(r"LAB_TESTS (\S+)", log)
expected = {"unikernel": 14, "spawn": 13, "hostile": 1, "kmod": 8}.get(part.group(1) if part else "all", 46)
if len(tests) < expected:
    print(f"== {len(tests)} results, {expected} expected")
ok = ok and len(tests) >= expected
if done:
    print(f"== dom0 ran the tests in {done.group(2)} s; {'all passed' if ok else 'FAILURES'}")
else:
    print("== the lab did not finish (no XENLAB_DONE): see the log")
sys.exit(0 if ok else 1)
