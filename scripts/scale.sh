#!/usr/bin/env bash
# Scale checks, printed as Markdown:
#  1. GET latency in standalone ringkv with KEYS_BIG keys against KEYS_SMALL keys (two
#     servers side by side, every key present, runs interleaved, median of ROUNDS);
#  2. the proxy's memory as the cluster's key count grows (it keeps no per-key state).
#
# Environment:
#   KEYS_BIG=10000000 KEYS_SMALL=100000 PROXY_KEYS=1000000 DATASIZE=64
#   N=200000 CLIENTS=50 ROUNDS=3 READY_TIMEOUT=60 RUN_TIMEOUT=900 SHARDS=256
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS_BIG=${KEYS_BIG:-10000000}
KEYS_SMALL=${KEYS_SMALL:-100000}
PROXY_KEYS=${PROXY_KEYS:-1000000}
DATASIZE=${DATASIZE:-64}
N=${N:-200000}
CLIENTS=${CLIENTS:-50}
ROUNDS=${ROUNDS:-3}
READY_TIMEOUT=${READY_TIMEOUT:-60}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
SHARDS=${SHARDS:-256}
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
BEFORE_BIN_DIR=
RINGKV_CMD=

log() { echo "scale: $*" >&2; }
die() { log "$*"; exit 1; }

scripts/install-deps.sh bench build
cargo build --release --workspace --bins

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-scale.XXXXXX")
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

# load PORT FIRST COUNT: SET key:%012d (redis-benchmark's -r key names) for COUNT keys from
# FIRST, DATASIZE-byte values, through redis-cli --pipe; fails on any error reply.
load() {
  local port=$1 first=$2 count=$3 out
  out=$(awk -v first="$first" -v count="$count" -v size="$DATASIZE" 'BEGIN {
      v = sprintf("%" size "s", ""); gsub(/ /, "x", v)
      for (i = first; i < first + count; i++)
        printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$%d\r\n%s\r\n", i, size, v
    }' | timeout "$RUN_TIMEOUT" redis-cli -p "$port" --pipe 2>&1) || die "loading $count keys failed: $out"
  [[ $out == *"errors: 0, replies: $count"* ]] || die "loading $count keys: $out"
}

# rss_mb PID: resident memory in MB.
rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# get_run PORT RANGE: "rps,p50,p99" of GETs over keys 0..RANGE-1.
get_run() {
  timeout "$RUN_TIMEOUT" redis-benchmark -p "$1" -t get -c "$CLIENTS" -n "$N" -r "$2" \
    -d "$DATASIZE" --csv 2>/dev/null |
    awk -F, 'NR > 1 && NF == 8 { gsub(/"/, ""); print $2 "," $5 "," $7; exit }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# 1. Standalone, small and big.
declare -A PORT PID
for size in small big; do
  mkdir "$TMP/$size"
  PORT[$size]=$(free_port)
  start_ringkv "${PORT[$size]}" "$TMP/$size"
  PID[$size]=${PIDS[-1]}
done
log "loading $KEYS_SMALL keys into the small server"
load "${PORT[small]}" 0 "$KEYS_SMALL"
log "loading $KEYS_BIG keys into the big server (this takes a while)"
started=$SECONDS
load "${PORT[big]}" 0 "$KEYS_BIG"
log "loaded $KEYS_BIG keys in $((SECONDS - started)) s"
declare -A KEYS=([small]=$KEYS_SMALL [big]=$KEYS_BIG)
: >"$TMP/get.csv"
for ((round = 1; round <= ROUNDS; round++)); do
  for size in small big; do
    row=$(get_run "${PORT[$size]}" "${KEYS[$size]}")
    [[ -n $row ]] || die "redis-benchmark GET against the $size server failed"
    echo "$size,$row" >>"$TMP/get.csv"
    log "round $round/$ROUNDS GET $size (${KEYS[$size]} keys): $row (rps,p50,p99)"
  done
done

# 2. The proxy's memory: 1 proxy + 1 storage node, before and after PROXY_KEYS keys.
mkdir "$TMP/cluster"
PORT[cluster]=$(free_port)
start_cluster "${PORT[cluster]}" "$TMP/cluster"
proxy_pid=${PIDS[-1]}
load "${PORT[cluster]}" 0 1000
get_run "${PORT[cluster]}" 1000 >/dev/null
proxy_before=$(rss_mb "$proxy_pid")
log "loading $PROXY_KEYS keys through the proxy"
load "${PORT[cluster]}" 0 "$PROXY_KEYS"
get_run "${PORT[cluster]}" "$PROXY_KEYS" >/dev/null
proxy_after=$(rss_mb "$proxy_pid")

echo
echo "machine: $(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
  "kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "redis-benchmark -t get -c $CLIENTS -n $N -d $DATASIZE, every key present, median of $ROUNDS rounds"
echo
echo "| keys | GET rps | p50 ms | p99 ms | server RSS MB | data dir MB |"
echo "|---:|---:|---:|---:|---:|---:|"
for size in small big; do
  rps=$(awk -F, -v s="$size" '$1 == s { print $2 }' "$TMP/get.csv" | median)
  p50=$(awk -F, -v s="$size" '$1 == s { print $3 }' "$TMP/get.csv" | median)
  p99=$(awk -F, -v s="$size" '$1 == s { print $4 }' "$TMP/get.csv" | median)
  disk=$(du -sm "$TMP/$size" | cut -f1)
  printf '| %s | %.0f | %.3f | %.3f | %s | %s |\n' "${KEYS[$size]}" "$rps" "$p50" "$p99" \
    "$(rss_mb "${PID[$size]}")" "$disk"
done
p99_small=$(awk -F, '$1 == "small" { print $4 }' "$TMP/get.csv" | median)
p99_big=$(awk -F, '$1 == "big" { print $4 }' "$TMP/get.csv" | median)
echo
echo "GET p99 with $KEYS_BIG keys / with $KEYS_SMALL keys: $(awk -v a="$p99_big" -v b="$p99_small" 'BEGIN { printf "%.2f", a / b }')×"
echo
echo "Proxy RSS: $proxy_before MB with 1000 keys in the cluster, $proxy_after MB with $PROXY_KEYS keys."
