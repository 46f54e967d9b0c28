#!/bin/bash
# Boots a unikernel test in the Xen lab (QEMU TCG).
#   XENLAB=<dir of a built copy of shared/lab/xen> ins-unikernel/ins-pv/lab/run.sh [boot]
# test: boot (dom0-boot-test.sh, the only one). The network test is part
# of the project's lab (`make test-xen`, tests/xen/unikernel.sh).
# Repacks the lab's dom0 initramfs with the image (make unikernel) and the
# test as /init; exit 0 iff the test printed XENLAB_ALL_OK.
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../../..")
L=${XENLAB:?set XENLAB to a built Xen lab directory}
IMAGE=${IMAGE:-$ROOT/target/unikernel/x86_64-unknown-linux-gnu/release/ins-pv}
R=$L/build/dom0-root
install -m755 "$IMAGE" "$R/boot/ins-pv"
install -m755 "$HERE/dom0-${1:-boot}-test.sh" "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$L/build/dom0-ukl.cpio.gz"
mkdir -p "$L/logs"; LOG=$L/logs/ukl-$(date +%H%M%S).log
echo "LOG=$LOG"
timeout "${TIMEOUT:-400}" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -machine pc -m 3072 -smp 2 \
  -display none -no-reboot -monitor none -serial stdio -nodefaults \
  -kernel "$L/build/xen" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 guest_loglvl=all noreboot" \
  -initrd "$L/build/vmlinuz console=hvc0 rdinit=/init,$L/build/dom0-ukl.cpio.gz" </dev/null > "$LOG" 2>&1 || true
grep -E "UKL|LINUX|INS_PV|PANIC|FATAL|XENLAB|net:" "$LOG" || true
grep -q XENLAB_ALL_OK "$LOG"
