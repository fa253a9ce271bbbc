# GSCIP for Linux. `make demo` runs the seed 001 network; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
FUZZ_SECONDS ?= 10

.PHONY: all build demo demo-sim test deps bench fuzz lint unit cli-check api-fuzz ui-test fuzz-smoke fmt clean

all: build

build:
	$(CARGO) build --release --locked --workspace

# The seed 001 network on real Linux hosts (network namespaces, gscipd on NFQUEUE, real
# sockets, captures); needs root. `make demo-sim` runs it in the simulator instead.
demo: deps build
	./target/release/gscip lab run examples/enterprise.toml

demo-sim: build
	./target/release/gscip sim examples/enterprise.toml

test: deps lint unit cli-check api-fuzz ui-test fuzz-smoke

# Debian packages the tests need (the lab tests: iproute2, iptables, python3, iperf3, ethtool; the
# fuzzers: a C++ compiler; the GMS tests: PostgreSQL).
deps:
	./scripts/install-deps.sh ip iptables python3 iperf3 ethtool c++ pg_ctlcluster

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Under a private PostgreSQL server: the GMS tests run against it and SQLite.
unit:
	$(CARGO) build --locked --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		./scripts/with-postgres.sh $(CARGO) nextest run --locked --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found: using cargo test"; \
		./scripts/with-postgres.sh $(CARGO) test --locked --workspace --no-fail-fast; \
	fi
	$(CARGO) test --locked --workspace --doc

# The command-line contract on every example: exit codes and JSON.
cli-check: build
	./scripts/cli-check.sh ./target/release/gscip

# gmsd's REST API fuzzed from its OpenAPI document (schemathesis from PyPI): never a 5xx.
api-fuzz: build
	./scripts/api-fuzz.sh ./target/release/gmsd ./target/release/gscip

# The GMS web UI in headless Chromium (Debian's chromium; Playwright from PyPI).
ui-test: build
	./scripts/ui-test.sh ./target/release/gmsd ./target/release/gscip

fuzz-smoke:
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

fuzz:
	./scripts/fuzz-smoke.sh 300

bench:
	./scripts/bench.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
