# Starts the servers scripts/bench.sh and scripts/scale.sh measure, each on a given port
# with its own directory, and stops them all when the sourcing script exits.
#
# The sourcing script sets: TMP (a directory, removed on success), BIN_DIR (ringkv's
# binaries), BEFORE_BIN_DIR (optional), SHARDS, READY_TIMEOUT, RINGKV_CMD (optional), and
# defines log and die.
#
# start_NAME PORT DIR starts target NAME: redis, twemproxy, ringkv, ringkv-1loop, cluster,
# cluster-1loop, cluster-node1loop, ringkv-before, cluster-before.

PIDS=()
cleanup() {
  local rc=$? pid deadline=$((SECONDS + 15))
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if ((rc == 0)); then rm -rf "$TMP"; else log "logs kept in $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A port is free if nothing accepts on it. Stay below the ephemeral range so
# outgoing connections cannot take it between the check and the bind.
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 12000))
    (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# spawn LOGFILE CMD...: start a server in the background, stopped on exit.
spawn() {
  local logfile=$1
  shift
  "$@" >"$logfile" 2>&1 &
  PIDS+=($!)
}

# wait_ready PORT LOGFILE: poll PING until PONG; fail fast if the server died.
wait_ready() {
  local port=$1 logfile=$2 deadline=$((SECONDS + READY_TIMEOUT))
  until [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; do
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null || ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "server on port $port did not answer PING (end of $logfile above)"
    fi
    sleep 0.05
  done
}

start_redis_server() { # PORT DIR
  spawn "$2/redis.log" redis-server --bind 127.0.0.1 --port "$1" --dir "$2" \
    --save "" --appendonly no --daemonize no
  wait_ready "$1" "$2/redis.log"
}

start_redis() { start_redis_server "$@"; }

start_ringkv() { # PORT DIR [BIN_DIR [FLAGS...]]
  if [[ -n ${RINGKV_CMD:-} && -z ${3:-} ]]; then
    spawn "$2/ringkv.log" env PORT="$1" DIR="$2" bash -c "exec $RINGKV_CMD"
  else
    spawn "$2/ringkv.log" "${3:-$BIN_DIR}/ringkv" --bind 127.0.0.1 --port "$1" --dir "$2" \
      --fsync everysec "${@:4}"
  fi
  wait_ready "$1" "$2/ringkv.log"
}

# Standalone with one event loop: what the cluster-1loop target is for the cluster.
start_ringkv-1loop() { start_ringkv "$1" "$2" "$BIN_DIR" --event-loops 1; }

start_twemproxy() { # PORT DIR: nutcracker in front of its own redis-server
  local backend
  mkdir "$2/redis"
  backend=$(free_port)
  start_redis_server "$backend" "$2/redis"
  cat >"$2/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$1
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
    - 127.0.0.1:$backend:1
EOF
  nutcracker -t -c "$2/nutcracker.yml" >/dev/null 2>&1 || die "bad $2/nutcracker.yml"
  spawn "$2/nutcracker.log" nutcracker -c "$2/nutcracker.yml" -o "$2/nutcracker.log" \
    -p "$2/nutcracker.pid" -a 127.0.0.1 -s "$(free_port)"
  wait_ready "$1" "$2/nutcracker.log"
}

# poll_until WHAT LOGFILE CMD...: run CMD until it succeeds; fail fast if the last spawned
# process died or READY_TIMEOUT passed.
poll_until() {
  local what=$1 logfile=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null || ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "timed out or died waiting for $what (end of $logfile above)"
    fi
    sleep 0.1
  done
}

etcd_healthy() { # PORT
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
    grep -q "\"health\":\"true\"" <&3' _ "$1"
}

node_live() { # BIN_DIR ADMIN_ARGS... ID: `ringkv-admin status` lists the node as live
  local bin=$1 id=${*: -1}
  shift
  "$bin/ringkv-admin" "${@:1:$#-1}" status | awk -v id="$id" '$1 == id && $2 == "live" { ok = 1 } END { exit !ok }'
}

# SET answers OK once the node serves every shard of the map (until then: TRYAGAIN).
set_ok() { [[ $(redis-cli -p "$1" SET ringkv:bench:probe ok 2>/dev/null) == OK ]]; }

# start_cluster PORT DIR [BIN_DIR [LOOP_FLAGS...]]: etcd, 1 storage node, 1 proxy on PORT, with
# LOOP_FLAGS given to both the node and the proxy and NODE_ONLY_FLAGS (an array, optional)
# to the node alone.
start_cluster() {
  local bin=${3:-$BIN_DIR} client_port client peer node admin loop_flags=("${@:4}")
  local node_flags=("${loop_flags[@]}" ${NODE_ONLY_FLAGS[@]+"${NODE_ONLY_FLAGS[@]}"})
  client_port=$(free_port)
  client=http://127.0.0.1:$client_port peer=http://127.0.0.1:$(free_port)
  node=127.0.0.1:$(free_port)
  admin=(--etcd "$client" --cluster bench)
  spawn "$2/etcd.log" etcd --name bench --data-dir "$2/etcd" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer"
  poll_until "etcd on $client" "$2/etcd.log" etcd_healthy "$client_port"
  "$bin/ringkv-admin" "${admin[@]}" init --shards "$SHARDS" --replicas 1 >/dev/null
  spawn "$2/node.log" "$bin/ringkv-storage" "${admin[@]}" --id n1 --listen "$node" \
    --dir "$2/n1" --fsync everysec "${node_flags[@]}"
  poll_until "storage node n1 to register" "$2/node.log" node_live "$bin" "${admin[@]}" n1
  "$bin/ringkv-admin" "${admin[@]}" assign >/dev/null
  spawn "$2/proxy.log" "$bin/ringkv-proxy" "${admin[@]}" --listen "127.0.0.1:$1" "${loop_flags[@]}"
  poll_until "the proxy on port $1 to answer SET" "$2/proxy.log" set_ok "$1"
  redis-cli -p "$1" DEL ringkv:bench:probe >/dev/null
}

# The cluster with one event loop in the proxy and one in the node: on a machine whose few
# cores also run the benchmark, fewer threads trade pipelined throughput for -P 1's.
start_cluster-1loop() { start_cluster "$1" "$2" "$BIN_DIR" --event-loops 1; }

# The cluster with one event loop in the node only (the proxy keeps one per core): every
# write then reaches RocksDB from one thread, at the price of the node's reads.
start_cluster-node1loop() {
  local NODE_ONLY_FLAGS=(--event-loops 1)
  start_cluster "$1" "$2" "$BIN_DIR"
}

start_ringkv-before() { [[ -n $BEFORE_BIN_DIR ]] || die "ringkv-before needs BEFORE_BIN_DIR"; start_ringkv "$1" "$2" "$BEFORE_BIN_DIR"; }
start_cluster-before() { [[ -n $BEFORE_BIN_DIR ]] || die "cluster-before needs BEFORE_BIN_DIR"; start_cluster "$1" "$2" "$BEFORE_BIN_DIR"; }

