# INS — build, test, benchmark, fuzz.
#
#   make test        everything CI runs: fmt, clippy, no_std build, docs, all tests,
#                    the loom model check and a short fuzz smoke run
#   make bench-ring  ring vs Unix socketpair, side by side
#   make bench-ins   bulk and request/response through an instance vs loopback TCP
#   make bench-nginx wrk against nginx natively and through INS (Debian's
#                    default configuration, tcp_nopush on and off, c=1 and c=100)
#   make bench-redis redis-benchmark GET/SET natively and under the shim
#   make bench-iperf one iperf3 stream natively and under the shim
#   make demo        driver + 2 instances, a web server under the shim, a fetch
#                    through INS, `ins-ctl list` and the fetch's flow (tools/demo.sh)
#   make fuzz        each fuzz target for FUZZ_SECONDS (default 300) seconds
#   make demo-attack a short slowloris against nginx through INS with ins-detect on:
#                    its decisions, the mitigation and the client's success (tools/demo-attack.sh)
#   make bench-detect nginx req/s through INS with ins-detect on and off (tools/scripts/bench-detect.sh)
#   make detect-benign the graph test with a 300 s benign period (no decision expected)
#   make test-xen    the nested Xen lab (tests/xen): INS channels across Xen
#                    domains, nginx under the shim in a PVM domU, figures
#   make unikernel   the INS Xen PV unikernel image (ins-unikernel/ins-pv):
#                    target/unikernel/x86_64-unknown-linux-gnu/release/ins-pv
#   make install     the programs, libshim.so, man pages, docs and a systemd unit
#                    under $(DESTDIR)$(PREFIX) (PREFIX=/usr/local; BINDIR, LIBDIR,
#                    MANDIR, DOCDIR, UNITDIR override each part); builds first
#                    (`make install-files` installs what is built, no build)
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
FUZZ_TARGETS := decode ring_consumer ring_producer xenstore_reply netfront_responses

.PHONY: install install-files \
        all build test fmt-check clippy nostd doc unit loom fuzz fuzz-smoke fuzz-build \
        bench-ring bench-ins bench-nginx bench-redis bench-iperf deps clean demo demo-attack \
        bench-detect detect-benign test-xen unikernel unikernel-clippy test-kmod soak

all: build

build:
	$(CARGO) build --workspace --release

test: deps fmt-check clippy unikernel-clippy nostd unikernel doc unit loom fuzz-smoke test-xen test-kmod
	@echo "make test: all checks passed"

# Needs root (installs QEMU and downloads Debian's Xen packages once).
test-xen:
	CARGO="$(CARGO)" ./tests/xen/lab.sh

fmt-check:
	$(CARGO) fmt --all -- --check
	cd ins-unikernel/ins-pv && $(CARGO) fmt -- --check
	cd fuzz && $(CARGO) fmt -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p ins-xen-pv --features rt -- -D warnings

# The protocol crate must build without std (it is shared with the kernel
# module and the unikernel), and ins-core with alloc only (the unikernel);
# the unikernel's own crates are #![no_std] libraries. Building only that package keeps other members'
# features out of the resolution.
nostd:
	$(CARGO) build -p ins-protocol --no-default-features
	$(CARGO) build -p ins-protocol --no-default-features --features alloc
	$(CARGO) build -p ins-core --no-default-features
	$(CARGO) build -p ins-xen-pv -p ins-smol-stack
	$(CARGO) build -p ins-xen --no-default-features
	$(CARGO) build -p ins-xen --no-default-features --features alloc

doc:
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps

# The end-to-end tests run the real binaries and libshim.so from the same
# target directory; `cargo test` alone does not produce the cdylib.
unit:
	$(CARGO) build --workspace --release
	$(CARGO) test --workspace --release

