#!/bin/bash
# The kernel-module test, from nothing or from the cache (needs root).
#
#   tests/kmod/run.sh          (make test-kmod)
#
# prepare.sh: 01 chroot + toolchain (idempotent), 02 kernel (skipped when
# cached under the same key), 03 modules + guest programs; then 04
# initramfs, 05 boot in QEMU and check. Prints what each step cost and the total.
set -euo pipefail
D=$(dirname "$(readlink -f "$0")")
. "$D/common.sh"
[ "$(id -u)" = 0 ] || { echo "test-kmod needs root (chroot, mounts, apt-get)" >&2; exit 1; }
trap umount_chroot EXIT
T0=$(ts)
"$D/prepare.sh"
. "$RUN/prepare.env"
export KTREE
echo "=== 03 ins (host build, for the guest)"
# The instance the guest runs: the workspace's `ins`, built on the host;
# and the shim (libshim.so) nginx runs under in the guest.
(cd "$REPO" && ${CARGO:-cargo} build --release -q -p ins -p ins-shim -p ins-driver) || exit 1
echo "=== 04 initramfs"
"$D/04-initramfs.sh"
echo "=== 05 boot + check"
set +e
"$D/05-boot.sh"
ok=$?
set -e
# The guest's figures (guest/init `bench`): nginx natively, through the
# module and through the daemon, side by side as ratios.
tr -d '\r' < "$RUN/boot.log" | awk '
  /^KMODFIG / { print }
  /^KMODFIG (native|module|daemon) c=[0-9]+ rps=/ {
    split($3, c, "="); split($4, r, "="); split($5, p, "=")
    rps[$2 "/" c[2]] = r[2]; p50[$2 "/" c[2]] = p[2]; cs[c[2]] = 1
  }
  END {
    for (k in cs) {
      n = rps["native/" k]; m = rps["module/" k]; d = rps["daemon/" k]
      if (n > 0 && m > 0 && d > 0)
        printf "FIGURE kmod c=%s req/s: module %.0f%% of native, daemon %.0f%% of native, module %.2fx the daemon; p50 added: module %+d us, daemon %+d us\n",
          k, 100 * m / n, 100 * d / n, m / d, p50["module/" k] - p50["native/" k], p50["daemon/" k] - p50["native/" k]
    }
  }'
# CPU time of everything run (children's user + system): the wall time on
# an otherwise idle 2-core machine is about half of it for the kernel build.
# (`times` in this shell: a subshell would not see the children's time.)
times > "$RUN/times"
cpu=$(tail -1 "$RUN/times" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } } END { printf "%d", t }')
echo "COST test-kmod: total $(el "$T0")s wall, ${cpu}s CPU; chroot ${CHROOT_S}s, kernel ${KERNEL_S}s ($KERNEL_CACHED)"
exit $ok
