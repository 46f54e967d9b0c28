#!/bin/bash
# Step 03: build protvm-driver/kmod against the cached kernel tree (KTREE,
# from step 02), format-checked with the kernel's rustfmt settings, through
# clippy with the kernel's lints plus one unsafe operation per block,
# warnings as errors; and the guest's test programs (static, in the chroot).
# The project is copied into the chroot fresh each run, with the copy's
# times (`tar -m`): cargo's output stays in /build/ins-deps between runs and
# is keyed on file times, so sources keeping their own (older) times could
# pass for the last build's when another tree was built there in between
# (a CI clone, say); the workspace's crates are rebuilt each run (~20 s),
# the registry's and the `alloc` build stay.
set -euo pipefail
. "$(dirname "$0")/common.sh"
: "${KTREE:?KTREE (kernel tree inside the chroot) not set}"
mount_chroot
T0=$(ts)
rm -rf "$R/build/ins-src" && mkdir -p "$R/build/ins-src"
(cd "$REPO" && tar --exclude=./target --exclude=./.git --exclude=./fuzz/target \
  --exclude=./protvm-driver/kmod/deps -cf - .) | tar -C "$R/build/ins-src" -xmf -
in_chroot bash -euo pipefail -c "
cd /build/ins-src/protvm-driver/kmod
rustfmt --check --edition 2021 --config-path $KTREE/.rustfmt.toml *.rs
nice -n 10 make -s LLVM=1 CLIPPY=1 \\
  KRUSTFLAGS='-Dwarnings -Wclippy::multiple_unsafe_ops_per_block' -C $KTREE M=\$PWD \\
  INS_REPO=/build/ins-src INS_DEPS_OUT=/build/ins-deps modules
for k in *.ko; do modinfo \$k | grep -E '^(name|license|vermagic)'; done
mkdir -p /build/guest-bin
for c in /build/ins-src/tests/kmod/guest/*.c; do
  gcc -static -O2 -Wall -Wextra -Werror -o /build/guest-bin/\$(basename \$c .c) \$c
done
"
echo "TIMING module-build $(el "$T0")s"