# The unikernel is a static, non-PIE x86_64 ELF built with stable Rust for
# x86_64-unknown-linux-gnu against the prebuilt core/alloc, without std.
# Its own code is compiled without the red zone; the prebuilt core keeps it,
# which is safe because the guest never takes an event upcall (events are
# masked for good and waited for with SCHEDOP_poll). --target keeps the
# flags off build scripts and proc macros. It is its own cargo workspace
# (panic=abort, linker script).
UNIKERNEL_RUSTFLAGS := -C no-redzone=yes -C relocation-model=static -C target-feature=+crt-static
UNIKERNEL_CARGO = cd ins-unikernel/ins-pv && RUSTFLAGS="$(UNIKERNEL_RUSTFLAGS)" $(CARGO)
UNIKERNEL_ARGS := --release --locked --target x86_64-unknown-linux-gnu --target-dir ../../target/unikernel
UNIKERNEL_IMAGE := target/unikernel/x86_64-unknown-linux-gnu/release/ins-pv

unikernel:
	$(UNIKERNEL_CARGO) build $(UNIKERNEL_ARGS)
	@ls -l $(UNIKERNEL_IMAGE)

unikernel-clippy:
	$(UNIKERNEL_CARGO) clippy $(UNIKERNEL_ARGS) -- -D warnings

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

bench-redis:
	$(CARGO) build --workspace --release
	$(CARGO) bench -p ins-e2e --bench redis

bench-iperf:
	$(CARGO) build --workspace --release
	$(CARGO) bench -p ins-e2e --bench iperf

test-kmod:
	CARGO="$(CARGO)" ./tests/kmod/run.sh

demo: deps
	CARGO="$(CARGO)" ./tools/demo.sh

demo-attack:
	CARGO="$(CARGO)" ./tools/demo-attack.sh

bench-detect:
	CARGO="$(CARGO)" ./tools/scripts/bench-detect.sh

detect-benign:
	$(CARGO) build --workspace --release
	INS_DETECT_BENIGN_S=300 $(CARGO) test --release -p ins-detect --test exfil -- --nocapture

deps:
	./.ci/install-deps

# >= 1,000,000 keep-alive requests through nginx under INS with instance
# rotation; errors, RSS and fds at start and end (tools/scripts/soak.sh).
soak: build
	tools/scripts/soak.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target

# Install like a daemon. libshim.so goes to LIBDIR (ins-ctl finds it in
# ../lib/ins next to its own bin/); the man pages are generated from each
# program's --help (tools/scripts/manpages.py); the systemd unit runs the
# driver with 2 instances in /run/ins (tools/systemd/ins-driver.service.in).
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib/ins
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/ins
UNITDIR     ?= $(PREFIX)/lib/systemd/system
# Where the release binaries are (cargo's target dir for the profile).
BUILD_DIR   ?= target/release
INSTALL_BINS := ins-driver ins ins-ctl ins-flow ins-detect

install:
	$(CARGO) build --release -p ins-driver -p ins -p ins-shim -p ins-ctl -p ins-flow -p ins-detect
	$(MAKE) install-files

install-files:
	@for f in $(INSTALL_BINS) libshim.so; do \
		test -f "$(BUILD_DIR)/$$f" || { echo "install: $(BUILD_DIR)/$$f is missing: run make install (or build it)" >&2; exit 1; }; \
	done
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(MANDIR)" \
		"$(DESTDIR)$(DOCDIR)" "$(DESTDIR)$(UNITDIR)"
	for b in $(INSTALL_BINS); do install -m 0755 "$(BUILD_DIR)/$$b" "$(DESTDIR)$(BINDIR)/$$b"; done
	install -m 0644 "$(BUILD_DIR)/libshim.so" "$(DESTDIR)$(LIBDIR)/libshim.so"
	python3 tools/scripts/manpages.py "$(DESTDIR)$(MANDIR)" "$(BUILD_DIR)" \
		ins-driver:8 ins:8 ins-ctl:1 ins-flow:1 ins-detect:1
	install -m 0644 README.md docs/*.md "$(DESTDIR)$(DOCDIR)/"
	sed 's|@BINDIR@|$(BINDIR)|g' tools/systemd/ins-driver.service.in > "$(DESTDIR)$(UNITDIR)/ins-driver.service"
	chmod 0644 "$(DESTDIR)$(UNITDIR)/ins-driver.service"
