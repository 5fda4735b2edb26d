# Everything is built with --release: RocksDB's C++ takes ~15 min to compile and
# one shared profile means it is compiled once for build, clippy and test.
# CARGO_TARGET_DIR is read by cargo from the environment; it is not set here.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/release
BIN := $(BIN_DIR)/ringkv
# Extra flags for `make run`, e.g. make run ARGS="--in-memory".
ARGS ?=

.PHONY: help build run test lint fmt bench bench-micro scale fuzz clean cluster cluster-stop cluster-status monitor

help: ## list the targets
	@echo "usage: make TARGET"
	@awk -F':.*## ' '/^[a-z-]+:.*## /{printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build all binaries (release)
	scripts/install-deps.sh build
	$(CARGO) build --release --workspace --bins

run: build ## start the standalone server on 127.0.0.1:6379, data in ./data (ARGS="..." adds flags)
	scripts/install-deps.sh run
	exec "$(BIN)" --bind 127.0.0.1 --port 6379 --dir ./data $(ARGS)

test: ## install deps, check format, clippy, build, run every test
	scripts/install-deps.sh build test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	# --all-targets: the binaries the integration tests start, built with the same features
	# as the tests themselves (a --bins build resolves features differently and recompiles).
	$(CARGO) build --release --workspace --all-targets
	# Executables earlier builds left in the (shared) target directory: see the script.
	scripts/prune-target.sh
	$(CARGO) test --release --workspace

lint: ## check format and run clippy (warnings are errors)
	scripts/install-deps.sh lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

bench: ## compare ringkv with redis-server and twemproxy (N=, ROUNDS= override)
	scripts/bench.sh

bench-micro: ## Criterion micro-benchmarks of the hot paths (RESP, placement, routing, value header, point reads)
	scripts/install-deps.sh build
	# --bench '*': only the [[bench]] targets; the bench profile inherits release's build cache.
	$(CARGO) bench --workspace --bench '*'

scale: ## GET p99 with 10M keys vs 100k in standalone; proxy memory vs key count (KEYS_BIG= overrides)
	scripts/scale.sh

fuzz: ## run each cargo-fuzz target for FUZZ_SECONDS (default 60) on nightly; fails on a crash
	scripts/fuzz.sh

clean: ## remove ./data (keeps cargo's build cache: RocksDB is slow to rebuild)
	rm -rf ./data

cluster: build ## start etcd, 3 storage nodes and 2 proxies (127.0.0.1:6380, :6381) in the background, data in ./.cluster
	scripts/install-deps.sh run test
	BIN_DIR="$(BIN_DIR)" scripts/cluster.sh start

cluster-stop: ## stop the processes `make cluster` started (by pid)
	BIN_DIR="$(BIN_DIR)" scripts/cluster.sh stop

cluster-status: ## show the local cluster's processes and `ringkv-admin status`
	BIN_DIR="$(BIN_DIR)" scripts/cluster.sh status

monitor: ## start Prometheus on 127.0.0.1:9090 scraping a running `make cluster` (grafana/prometheus.yml)
	scripts/install-deps.sh monitor
	scripts/monitor.sh start
