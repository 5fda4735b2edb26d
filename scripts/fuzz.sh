#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets/), each for a bounded time, on nightly.
#
#   scripts/fuzz.sh [TARGET...]      default: every target (resp_request command_args value_codec)
#
# Environment:
#   FUZZ_SECONDS=N       seconds per target (default 60)
#   FUZZ_TARGET_DIR=DIR  cargo target directory for the fuzz build (default
#                        ~/.cache/ringkv-fuzz-target)
#   ROCKSDB_LIB_DIR=DIR  a directory holding librocksdb.a to link instead of compiling RocksDB's
#                        C++ again (~20 min, and more with ASan). Default: the one the main
#                        release build made, under ${CARGO_TARGET_DIR:-target}/release/build/
#                        (same Cargo.lock, so the same RocksDB); RocksDB's C++ is then not
#                        instrumented, the Rust code is. FUZZ_BUILD_ROCKSDB=1 compiles it anyway.
#   FUZZ_SANITIZER=S     address (default), leak, memory, thread or none
#   FUZZ_ARGS="..."      extra libFuzzer flags, e.g. "-max_len=65536 -jobs=2"
#
# The corpus grows in fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET holds the checked-in
# seeds. A crash, timeout or out-of-memory stops that target: its input is saved under
# fuzz/artifacts/TARGET/, the script goes on with the other targets, then exits 1 naming every
# crasher and how to replay it. Turn each into a regression test (see fuzz/README.md).

set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGET_DIR=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv-fuzz-target}
SANITIZER=${FUZZ_SANITIZER:-address}
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"
ALL_TARGETS=(resp_request command_args value_codec)
TARGETS=("${@:-${ALL_TARGETS[@]}}")

if ! [[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: FUZZ_SECONDS must be a positive integer, not '$SECONDS_EACH'" >&2
    exit 2
fi
for t in "${TARGETS[@]}"; do
    if ! [[ " ${ALL_TARGETS[*]} " == *" $t "* ]]; then
        echo "fuzz.sh: unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
# The RocksDB build needs a C++ compiler and libclang, as for the main build.
scripts/install-deps.sh build

if [[ -z ${ROCKSDB_LIB_DIR:-} && -z ${FUZZ_BUILD_ROCKSDB:-} ]]; then
    prebuilt=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)
    if [[ -n $prebuilt ]]; then
        export ROCKSDB_LIB_DIR=$(cd "$(dirname "$prebuilt")" && pwd) ROCKSDB_STATIC=1
    fi
fi
if [[ -n ${ROCKSDB_LIB_DIR:-} ]]; then
    export ROCKSDB_STATIC=${ROCKSDB_STATIC:-1}
    echo "fuzz.sh: linking the prebuilt RocksDB in $ROCKSDB_LIB_DIR"
else
    echo "fuzz.sh: no prebuilt RocksDB found: compiling it (~20 min or more)"
fi

echo "fuzz.sh: building the fuzz targets (target dir $TARGET_DIR)"
(cd fuzz && cargo +nightly fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR")

failed=()
for t in "${TARGETS[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    dirs=("$ROOT/$corpus")
    [[ -d fuzz/seeds/$t ]] && dirs+=("$ROOT/fuzz/seeds/$t")
    before=$(ls "$artifacts" | wc -l)
    echo "fuzz.sh: running $t for ${SECONDS_EACH}s"
    # The parser must never allocate much for a short input (an announced bulk is not
    # reserved whole): any single allocation over 64 MB is reported as a crash.
    limits=()
    [[ $t == resp_request ]] && limits=(-malloc_limit_mb=64)
    status=0
    (cd fuzz && cargo +nightly fuzz run --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "${dirs[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        "${limits[@]}" "${EXTRA[@]}") || status=$?
    after=$(ls "$artifacts" | wc -l)
    if ((status != 0 || after > before)); then
        failed+=("$t")
        echo "fuzz.sh: $t FAILED (exit $status); its inputs:"
        ls -t "$artifacts" | head -n $((after - before > 0 ? after - before : 1)) | sed "s|^|  $artifacts/|"
    fi
done

if ((${#failed[@]})); then
    echo
    echo "fuzz.sh: crashers in: ${failed[*]}"
    for t in "${failed[@]}"; do
        echo "  replay: (cd fuzz && cargo +nightly fuzz run --target-dir $TARGET_DIR $t artifacts/$t/FILE)"
        echo "  decode: (cd fuzz && cargo +nightly fuzz fmt --target-dir $TARGET_DIR $t artifacts/$t/FILE)"
    done
    echo "Copy each input to fuzz/regressions/TARGET/ and add a regression test (fuzz/README.md)."
    exit 1
fi
echo "fuzz.sh: no crash in ${TARGETS[*]} (${SECONDS_EACH}s each)"
