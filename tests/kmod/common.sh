# Shared settings for the kernel-module test (sourced by every step).
#
#   CACHE  persistent state, outside the repo: the trixie chroot with the
#          kernel's toolchain (rustc 1.85, bindgen, clang, lld, cargo) and,
#          per key, a lean copy of the built kernel tree plus its bzImage.
#   KEY    hash of everything the built kernel depends on: the config
#          fragment, the linux-source package version, `rustc -vV` and the
#          scripts that configure and build it (this file, 01, 02). A cached
#          tree is used only under the same key.
#   RUN    per-run output (project copy, initramfs, boot log).
SRC=${SRC:-$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")}   # tests/kmod
REPO=$(readlink -f "$SRC/../..")
CACHE=${INS_KMOD_CACHE:-/var/cache/ins/kmod}
R=$CACHE/root                         # trixie chroot
KSRC=/build/linux-source-6.12         # full kernel tree (inside the chroot)
K=$R$KSRC
RUN=$CACHE/run
mkdir -p "$CACHE" "$RUN"

ts() { date +%s; }
el() { echo $(( $(ts) - $1 )); }
mount_chroot() {
  mountpoint -q "$R/proc" || mount -t proc proc "$R/proc"
  mountpoint -q "$R/dev" || mount --bind /dev "$R/dev"
  mountpoint -q "$R/sys" || mount --bind /sys "$R/sys"
}
umount_chroot() {
  local m
  for m in sys dev proc; do mountpoint -q "$R/$m" && umount -l "$R/$m"; done
  true
}
in_chroot() { chroot "$R" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# The cache key (needs the chroot from step 01).
kernel_key() {
  {
    cat "$SRC/cfg/kmod.config" "$SRC/common.sh" "$SRC/01-chroot.sh" "$SRC/02-kernel.sh"
    in_chroot dpkg-query -W linux-source-6.12
    in_chroot rustc -vV
  } | sha256sum | cut -c1-16
}
