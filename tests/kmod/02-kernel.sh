#!/bin/bash
# Step 02: the kernel, or nothing when the cache has it. Configures
# tinyconfig + cfg/kmod.config (LLVM=1, every requested symbol checked),
# builds bzImage and the in-tree modules (nice'd; modpost writes the
# Module.symvers that external modules need), and keeps a lean copy of the
# tree that is enough to build external Rust modules (~55 MB, no
# .o/.c/vmlinux) with the bzImage under $R/build/kcache/$KEY. Prints the key's directory (inside the chroot)
# on its last line.
set -euo pipefail
. "$(dirname "$0")/common.sh"
mount_chroot
KEY=$(kernel_key)
KC=/build/kcache/$KEY
if [ -f "$R$KC/complete" ]; then
  echo "kernel: cached ($KEY)" >&2
  echo "$KC"
  exit 0
fi
echo "kernel: not cached ($KEY), building" >&2
T0=$(ts)
# The full tree is reused for incremental rebuilds, but only if it came
# from the installed linux-source package (apt may have upgraded it).
version=$(in_chroot dpkg-query -W -f '${Version}' linux-source-6.12)
if [ ! -f "$K/Makefile" ] || [ "$(cat "$R/build/linux-source.version" 2>/dev/null)" != "$version" ]; then
  rm -rf "$K" && mkdir -p "$R/build"
  tar -C "$R/build" -xf "$R/usr/src/linux-source-6.12.tar.xz"
  echo "$version" > "$R/build/linux-source.version"
fi
echo "TIMING untar $(el "$T0")s" >&2
mkdir -p "$R/build/cfg" && cp "$SRC/cfg/kmod.config" "$R/build/cfg/"
T1=$(ts)
in_chroot bash -euo pipefail -c "
cd $KSRC
export LLVM=1
make -s rustavailable
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config /build/cfg/kmod.config >/dev/null
make -s olddefconfig
" >&2
fail=0
while read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$K/.config" || { echo "MISMATCH want $line" >&2; fail=1; } ;;
    "# CONFIG_"*" is not set")
      sym=${line#\# }; sym=${sym%% *}
      ! grep -q "^$sym=" "$K/.config" || { echo "MISMATCH want $sym=n" >&2; fail=1; } ;;
  esac
done < "$SRC/cfg/kmod.config"
[ $fail = 0 ] || exit 1
echo "TIMING config $(el "$T1")s" >&2
T2=$(ts)
in_chroot bash -euo pipefail -c "cd $KSRC && nice -n 10 make LLVM=1 -j\$(nproc) bzImage modules" >&2
echo "TIMING kernel-build $(el "$T2")s" >&2
# The lean tree: headers, generated files, scripts, rust/ metadata and
# objects, Module.symvers, objtool. Built under a temporary name, renamed
# when complete.
T3=$(ts)
rm -rf "$R$KC.tmp" && mkdir -p "$R$KC.tmp/tree"
(cd "$K" && find . \( -path ./Documentation -o -name .git -o -path ./drivers -o -path ./sound \
    -o -path ./fs -o -path ./net -o -path ./samples -o -path ./tools \) -prune -o -type f \
    ! -name '*.o' ! -name '*.a' ! -name '.*.cmd' ! -name 'vmlinux*' ! -name '.tmp_vmlinux*' \
    ! -name '*.ko' \( ! -name '*.c' -o -path './scripts/*' \) -print0 \
  | cpio -0 -pdm --quiet "$R$KC.tmp/tree")
mkdir -p "$R$KC.tmp/tree/tools/objtool" && cp "$K/tools/objtool/objtool" "$R$KC.tmp/tree/tools/objtool/"
cp "$K/arch/x86/boot/bzImage" "$K/.config" "$R$KC.tmp/"
touch "$R$KC.tmp/complete"
for old in "$R"/build/kcache/*; do [ "$old" = "$R$KC.tmp" ] || rm -rf "$old"; done
mv "$R$KC.tmp" "$R$KC"
echo "TIMING cache $(el "$T3")s ($(du -sh "$R$KC" | cut -f1))" >&2
echo "$KC"
