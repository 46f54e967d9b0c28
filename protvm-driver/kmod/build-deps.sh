#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the crates the module uses (ins-protocol, driver-core, zerocopy, and
# `alloc` from the toolchain's rust-src) for the kernel, with the exact
# codegen flags Kbuild gives the module's own Rust objects, and merges their
# code into one relocatable object that Kbuild links into the .ko.
#
# Called from Kbuild (see Kbuild, rule for deps/deps.o) with the kernel tree
# as the working directory. Environment:
#   FLAGS_FILE  Kbuild's `$(rust_flags)` for a module object, one line
#   OUT         output directory (absolute)
#   REPO        the INS workspace (absolute)
#   RUSTC CARGO LD AR  the kernel's tools
#
# Why this way (see README.md): Kbuild compiles every .rs of a module as one
# crate and has no notion of crate dependencies; cargo does, and resolves the
# workspace's Cargo.lock, features, build scripts and proc macros (built for
# the host as usual). Only the target crates get the kernel's flags, so their
# code is compiled exactly as Kbuild would (target spec, code model kernel,
# no red zone, no SSE, retpoline/rethunk, frame pointers, panic=abort,
# function padding, v0 mangling) against the kernel's own `core` and
# `compiler_builtins` metadata (`--sysroot=/dev/null -L rust/`), like the
# module's crate itself.
set -euo pipefail
KTREE=$(pwd)
: "${FLAGS_FILE:?}" "${OUT:?}" "${REPO:?}" "${RUSTC:?}" "${CARGO:?}" "${LD:?}" "${AR:?}"

# Kbuild's flags, minus what cargo sets per crate (edition) and lint levels
# (the crates keep their own); relative paths made absolute.
flags=()
set -f
for f in $(cat "$FLAGS_FILE"); do
  case "$f" in
    --edition=*|-W*|-D*|-A*|-Zbinary_dep_depinfo=*) ;;
    --target=*) flags+=("--target=$(realpath "${f#--target=}")") ;;
    @*) flags+=("@$(realpath "${f#@}")") ;;
    *) flags+=("$f") ;;
  esac
done
set +f
target=
rest=()
for f in "${flags[@]}"; do
  case "$f" in --target=*) target=${f#--target=} ;; *) rest+=("$f") ;; esac
done
[ -n "$target" ] || { echo "build-deps: no --target in Kbuild's rust flags" >&2; exit 1; }

# Features stabilised after the kernel's rustc 1.85: `is_multiple_of`
# (1.87, ins-protocol) and let chains (1.88, driver-core). Both exist
# unstable in 1.85; Kbuild already runs rustc with RUSTC_BOOTSTRAP=1.
features='-Zcrate-attr=feature(unsigned_is_multiple_of,let_chains)'
export RUSTC_BOOTSTRAP=1

mkdir -p "$OUT/sysroot" "$OUT/objs"

# 1. `alloc` for the kernel target. Linux 6.12 no longer builds it (its Rust
#    code uses kernel::alloc::{KBox, KVec}); driver-core needs BTreeMap,
#    VecDeque and Vec, which only exist with global OOM handling. The
#    module provides the allocator entry points (kalloc.rs).
#    Rebuilt only when the flags or the compiler change.
lib_src=$("$RUSTC" --print sysroot)/lib/rustlib/src/rust/library
stamp=$( { "$RUSTC" -vV; printf '%s\n' "${flags[@]}"; } | sha256sum)
if [ ! -f "$OUT/sysroot/liballoc.rlib" ] || [ "$(cat "$OUT/sysroot/stamp" 2>/dev/null)" != "$stamp" ]; then
  "$RUSTC" "${rest[@]}" --target="$target" --edition=2021 --cap-lints=allow \
    --crate-type=rlib --crate-name=alloc --sysroot=/dev/null -L "$KTREE/rust" \
    --out-dir "$OUT/sysroot" "$lib_src/alloc/src/lib.rs"
  echo "$stamp" > "$OUT/sysroot/stamp"
fi

# 2. The workspace crates and their dependencies, through cargo.
sep=$'\x1f'
# `no_fp_fmt_parse`: the kernel's `core` is built without float formatting
# and parsing; zerocopy honours the same cfg (as the kernel's core-cfgs).
enc="--sysroot=/dev/null${sep}-L${sep}$KTREE/rust${sep}-L${sep}$OUT/sysroot${sep}$features"
enc+="${sep}--cfg${sep}no_fp_fmt_parse"
for f in "${rest[@]}"; do enc+="$sep$f"; done
(cd "$REPO" && CARGO_TARGET_DIR="$OUT/target" CARGO_ENCODED_RUSTFLAGS="$enc" \
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_INCREMENTAL=false \
  "$CARGO" build --release --locked --ignore-rust-version --no-default-features \
    --target "$target" -p driver-core -p ins-protocol \
    --message-format=json-render-diagnostics) > "$OUT/cargo.json"

# 3. The code of every target rlib of this build (not stale ones), merged.
# (Temporary files, not process substitution: /dev/fd may be missing in a
# chroot.)
echo "$OUT/sysroot/liballoc.rlib" > "$OUT/rlibs.txt"
python3 - "$OUT/cargo.json" "$OUT/target/" >> "$OUT/rlibs.txt" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact":
        continue
    for f in m.get("filenames", []):
        # Target artifacts live under target/<target name>/; host ones
        # (proc macros and their rlibs, build scripts) under target/release/.
        # Workspace members are reported at their uplifted path
        # (target/<target>/release/lib*.rlib), dependencies under deps/.
        if f.endswith(".rlib") and f.startswith(sys.argv[2]) \
                and not f.startswith(sys.argv[2] + "release/"):
            print(f)
EOF
rm -rf "$OUT/objs" && mkdir -p "$OUT/objs"
objs=()
i=0
while read -r r; do
  d="$OUT/objs/$i"; i=$((i + 1)); mkdir -p "$d"
  "$AR" t "$r" > "$d.members"
  while read -r m; do
    case "$m" in *.o) (cd "$d" && "$AR" x "$r" "$m"); objs+=("$d/$m") ;; esac
  done < "$d.members"
done < "$OUT/rlibs.txt"
"$LD" -r -o "$OUT/deps.o" "${objs[@]}"
