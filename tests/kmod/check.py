#!/usr/bin/env python3
"""Checks a guest boot log: every test in expected.txt reported PASS, the
guest finished, and the kernel log has no oops, BUG or WARNING.

The guest prints `KMODTEST PASS <name>` or `KMODTEST FAIL <name>: <why>`.
Prints one line per test and `N passed, M failed`; exits 1 on any failure.
"""
import re
import sys

log_path, expected_path = sys.argv[1], sys.argv[2]
log = open(log_path, errors="replace").read()
expected = [l.split("#")[0].strip() for l in open(expected_path)]
expected = [e for e in expected if e]

results = {}
for m in re.finditer(r"KMODTEST (PASS|FAIL) ([\w.-]+)(.*)", log):
    status, name, rest = m.groups()
    if results.get(name) != "FAIL":
        results[name] = status
    if status == "FAIL":
        print(f"FAIL {name}{rest}")

bad = [l for l in log.splitlines()
       if re.search(r"\b(Oops|BUG:|WARNING:|kernel BUG|Call Trace|general protection|Kernel panic)", l)]
results["no-oops"] = "FAIL" if bad else "PASS"
for l in bad[:20]:
    print("kernel:", l)
results["guest-finished"] = "PASS" if "KMODTEST-DONE" in log else "FAIL"


def conformance():
    """tests/c/conformance.c in the guest natively and under the shim through
    the module (lines `KMODCONF native|shim <step>: <ret errno detail>`):
    every step must match, except those in conformance-gaps.txt (the module's
    known gaps, each with its reason), and a listed gap that matches fails
    too (so the list stays true). The host's `--test conformance` does the
    same against the daemon."""
    runs = {"native": {}, "shim": {}}
    order = []
    for m in re.finditer(r"^KMODCONF (native|shim) (.*?): (.*)$", log, re.M):
        how, step, value = m.groups()
        if how == "native" and step not in runs["native"]:
            order.append(step)
        runs[how][step] = value.strip()
    gaps_path = expected_path.replace("expected.txt", "conformance-gaps.txt")
    gaps = {}
    for line in open(gaps_path):
        line = line.split("#")[0].strip()
        if line:
            step, _, why = line.partition(" ")
            gaps[step] = why.strip()
    diffs, known = [], []
    exits = re.search(r"KMOD: conformance exited (\d+) natively, (\d+) under the shim", log)
    if not exits or exits.groups() != ("0", "0"):
        diffs.append(f"the script did not exit 0 both ways: {exits.group(0) if exits else 'no exit line'}")
    for step in gaps:
        if step not in runs["native"]:
            diffs.append(f"{step}: listed in conformance-gaps.txt but the script has no such step")
    for step in order:
        nv, sv = runs["native"][step], runs["shim"].get(step)
        if sv is None:
            diffs.append(f"{step}: native {nv} | module <missing: stopped before this step>")
        elif step in gaps:
            if sv == nv:
                diffs.append(f"{step}: listed in conformance-gaps.txt but matches Linux now")
            else:
                known.append(f"{step} ({gaps[step]}): native {nv} | module {sv}")
        elif sv != nv:
            diffs.append(f"{step}: native {nv} | module {sv}")
    for step in runs["shim"]:
        if step not in runs["native"]:
            diffs.append(f"{step}: only under the module: {runs['shim'][step]}")
    print(f"conformance in the guest: {len(order)} steps, {len(diffs)} differences, {len(known)} known gaps")
    for d in known:
        print("  known gap:", d)
    for d in diffs:
        print("  DIFFERS:", d)
    return len(order) > 150 and not diffs


results["kmod-conformance"] = "PASS" if conformance() else "FAIL"

passed = failed = 0
for name in expected + ["no-oops", "guest-finished", "kmod-conformance"]:
    st = results.get(name, "MISSING")
    print(f"{'ok  ' if st == 'PASS' else 'FAIL'} {name}{'' if st in ('PASS', 'FAIL') else ' (not reported)'}")
    if st == "PASS":
        passed += 1
    else:
        failed += 1
if failed:
    print("--- tail of", log_path)
    print("\n".join(log.splitlines()[-40:]))
print(f"kmod: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
