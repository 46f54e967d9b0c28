#!/bin/bash
# Step 04: a busybox initramfs with the modules, the test programs and
# guest/init, plus the cached bzImage, under $RUN.
set -euo pipefail
. "$(dirname "$0")/common.sh"
: "${KTREE:?}"
I=$RUN/initramfs
rm -rf "$I" && mkdir -p "$I"/{bin,sbin,proc,sys,dev,tmp,mods}
cp "$R/usr/bin/busybox" "$I/bin/busybox"
cp "$R"/build/ins-src/protvm-driver/kmod/*.ko "$I/mods/"
cp "$R"/build/guest-bin/* "$I/bin/"
cp "$SRC/guest/init" "$I/init" && chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) > "$RUN/initramfs.cpio.gz"
cp "$R$(dirname "$KTREE")/bzImage" "$RUN/bzImage"
