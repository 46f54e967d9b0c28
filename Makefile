# INS — build, test, benchmark, fuzz.
#
#   make test        everything CI runs: fmt, clippy, no_std build, docs, all tests,
#                    the loom model check and a short fuzz smoke run
#   make bench-ring  ring vs Unix socketpair, side by side
#   make bench-ins   bulk and request/response through an instance vs loopback TCP
#   make bench-nginx wrk against nginx natively and through INS
#   make demo        driver + 2 instances, a web server under the shim, a fetch
#                    through INS, `ins-ctl list` and the fetch's flow (tools/demo.sh)
#   make fuzz        each fuzz target for FUZZ_SECONDS (default 300) seconds
#   make test-kmod   the kernel module (protvm-driver/kmod) built against a
#                    Rust-enabled Linux 6.12 and tested in QEMU (root; from
#                    nothing 17 CPU-min, ~13 min idle, 35-53 min on a busy
#                    machine; about 1 min with the kernel cached under
#                    /var/cache/ins/kmod; tests/kmod/README.md)
#
# Every target works on a fresh machine after `.ci/run`'s install step (or
# `make deps`).

CARGO        ?= cargo
NIGHTLY      ?= +nightly
FUZZ_SECONDS ?= 300
SMOKE_SECONDS ?= 20
FUZZ_TARGETS := decode ring_consumer ring_producer

.PHONY: all build test fmt-check clippy nostd doc unit loom fuzz fuzz-smoke fuzz-build \
        bench-ring bench-ins bench-nginx deps clean demo test-kmod

all: build

build:
	$(CARGO) build --workspace --release

test: fmt-check clippy nostd doc unit loom fuzz-smoke
	@echo "make test: all checks passed"

fmt-check:
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The protocol crate must build without std (it is shared with the kernel
# module and the unikernel). Building only that package keeps other members'
# features out of the resolution.
nostd:
	$(CARGO) build -p ins-protocol --no-default-features
	$(CARGO) build -p ins-protocol --no-default-features --features alloc

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

# The end-to-end tests run the real binaries and libshim.so from the same
# target directory; `cargo test` alone does not produce the cdylib.
unit:
	$(CARGO) build --workspace --release
	$(CARGO) test --workspace --release

loom:
	RUSTFLAGS="--cfg loom" $(CARGO) test -p ins-protocol --release --test ring_loom \
		--target-dir target/loom

fuzz-build:
	cd fuzz && $(CARGO) $(NIGHTLY) fuzz build

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		(cd fuzz && $(CARGO) $(NIGHTLY) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048) || exit 1; \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=$(SMOKE_SECONDS)

bench-ring:
	$(CARGO) bench -p ins-transport --bench ring

bench-ins:
	$(CARGO) bench -p ins --bench ins

bench-nginx:
	$(CARGO) build --workspace --release
	$(CARGO) bench -p ins-e2e --bench nginx

test-kmod:
	./tests/kmod/run.sh

demo:
	CARGO="$(CARGO)" ./tools/demo.sh

deps:
	./.ci/install-deps

clean:
	$(CARGO) clean
	rm -rf fuzz/target
