#!/usr/bin/env bash
# Benchmark ringkv against redis-server (and twemproxy in front of redis-server)
# with redis-benchmark, and print the medians as a Markdown table.
#
# Targets run interleaved (A B C A B C ...) for every test, so drift on the
# machine (thermal, noisy neighbours) hits all of them alike; ROUNDS repeats it
# all and the median of the rounds is reported. Each round starts one target
# further on (A B C, then B C A, then C A B): on this 2-core machine a target's
# place in the order moved its figures by up to ~10-15% (the one listed second
# tended to win), so no target keeps one place. By default there is one round per
# target (at least 3), so every target runs once in every place of the order.
#
# Environment:
#   N=200000 ROUNDS=<number of targets, at least 3> CLIENTS=50 KEYSPACE=100000 DATASIZE=64
#   TESTS="set get incr mset" PIPELINES="1 16"
#   TARGETS="redis twemproxy ringkv cluster"
#     redis      redis-server (no persistence)
#     twemproxy  nutcracker in front of a redis-server
#     ringkv     ringkv standalone, on disk, --fsync everysec
#     cluster    ringkv-proxy -> 1 ringkv-storage node (everysec), map in a real etcd
#     cluster-1loop  the same with --event-loops 1 on the proxy and the node
#     ringkv-1loop   ringkv standalone with --event-loops 1 (not in the default set)
#     cluster-node1loop  the cluster with --event-loops 1 on the node only (not in the
#                    default set)
#   RATIOS="ringkv/twemproxy cluster/twemproxy cluster-1loop/twemproxy ringkv/redis"
#              requests/s ratios printed
#   BEFORE_BIN_DIR=DIR  binaries of another build (say, before a change): adds the targets
#                      ringkv-before and cluster-before, e.g.
#                      BEFORE_BIN_DIR=/tmp/old TARGETS="ringkv-before ringkv" RATIOS="ringkv/ringkv-before"
#   RINGKV_CMD='...'   start the ringkv slot with this command instead of the
#                      built binary (no build); $PORT and $DIR are set, e.g.
#                      RINGKV_CMD='redis-server --port $PORT --dir $DIR --save ""'
#   READY_TIMEOUT=60 RUN_TIMEOUT=600   seconds
#
# To add a target: write start_NAME (gets a port and an empty dir, starts the
# server(s) with `spawn`) and add NAME to TARGETS.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
DATASIZE=${DATASIZE:-64}
read -ra TESTS <<<"${TESTS:-set get incr mset}"
read -ra PIPELINES <<<"${PIPELINES:-1 16}"
read -ra TARGETS <<<"${TARGETS:-redis twemproxy ringkv cluster cluster-1loop}"
ROUNDS=${ROUNDS:-$((${#TARGETS[@]} > 3 ? ${#TARGETS[@]} : 3))}
read -ra RATIOS <<<"${RATIOS:-ringkv/twemproxy cluster/twemproxy cluster-1loop/twemproxy ringkv/redis}"
SHARDS=${SHARDS:-256}
READY_TIMEOUT=${READY_TIMEOUT:-60}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
BIN_DIR=${CARGO_TARGET_DIR:-target}/release
RINGKV_BIN=$BIN_DIR/ringkv
BEFORE_BIN_DIR=${BEFORE_BIN_DIR:-}

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

# The built binaries are needed unless RINGKV_CMD stands in for every target that uses them.
needs_build() {
  [[ " ${TARGETS[*]} " == *" cluster"* || " ${TARGETS[*]} " == *" ringkv-1loop "* ]] ||
    { [[ -z ${RINGKV_CMD:-} ]] && [[ " ${TARGETS[*]} " == *" ringkv "* ]]; }
}
deps=(bench)
needs_build && deps+=(build)
scripts/install-deps.sh "${deps[@]}"
if needs_build; then
  # Same command as `make build`: other flags would unify features differently
  # and rebuild RocksDB.
  cargo build --release --workspace --bins
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-bench.XXXXXX")
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

declare -A PORT_OF
for t in "${TARGETS[@]}"; do
  declare -F "start_$t" >/dev/null || die "unknown target '$t' (no start_$t)"
  mkdir "$TMP/$t"
  PORT_OF[$t]=$(free_port)
  "start_$t" "${PORT_OF[$t]}" "$TMP/$t"
  log "$t ready on port ${PORT_OF[$t]}"
done

# One line per run: target,test,pipeline,rps,p50,p99
RESULTS=$TMP/results.csv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
  turn=$(((round - 1) % ${#TARGETS[@]}))
  order=("${TARGETS[@]:turn}" "${TARGETS[@]:0:turn}")
  for p in "${PIPELINES[@]}"; do
    for test in "${TESTS[@]}"; do
      for t in "${order[@]}"; do
        # redis-benchmark 7 --csv: "test","rps","avg_latency_ms","min_latency_ms",
        # "p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        row=$(timeout "$RUN_TIMEOUT" redis-benchmark -p "${PORT_OF[$t]}" -t "$test" -P "$p" \
          -c "$CLIENTS" -n "$N" -r "$KEYSPACE" -d "$DATASIZE" --csv 2>>"$TMP/benchmark.err" |
          awk -F, 'NR > 1 && NF == 8 { gsub(/"/, ""); if ($2 > 0) print $2 "," $5 "," $7; exit }') || true
        if [[ -z $row ]]; then
          log "round $round/$ROUNDS $test P=$p $t: FAILED (see redis-benchmark errors below)"
          tail -n 5 "$TMP/benchmark.err" >&2 || true
          continue
        fi
        echo "$t,$test,$p,$row" >>"$RESULTS"
        log "round $round/$ROUNDS $test P=$p $t: $row (rps,p50,p99)"
      done
    done
  done
done

echo
echo "machine: $(nproc) cpus, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
  "kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "redis-benchmark -c $CLIENTS -n $N -r $KEYSPACE -d $DATASIZE, median of $ROUNDS rounds;" \
  "targets: ${TARGETS[*]}; $(redis-server --version | awk '{ sub("v=", "", $3); print "redis-server " $3 }')"
echo
awk -F, -v targets="${TARGETS[*]}" -v tests="${TESTS[*]}" -v pipes="${PIPELINES[*]}" \
  -v ratios="${RATIOS[*]}" '
  # mawk has no asort: insertion sort of the few samples, then the middle.
  function median(k, what,    n, i, j, v, tmp) {
    n = count[k]
    if (n == 0) return ""
    for (i = 1; i <= n; i++) v[i] = val[k, what, i] + 0
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && v[j - 1] > v[j]; j--) { tmp = v[j]; v[j] = v[j - 1]; v[j - 1] = tmp }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function fmt(x, f) { return x == "" ? "-" : sprintf(f, x) }
  {
    k = $1 SUBSEP $2 SUBSEP $3
    i = ++count[k]
    val[k, "rps", i] = $4; val[k, "p50", i] = $5; val[k, "p99", i] = $6
  }
  END {
    nt = split(targets, T, " "); ntest = split(tests, TS, " "); np = split(pipes, P, " ")
    nr = split(ratios, R, " ")
    print "Requests per second (median), and ratios of requests per second:"
    print ""
    head = "| test | -P |"; line = "|---|---:|"
    for (t = 1; t <= nt; t++) { head = head " " T[t] " |"; line = line "---:|" }
    for (r = 1; r <= nr; r++) { head = head " " R[r] " |"; line = line "---:|" }
    print head; print line
    for (a = 1; a <= np; a++) for (b = 1; b <= ntest; b++) {
      row = sprintf("| %s | %s |", TS[b], P[a])
      for (t = 1; t <= nt; t++) row = row " " fmt(median(T[t] SUBSEP TS[b] SUBSEP P[a], "rps"), "%.0f") " |"
      for (r = 1; r <= nr; r++) {
        split(R[r], pair, "/")
        x = median(pair[1] SUBSEP TS[b] SUBSEP P[a], "rps")
        y = median(pair[2] SUBSEP TS[b] SUBSEP P[a], "rps")
        row = row " " (x == "" || y == "" || y == 0 ? "-" : sprintf("%.2f", x / y)) " |"
      }
      print row
    }
    print ""
    print "Latency p50 / p99 in ms (medians of the rounds):"
    print ""
    head = "| test | -P |"; line = "|---|---:|"
    for (t = 1; t <= nt; t++) { head = head " " T[t] " |"; line = line "---:|" }
    print head; print line
    for (a = 1; a <= np; a++) for (b = 1; b <= ntest; b++) {
      row = sprintf("| %s | %s |", TS[b], P[a])
      for (t = 1; t <= nt; t++) {
        k = T[t] SUBSEP TS[b] SUBSEP P[a]
        row = row " " fmt(median(k, "p50"), "%.3f") " / " fmt(median(k, "p99"), "%.3f") " |"
      }
      print row
    }
  }' "$RESULTS"
