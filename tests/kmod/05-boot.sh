#!/bin/bash
# Step 05: boot the kernel in QEMU (TCG: KVM here cannot run these guests);
# guest/init runs the tests and reboots (QEMU exits). Then check the log: every
# expected test passed, no oops/BUG/WARNING. Prints "N passed, M failed".
set -uo pipefail
. "$(dirname "$0")/common.sh"
cd "$RUN"
T0=$(ts)
timeout "${BOOT_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp 2 \
  -display none -serial stdio -monitor none -no-reboot \
  -kernel bzImage -initrd initramfs.cpio.gz \
  -append "console=ttyS0 panic=-1 loglevel=6 KMOD_BENCH_SECS=${KMOD_BENCH_SECS:-3} ${KMOD_CMDLINE-kmemleak=on}" </dev/null > boot.log 2>&1
rc=$?
echo "TIMING boot $(el "$T0")s (qemu rc=$rc)"
exec python3 "$SRC/check.py" "$RUN/boot.log" "$SRC/expected.txt"
