#!/bin/bash
# Step 04: a busybox initramfs with the modules, the test programs, the
# host-built `ins` with its libraries and guest/init, plus the cached
# bzImage, under $RUN.
set -euo pipefail
. "$(dirname "$0")/common.sh"
: "${KTREE:?}"
I=$RUN/initramfs
rm -rf "$I" && mkdir -p "$I"/{bin,sbin,proc,sys,dev,tmp,mods}
cp "$R/usr/bin/busybox" "$I/bin/busybox"
cp "$R"/build/ins-src/protvm-driver/kmod/*.ko "$I/mods/"
cp "$R"/build/guest-bin/* "$I/bin/"
cp "$SRC/guest/init" "$I/init" && chmod +x "$I/init"
# The real instance: the host's `ins` (run.sh builds it), without debug
# info, and the shared libraries it links (as `ldd` lists them, at the
# same paths).
INS_BIN=${INS_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ins}
if [ -x "$INS_BIN" ]; then
  objcopy --strip-debug "$INS_BIN" "$I/bin/ins"
  for lib in $(ldd "$INS_BIN" | grep -o '/[^ ]*'); do
    mkdir -p "$I$(dirname "$lib")" && cp -L "$lib" "$I$lib"
  done
fi
# The daemon, for the guest's module-vs-daemon figures.
DRIVER_BIN=${DRIVER_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/ins-driver}
if [ -x "$DRIVER_BIN" ]; then
  objcopy --strip-debug "$DRIVER_BIN" "$I/bin/ins-driver"
fi
# The shim and the host's nginx, curl and wrk with their libraries (the nginx
# test; skipped in the guest when missing).
SHIM_SO=${SHIM_SO:-${CARGO_TARGET_DIR:-$REPO/target}/release/libshim.so}
if [ -f "$SHIM_SO" ]; then
  mkdir -p "$I/lib" && objcopy --strip-debug "$SHIM_SO" "$I/lib/libshim.so"
fi
for prog in /usr/sbin/nginx /usr/bin/curl /usr/bin/wrk; do
  [ -x "$prog" ] || continue
  mkdir -p "$I$(dirname "$prog")" && cp -L "$prog" "$I$prog"
  for lib in $(ldd "$prog" | grep -o '/[^ ]*'); do
    mkdir -p "$I$(dirname "$lib")" && cp -L "$lib" "$I$lib"
  done
done
# Test programs that run under the shim: built here, dynamically (the
# chroot's static ones in guest-bin cannot take LD_PRELOAD), with the host's
# libraries the nginx above brought.
for c in "$SRC"/guest-shim/*.c; do
  cc -O2 -Wall -Wextra -Werror -o "$I/bin/$(basename "$c" .c)" "$c"
done
# The differential conformance script of the host's `--test conformance`.
cc -O1 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread -o "$I/bin/conformance" "$REPO/tests/c/conformance.c"
# Fork and exec with INS sockets (the host's c_programs test has it too).
cc -O1 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$I/bin/forkexec" "$REPO/tests/c/forkexec.c"
mkdir -p "$I/etc"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$I/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$I/etc/group"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) > "$RUN/initramfs.cpio.gz"
cp "$R$(dirname "$KTREE")/bzImage" "$RUN/bzImage"
