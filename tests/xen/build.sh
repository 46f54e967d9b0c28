#!/bin/bash
# Builds the INS Xen lab: Xen 4.17 + Debian's Linux as PV dom0 and domUs,
# initramfs images carrying the project's release binaries, nginx and curl.
#
#   env: INS_XEN_CACHE (default /var/cache/ins/xen): downloaded Debian
#        packages, unpacked, keyed on their exact versions;
#        INS_XEN_OUT (default <repo>/target/xen): images;
#        SKIP_APT=1: do not apt-get (offline rebuild); CARGO (cargo).
# Installs what it needs as root (apt-get update first).
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
ROOT=$(readlink -f "$HERE/../..")
CACHE=${INS_XEN_CACHE:-/var/cache/ins/xen}
OUT=${INS_XEN_OUT:-$ROOT/target/xen}
CARGO=${CARGO:-cargo}
PKGS="xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils"
mkdir -p "$CACHE" "$OUT"
t0=$(date +%s)

if [ "${SKIP_APT:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-system-x86 busybox-static cpio python3 \
    libxen-dev nginx-light curl bash binutils >/dev/null
  service nginx stop >/dev/null 2>&1 || true
fi
KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
[ -n "$KPKG" ] || { echo "build.sh: cannot find the Debian kernel package (run apt-get update)" >&2; exit 1; }
# The cache key: every package's exact candidate version.
KEY=$(for p in $PKGS $KPKG; do echo "$p=$(apt-cache policy $p | sed -n 's/ *Candidate: //p')"; done | sha256sum | cut -c1-16)
X=$CACHE/x-$KEY
if [ ! -e "$X/.complete" ]; then
  echo "== downloading Xen and kernel packages ($KPKG) into $X"
  rm -rf "$X" "$CACHE/debs-$KEY"; mkdir -p "$CACHE/debs-$KEY" "$X"
  chmod 777 "$CACHE/debs-$KEY"   # apt downloads as _apt
  (cd "$CACHE/debs-$KEY" && apt-get download -qq $PKGS $KPKG)
  for d in "$CACHE"/debs-$KEY/*.deb; do dpkg -x "$d" "$X"; done
  KV=$(ls "$X/lib/modules" | head -1)
  gzip -dc "$X/boot/xen-4.17-amd64.gz" > "$X/xen"           # QEMU multiboot cannot load gzip
  # A pre-decompressed ELF kernel for the domUs: xl skips the XZ unpack.
  python3 -c 'import lzma,sys;d=open(sys.argv[1],"rb").read();i=d.find(b"\xfd7zXZ\x00");open(sys.argv[2],"wb").write(lzma.LZMADecompressor().decompress(d[i:]))' \
    "$X/boot/vmlinuz-$KV" "$X/vmlinux-domU"
  rm -rf "$CACHE/debs-$KEY"
  touch "$X/.complete"
fi
KV=$(ls "$X/lib/modules" | head -1)
echo "== packages ready ($(( $(date +%s) - t0 )) s)"

# The project's release binaries (incremental when target/ is warm).
(cd "$ROOT" && $CARGO build --release -q -p ins -p ins-driver -p ins-ctl -p ins-shim -p ins-xen-agent \
  && $CARGO build --release -q -p ins-transport --example xenchan)
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
echo "== binaries built ($(( $(date +%s) - t0 )) s)"

# The unikernel image (`make unikernel`: lto, its own target directory, a
# few CPU-minutes cold), cached as $CACHE/ukl-<key>/ins-pv; key: the
# sources (.rs, Cargo.toml, Cargo.lock, linker scripts) of every local
# crate it is built from (cargo metadata), the workspace's Cargo.toml, the
# toolchain and the Makefile's UNIKERNEL_ flags.
UDIRS=$(cd "$ROOT" && $CARGO metadata -q --format-version 1 --manifest-path ins-unikernel/ins-pv/Cargo.toml \
  | python3 -c 'import json,os,sys; [print(os.path.relpath(os.path.dirname(p["manifest_path"]), sys.argv[1])) for p in json.load(sys.stdin)["packages"] if p["source"] is None]' "$ROOT")
UKEY=$(cd "$ROOT" && { find $UDIRS -type f -not -path '*/target/*' \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name '*.ld' \) -print0 | sort -z | xargs -0 sha256sum; rustc -vV; cat "$ROOT/Cargo.toml"; grep '^UNIKERNEL_' "$ROOT/Makefile"; } | sha256sum | cut -c1-16)
UIMG=$CACHE/ukl-$UKEY/ins-pv
if [ ! -e "$UIMG" ]; then
  (cd "$ROOT" && make -s unikernel CARGO="$CARGO" >/dev/null)
  mkdir -p "$CACHE/ukl-$UKEY"; install -m755 "$ROOT/target/unikernel/x86_64-unknown-linux-gnu/release/ins-pv" "$UIMG.tmp" && mv "$UIMG.tmp" "$UIMG"
fi
echo "== unikernel image $UIMG ($(( $(date +%s) - t0 )) s)"

# The kernel-module PVM (tests 39-46, tests/xen/kmod.sh): the Rust-enabled
# Linux 6.12 of tests/kmod (Xen PV guest support in its config; built once
# and cached under its key, /var/cache/ins/kmod) as a PV domU kernel, and
# protvm-driver/kmod's ins.ko built against it.
"$ROOT/tests/kmod/prepare.sh" "$OUT/kmod"
echo "== kernel module and its kernel ($(( $(date +%s) - t0 )) s)"

# copy_bins ROOT DEST_DIR FILE...: files (symlinks resolved) into ROOT/DEST_DIR
# (or their own path when DEST_DIR is "-"), with their shared libraries.
copy_bins() {
  local root=$1 dest=$2; shift 2
  for b in "$@"; do
    local src=$b; [ -e "$src" ] || src=$X$b
    local to=$b; [ "$dest" = - ] || to=$dest/$(basename "$b")
    install -D -m755 "$(readlink -f "$src")" "$root$to"
    ldd "$(readlink -f "$src")" 2>/dev/null | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
      [ -n "$lib" ] && [ -e "$lib" ] && install -D -m755 "$(readlink -f "$lib")" "$root$lib"
    done
  done
}
base_root() {
  local root=$1; shift
  rm -rf "$root"; mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,etc,root,lib/modules,boot,srv/www,opt/ins/bin}
  cp /bin/busybox "$root/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
  local M=$X/lib/modules/$KV/kernel
  for m in "$@"; do cp "$(find "$M" -name "$m.ko" | head -1)" "$root/lib/modules/"; done
  install -D -m644 /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/libgcc_s.so.1"
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  echo 'nogroup:x:65534:' >> "$root/etc/group"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> "$root/etc/passwd"
  printf '127.0.0.1 localhost\n169.254.100.1 dom0\n169.254.100.2 pvm\n169.254.100.3 ins1\n' > "$root/etc/hosts"
  copy_bins "$root" - /usr/bin/xenstore-read /usr/bin/xenstore-write /usr/bin/xenstore-ls
}
mkcpio() { (cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$2"; }

# Test files, identical in dom0 (expected digests) and the PVM (served).
WWW=$OUT/www; rm -rf "$WWW"; mkdir -p "$WWW"
printf '<html><body>INS in Xen: served by nginx under libshim.so</body></html>\n' > "$WWW/small.html"
head -c 1048576 /dev/urandom > "$WWW/big.bin"
for f in small.html big.bin; do sha256sum "$WWW/$f" > "$WWW/$f.sha256"; done

# ---- domU initramfs: one image for the PVM, the instance and the snooper
R=$OUT/domU-root; base_root "$R" xen-evtchn xen-gntdev xen-gntalloc xen-netfront
copy_bins "$R" /opt/ins/bin "$REL/ins" "$REL/ins-driver" "$REL/ins-ctl" "$REL/examples/xenchan" /usr/sbin/nginx /usr/bin/socat
install -m644 "$REL/libshim.so" "$R/opt/ins/bin/libshim.so"
# Release builds carry debug info (profile.release debug = 1): strip the
# copies, or the initramfs does not fit a small domain.
strip --strip-unneeded "$R"/opt/ins/bin/*
mkdir -p "$R/etc/ins" "$R/var/lib/nginx" "$R/var/log/nginx"
install -m644 "$HERE/nginx.conf" "$R/etc/ins/nginx.conf"
install -m755 "$HERE/pvm-web.sh" "$R/opt/ins/pvm-web.sh"
install -m755 "$HERE/pvm-xen.sh" "$R/opt/ins/pvm-xen.sh"
install -m755 "$HERE/pvm-spawn.sh" "$R/opt/ins/pvm-spawn.sh"
install -m755 "$HERE/pvm-kmod.sh" "$R/opt/ins/pvm-kmod.sh"
# ins.ko and ins_xenprobe.ko load only in the kmod PVM (its kernel's vermagic).
for k in ins ins_xenprobe; do install -D -m644 "$OUT/kmod/$k.ko" "$R/lib/ins/$k.ko" && strip --strip-debug "$R/lib/ins/$k.ko"; done
cp "$WWW/small.html" "$WWW/big.bin" "$R/srv/www/"
install -m755 "$HERE/domU-init.sh" "$R/init"
mkcpio "$R" "$OUT/domU.cpio.gz"

# ---- dom0 initramfs: toolstack, hotplug scripts (bash), domU kernel + image
R=$OUT/dom0-root; base_root "$R" xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback bridge stp llc
XB=/usr/lib/xen-4.17/bin
copy_bins "$R" - $XB/xl $XB/xenstored $XB/xenconsoled $XB/xenconsole $XB/xen-init-dom0 $XB/libxl-save-helper \
  /usr/bin/xenstore-list /usr/bin/xenstore-chmod /bin/bash /usr/bin/curl
mkdir -p "$R/etc/xen"; cp -a "$X/etc/xen/scripts" "$X/etc/xen/xl.conf" "$R/etc/xen/"
vif() { echo "'bridge=xenbr0,mac=00:16:3e:00:64:$1'"; }
sed "s/@NAME@/pvm/; s/@MEM@/320/; s/@VIF@/$(vif 02)/; s/@IP@/169.254.100.2/" "$HERE/du.cfg.in" > "$R/etc/xen/pvm.cfg"
sed "s/@NAME@/ins1/; s/@MEM@/192/; s/@VIF@/$(vif 03)/; s/@IP@/169.254.100.3/" "$HERE/du.cfg.in" > "$R/etc/xen/ins1.cfg"
sed "s/@NAME@/kpvm/; s/@MEM@/320/; s/@VIF@/$(vif 09)/; s/@IP@/169.254.100.9 kmemleak=on/; s|/boot/vmlinuz-domU|/boot/vmlinuz-kmod|" "$HERE/du.cfg.in" > "$R/etc/xen/kpvm.cfg"
# kins: an instance domain for ins.ko in kpvm (tests 44-45); kmod.sh puts
# kpvm's domain id in place of @KDOM@ before creating it.
sed "s/@NAME@/kins/; s/@MEM@/192/; s/@VIF@/$(vif 0a)/; s/@IP@/169.254.100.10 ins_driver=@KDOM@ ins_channel=kx/" "$HERE/du.cfg.in" > "$R/etc/xen/kins.cfg"
sed "s/@NAME@/snoop/; s/@MEM@/192/; s/@VIF@//; s/ ins_ip=@IP@//" "$HERE/du.cfg.in" > "$R/etc/xen/snoop.cfg"
cp "$X/vmlinux-domU" "$R/boot/vmlinuz-domU"
cp "$OUT/kmod/bzImage" "$R/boot/vmlinuz-kmod"
cp "$OUT/domU.cpio.gz" "$R/boot/domU.cpio.gz"
cp "$WWW"/*.sha256 "$WWW/small.html" "$WWW/big.bin" "$R/srv/www/"
sed -i 's|  .*/www/| /srv/www/|' "$R"/srv/www/*.sha256
install -m755 "$HERE/dom0-init.sh" "$R/init"
install -D -m755 "$UIMG" "$R/boot/ins-pv"; install -D -m644 "$HERE/unikernel.sh" "$R/etc/ins/unikernel.sh"
install -D -m644 "$HERE/ukring.sh" "$R/etc/ins/ukring.sh"
# The toolstack agent (tests 23-33, spawn.sh) and its xl templates (Linux
# instance domains; unikernel ones: /boot/ins-pv above).
# xenchan: the peer of the module's Xen probe (test 43, kmod.sh).
copy_bins "$R" /opt/ins/bin "$REL/ins-xen-agent" "$REL/examples/xenchan"; strip --strip-unneeded "$R/opt/ins/bin/ins-xen-agent" "$R/opt/ins/bin/xenchan"
install -D -m644 "$HERE/inst.cfg.in" "$R/etc/ins/inst.cfg"; install -D -m644 "$HERE/spawn.sh" "$R/etc/ins/spawn.sh"
install -D -m644 "$HERE/ukinst.cfg.in" "$R/etc/ins/ukinst.cfg"
install -D -m644 "$HERE/flowcheck.sh" "$R/etc/ins/flowcheck.sh"
install -D -m644 "$HERE/hostile.sh" "$R/etc/ins/hostile.sh"
install -D -m644 "$HERE/kmod.sh" "$R/etc/ins/kmod.sh"
mkcpio "$R" "$OUT/dom0.cpio.gz"
cp "$X/xen" "$OUT/xen"; cp "$X/boot/vmlinuz-$KV" "$OUT/vmlinuz"
ls -la "$OUT"/xen "$OUT"/vmlinuz "$OUT"/*.cpio.gz
echo "== images built ($(( $(date +%s) - t0 )) s)"
