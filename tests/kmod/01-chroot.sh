#!/bin/bash
# Step 01: a Debian trixie chroot with the Rust-for-Linux toolchain (the
# kernel's rustc 1.85, rust-src, bindgen, clang, lld) plus cargo for the
# project's crates, and the linux-source-6.12 package. Idempotent: an
# existing chroot is only brought up to date.
set -euo pipefail
. "$(dirname "$0")/common.sh"
MIRROR=http://deb.debian.org/debian
command -v debootstrap >/dev/null || { echo "debootstrap missing (run.sh installs it)" >&2; exit 1; }
T0=$(ts)
[ -x "$R/usr/bin/apt-get" ] || debootstrap --variant=minbase trixie "$R" "$MIRROR"
echo "TIMING debootstrap $(el "$T0")s"
cat > "$R/etc/apt/sources.list" <<EOS
deb $MIRROR trixie main
deb $MIRROR trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
EOS
mount_chroot
cp /etc/resolv.conf "$R/etc/resolv.conf"
T1=$(ts)
in_chroot apt-get update -q
in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  rustc rust-src cargo bindgen libclang-dev clang lld llvm build-essential bc bison flex \
  libelf-dev libssl-dev cpio python3 kmod xz-utils zstd linux-source-6.12 \
  busybox-static ca-certificates rustfmt rust-clippy
echo "TIMING apt-install $(el "$T1")s"
# cargo in the chroot fetches crates itself: it trusts what the host trusts.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
  in_chroot update-ca-certificates >/dev/null
fi
in_chroot sh -c 'rustc --version; cargo --version; bindgen --version; dpkg-query -W linux-source-6.12 rust-src'
