#!/bin/bash
# Steps 01-03 of the kernel-module test, which the Xen lab needs too: the
# chroot (host packages first when missing), the kernel (cached under its
# key), the modules and the guest's static programs built against it.
#
#   tests/kmod/prepare.sh [DIR]
#
# With DIR, copies the kernel (bzImage, Xen PV capable), ins.ko and ins_xenprobe.ko there.
# Writes $RUN/prepare.env (KTREE, CHROOT_S, KERNEL_S, KERNEL_CACHED) for
# run.sh. SKIP_APT=1 (the Xen lab's offline rebuild) leaves an existing
# chroot as it is (no apt-get in it). Needs root.
set -euo pipefail
D=$(dirname "$(readlink -f "$0")")
. "$D/common.sh"
[ "$(id -u)" = 0 ] || { echo "the kernel-module build needs root (chroot, mounts, apt-get)" >&2; exit 1; }
trap umount_chroot EXIT
T0=$(ts)
# The host's part: what the steps run outside the chroot.
need=()
for t in debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 cpio:cpio \
         gzip:gzip python3:python3; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "=== host packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${SKIP_APT:-0}" = 1 ] && [ -x "$R/usr/bin/rustc" ]; then
  echo "=== 01 chroot ($R): SKIP_APT=1, as it is"
else
  echo "=== 01 chroot ($R)"
  "$D/01-chroot.sh" > "$RUN/01.log" 2>&1 || { tail -30 "$RUN/01.log"; exit 1; }
  grep TIMING "$RUN/01.log" || true
fi
T1=$(ts)
echo "=== 02 kernel"
"$D/02-kernel.sh" > "$RUN/02.out" 2> "$RUN/02.log" || { tail -40 "$RUN/02.log"; exit 1; }
KTREE=$(tail -1 "$RUN/02.out")/tree
export KTREE
grep -E '^(kernel:|TIMING)' "$RUN/02.log" || true
T2=$(ts)
echo "=== 03 modules"
set -o pipefail
"$D/03-module.sh" 2>&1 | tee "$RUN/03.log" | grep -vE '^\s*$' | tail -20
cached=$(grep -q 'kernel: cached' "$RUN/02.log" && echo cached || echo built)
printf 'KTREE=%s\nCHROOT_S=%s\nKERNEL_S=%s\nKERNEL_CACHED=%s\n' "$KTREE" $((T1 - T0)) $((T2 - T1)) "$cached" > "$RUN/prepare.env"
if [ $# -ge 1 ]; then
  mkdir -p "$1"
  cp "$R$(dirname "$KTREE")/bzImage" "$1/bzImage"
  cp "$R/build/ins-src/protvm-driver/kmod/ins.ko" "$R/build/ins-src/protvm-driver/kmod/ins_xenprobe.ko" "$1/"
  echo "=== kernel and ins.ko in $1 ($(el "$T0") s; kernel $cached)"
fi
