#!/bin/bash
# Boots Xen + the PV dom0 (initramfs) in QEMU with software emulation; the
# serial console goes to a log with host timestamps. dom0's /init runs the
# lab's tests and powers off.
#   env: INS_XEN_OUT (images, default <repo>/target/xen), LOG, CPU (qemu64),
#        INS_XEN_TESTS (a part of the lab: unikernel, spawn, hostile; default all), BOOT_WATCHDOG (300 s),
#        SMP (2), MEM (3072 MiB), DOM0MEM (1024M), TIMEOUT (2400 s; 15 tests took 1,044 s at load average 9, and the lab now has 34), XEN_EXTRA
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
OUT=${INS_XEN_OUT:-$ROOT/target/xen}
LOG=${LOG:-$OUT/logs/boot-$(date +%H%M%S).log}
mkdir -p "$(dirname "$LOG")"
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=${DOM0MEM:-1024M},max:${DOM0MEM:-1024M} dom0_max_vcpus=${SMP:-2} loglvl=warning guest_loglvl=warning noreboot spec-ctrl=no xpti=false ${XEN_EXTRA:-}"
DOM0_ARGS="console=hvc0 earlyprintk=xen rdinit=/init loglevel=4 mitigations=off${INS_XEN_TESTS:+ ins_tests=$INS_XEN_TESTS}"
# A boot watchdog: QEMU's TCG has hung (rarely) in dom0's early boot, before
# its /init ran (no output for many minutes after "Poking KASLR"). If dom0
# does not print DOM0_READY within BOOT_WATCHDOG seconds (default 300;
# normally 15-40 s, about 100 s on a loaded machine), QEMU is killed and the
# boot is tried once more; both attempts are in the log.
PIDFILE=$OUT/qemu.pid
boot() { # attempt number; sets rc (QEMU's exit) and wd (1: the watchdog fired)
  rm -f "$PIDFILE"
  T0=$(date +%s.%N)
  echo "== booting Xen in QEMU (TCG), attempt $1; log: $LOG"
  echo "BOOT_ATTEMPT $1" >> "$LOG"
  set +e
  timeout "${TIMEOUT:-2400}" qemu-system-x86_64 -accel tcg,thread=multi -cpu "${CPU:-qemu64}" -machine pc \
    -m "${MEM:-3072}" -smp "${SMP:-2}" -display none -no-reboot -monitor none -serial stdio -nodefaults \
    -pidfile "$PIDFILE" -kernel "$OUT/xen" -append "$XEN_ARGS" \
    -initrd "$OUT/vmlinuz $DOM0_ARGS,$OUT/dom0.cpio.gz" </dev/null 2>&1 \
   | python3 -u -c '
import os, select, signal, sys, time
t0, limit, pidfile = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
fd, buf, ready = sys.stdin.fileno(), b"", False
while True:
    wait = None if ready else max(0.0, t0 + limit - time.time())
    r, _, _ = select.select([fd], [], [], wait)
    if not r:
        sys.stdout.write("[%7.2f] BOOT_WATCHDOG no DOM0_READY in %d s: QEMU killed\n" % (time.time() - t0, limit))
        try:
            os.kill(int(open(pidfile).read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        sys.exit(3)
    chunk = os.read(fd, 65536)
    if not chunk:
        if buf:
            sys.stdout.write("[%7.2f] %s\n" % (time.time() - t0, buf.decode("utf-8", "replace")))
        sys.exit(0)
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        ready = ready or b"DOM0_READY" in line
        sys.stdout.write("[%7.2f] %s\n" % (time.time() - t0, line.decode("utf-8", "replace")))
' "$T0" "${BOOT_WATCHDOG:-300}" "$PIDFILE" >> "$LOG"
  ps=("${PIPESTATUS[@]}"); rc=${ps[0]}; wd=$(( ps[1] == 3 ))
  set -e
  echo "== qemu exit $rc after $(python3 -c "import time;print(round(time.time()-$T0,1))") s"
}
: > "$LOG"
boot 1
if [ "$wd" = 1 ]; then
  echo "== dom0 did not come up within ${BOOT_WATCHDOG:-300} s (a QEMU hang before dom0's /init): booting again"
  boot 2
fi
