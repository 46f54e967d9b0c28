#!/bin/bash
# Boots Xen + the PV dom0 (initramfs) in QEMU with software emulation; the
# serial console goes to a log with host timestamps. dom0's /init runs the
# lab's tests and powers off.
#   env: INS_XEN_OUT (images, default <repo>/target/xen), LOG, CPU (qemu64),
#        SMP (2), MEM (3072 MiB), DOM0MEM (1024M), TIMEOUT (1500 s; a whole run took 1,044 s at load average 9), XEN_EXTRA
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
OUT=${INS_XEN_OUT:-$ROOT/target/xen}
LOG=${LOG:-$OUT/logs/boot-$(date +%H%M%S).log}
mkdir -p "$(dirname "$LOG")"
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=${DOM0MEM:-1024M},max:${DOM0MEM:-1024M} dom0_max_vcpus=${SMP:-2} loglvl=warning guest_loglvl=warning noreboot spec-ctrl=no xpti=false ${XEN_EXTRA:-}"
DOM0_ARGS="console=hvc0 earlyprintk=xen rdinit=/init loglevel=4 mitigations=off${INS_XEN_TESTS:+ ins_tests=$INS_XEN_TESTS}"
T0=$(date +%s.%N)
echo "== booting Xen in QEMU (TCG); log: $LOG"
set +e
timeout "${TIMEOUT:-1500}" qemu-system-x86_64 -accel tcg,thread=multi -cpu "${CPU:-qemu64}" -machine pc \
  -m "${MEM:-3072}" -smp "${SMP:-2}" -display none -no-reboot -monitor none -serial stdio -nodefaults \
  -kernel "$OUT/xen" -append "$XEN_ARGS" \
  -initrd "$OUT/vmlinuz $DOM0_ARGS,$OUT/dom0.cpio.gz" </dev/null 2>&1 \
 | python3 -u -c '
import sys, time
t0 = float(sys.argv[1])
for line in sys.stdin.buffer:
    sys.stdout.write("[%7.2f] %s" % (time.time() - t0, line.decode("utf-8", "replace")))
' "$T0" > "$LOG"
rc=${PIPESTATUS[0]}
set -e
echo "== qemu exit $rc after $(python3 -c "import time;print(round(time.time()-$T0,1))") s"
