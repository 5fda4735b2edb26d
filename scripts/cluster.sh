#!/usr/bin/env bash
# A local ringkv cluster for development, every process in the background:
# etcd (127.0.0.1:2379, peer 2380), `ringkv-admin init` (256 shards, 1 replica),
# 3 storage nodes (n1..n3 on 127.0.0.1:7001-7003), `ringkv-admin assign`, and
# 2 proxies (127.0.0.1:6380 and 127.0.0.1:6381). Every ringkv process serves
# Prometheus metrics (--metrics-addr): proxies on 127.0.0.1:9180-9181, storage
# nodes on 127.0.0.1:9101-9103; etcd on its client port. grafana/prometheus.yml
# scrapes exactly these (`make monitor`).
#
#   scripts/cluster.sh start    start it (or say it is already running); returns
#                               once both proxies answer SET with OK
#   scripts/cluster.sh stop     stop exactly the processes `start` started, by pid
#   scripts/cluster.sh status   the processes, then `ringkv-admin status`
#
# Everything lives under ./.cluster: etcd/ (etcd's data), n1/ n2/ n3/ (RocksDB),
# pids/<name>.pid and logs/<name>.log. Data survives stop/start; delete
# ./.cluster (after `stop`) to start from scratch.
#
# Environment: BIN_DIR (where ringkv-storage, ringkv-proxy and ringkv-admin
# are; default ${CARGO_TARGET_DIR:-target}/release), ETCD_BIN (default: etcd
# in PATH), START_DEADLINE and STOP_DEADLINE in seconds (default 60 and 20).
set -euo pipefail

cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
ETCD_BIN=${ETCD_BIN:-etcd}
START_DEADLINE=${START_DEADLINE:-60}
STOP_DEADLINE=${STOP_DEADLINE:-20}

ROOT=.cluster
PIDS=$ROOT/pids
SECRET=$ROOT/secret
LOGS=$ROOT/logs
CLUSTER=local
SHARDS=256
ETCD_URL=http://127.0.0.1:2379
ETCD_PEER=http://127.0.0.1:2380
NODES=(n1 n2 n3)
declare -A NODE_ADDR=([n1]=127.0.0.1:7001 [n2]=127.0.0.1:7002 [n3]=127.0.0.1:7003)
PROXY_PORTS=(6380 6381)
# --metrics-addr of each process; grafana/prometheus.yml lists the same addresses.
declare -A NODE_METRICS=([n1]=127.0.0.1:9101 [n2]=127.0.0.1:9102 [n3]=127.0.0.1:9103)
declare -A PROXY_METRICS=([6380]=127.0.0.1:9180 [6381]=127.0.0.1:9181)
PROBE_KEY=ringkv:cluster-sh:probe

say() { echo "cluster: $*" >&2; }

admin() { "$BIN_DIR/ringkv-admin" --etcd "$ETCD_URL" --cluster "$CLUSTER" "$@"; }

# Every process this script manages, in start order, as name:program.
processes() {
  echo etcd:etcd
  for n in "${NODES[@]}"; do echo "$n:ringkv-storage"; done
  for p in "${PROXY_PORTS[@]}"; do echo "proxy-$p:ringkv-proxy"; done
}

# The pid in <name>.pid if that process is alive AND still runs <program>
# (a stale pid file may name a pid the kernel has given to something else).
live_pid() {
  local name=$1 program=$2 pid exe
  [[ -f $PIDS/$name.pid ]] || return 1
  pid=$(<"$PIDS/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) || return 1
  [[ ${exe##*/} == "$program" ]] || return 1
  echo "$pid"
}

log_tails() {
  local f
  for f in "$LOGS"/*.log; do
    [[ -f $f ]] || continue
    echo "--- last lines of $f ---" >&2
    tail -n 20 "$f" >&2
  done
}

# Starts <program args...> in the background as <name>, logging to
# logs/<name>.log, with its pid in pids/<name>.pid. Background jobs of a
# non-interactive shell ignore SIGINT, and nohup makes them ignore SIGHUP, so
# they outlive this script and the terminal; `stop` ends them with SIGTERM.
spawn() {
  local name=$1
  shift
  nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# Fails (after printing every log tail and stopping what this run started)
# with a message.
fail() {
  say "$*"
  log_tails
  say "stopping what this run started"
  stop_all >&2 || true
  exit 1
}

# Polls `$@` (a command) every 0.2 s until it succeeds; fails after
# START_DEADLINE seconds, naming what it waited for, or as soon as process
# <name> has died.
wait_for() {
  local what=$1 name=$2 program=$3
  shift 3
  local end=$((SECONDS + START_DEADLINE))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $name ]] && ! live_pid "$name" "$program" >/dev/null; then
      fail "$name exited while waiting for $what (log: $LOGS/$name.log)"
    fi
    ((SECONDS < end)) || fail "timed out after ${START_DEADLINE}s waiting for $what"
    sleep 0.2
  done
}

etcd_healthy() {
  # One HTTP/1.0 GET /health over bash's /dev/tcp: no curl needed.
  timeout 2 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/2379 || exit 1
    printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
    grep -q "\"health\":\"true\"" <&3'
}

node_live() {
  admin status 2>/dev/null | awk -v id="$1" '$1 == id && $2 == "live" { found = 1 } END { exit !found }'
}

# True once the storage node at <host:port> reports map_epoch >= <epoch> in
# INFO: it has opened the column families of the shards that map gives it.
node_at_epoch() {
  local addr=$1 epoch=$2 seen
  seen=$(timeout 5 redis-cli -h "${addr%:*}" -p "${addr##*:}" \
    --no-auth-warning -a "$(cat "$SECRET")" INFO 2>/dev/null |
    tr -d '\r' | sed -n 's/^map_epoch://p')
  [[ $seen =~ ^[0-9]+$ ]] && ((seen >= epoch))
}

proxy_answers() {
  local port=$1 out
  out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$port" SET "$PROBE_KEY" ok 2>&1) || return 1
  [[ $out == OK ]] || return 1
  timeout 5 redis-cli -h 127.0.0.1 -p "$port" DEL "$PROBE_KEY" >/dev/null 2>&1
}

print_addresses() {
  local n p
  echo "ringkv cluster '$CLUSTER' ($SHARDS shards) is running; data and logs in ./$ROOT"
  printf '  %-8s %-22s pid %-8s log %s\n' etcd "$ETCD_URL" "$(live_pid etcd etcd || echo -)" "$LOGS/etcd.log"
  for n in "${NODES[@]}"; do
    printf '  %-8s %-22s pid %-8s log %s\n' "$n" "${NODE_ADDR[$n]}" \
      "$(live_pid "$n" ringkv-storage || echo -)" "$LOGS/$n.log"
  done
  for p in "${PROXY_PORTS[@]}"; do
    printf '  %-8s %-22s pid %-8s log %s\n' proxy "127.0.0.1:$p" \
      "$(live_pid "proxy-$p" ringkv-proxy || echo -)" "$LOGS/proxy-$p.log"
  done
  local metrics=()
  for p in "${PROXY_PORTS[@]}"; do metrics+=("${PROXY_METRICS[$p]}"); done
  for n in "${NODES[@]}"; do metrics+=("${NODE_METRICS[$n]}"); done
  echo "metrics (/metrics): ${metrics[*]}; \`make monitor\` starts a Prometheus scraping them"
  echo "try: redis-cli -p ${PROXY_PORTS[0]}    status: make cluster-status    stop: make cluster-stop"
}

start() {
  local name program running=() stopped=()
  for bin in ringkv-storage ringkv-proxy ringkv-admin; do
    [[ -x $BIN_DIR/$bin ]] || {
      say "$BIN_DIR/$bin not found: build with \`make build\` (or set BIN_DIR)"
      exit 1
    }
  done
  command -v "$ETCD_BIN" >/dev/null || {
    say "etcd not found: \`scripts/install-deps.sh test\` installs Debian's etcd-server (or set ETCD_BIN)"
    exit 1
  }
  command -v redis-cli >/dev/null || {
    say "redis-cli not found: \`scripts/install-deps.sh run\` installs redis-tools"
    exit 1
  }
  mkdir -p "$PIDS" "$LOGS"

  while IFS=: read -r name program; do
    if live_pid "$name" "$program" >/dev/null; then
      running+=("$name")
    else
      stopped+=("$name")
      rm -f "$PIDS/$name.pid"
    fi
  done < <(processes)
  if ((${#stopped[@]} == 0)); then
    say "already running; nothing started"
    print_addresses
    return 0
  fi
  if ((${#running[@]} > 0)); then
    say "partly running (running: ${running[*]}; not running: ${stopped[*]})"
    say "run \`make cluster-stop\`, then \`make cluster\` again"
    exit 1
  fi

  say "starting etcd on $ETCD_URL (data in $ROOT/etcd)"
  spawn etcd "$ETCD_BIN" --name "$CLUSTER" --data-dir "$ROOT/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
    --initial-cluster "$CLUSTER=$ETCD_PEER"
  wait_for "etcd to be healthy on $ETCD_URL" etcd etcd etcd_healthy

  local out
  if out=$(admin init --shards "$SHARDS" --replicas 1 2>&1); then
    say "$out"
  elif [[ $out == *"already exists"* ]]; then
    say "cluster '$CLUSTER' already exists in etcd; keeping it"
  else
    fail "ringkv-admin init failed: $out"
  fi

  # The secret the proxies present to the storage nodes: kept in a file (mode 600)
  # so that this script can present it too when it checks a node.
  if [[ ! -s $SECRET ]]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$SECRET")
  fi
  for n in "${NODES[@]}"; do
    say "starting storage node $n on ${NODE_ADDR[$n]} (data in $ROOT/$n)"
    spawn "$n" "$BIN_DIR/ringkv-storage" --etcd "$ETCD_URL" --cluster "$CLUSTER" \
      --id "$n" --listen "${NODE_ADDR[$n]}" --dir "$ROOT/$n" \
      --metrics-addr "${NODE_METRICS[$n]}" --secret-file "$SECRET"
  done
  for n in "${NODES[@]}"; do
    wait_for "$n to register in etcd" "$n" ringkv-storage node_live "$n"
  done

  out=$(admin assign 2>&1) || fail "ringkv-admin assign failed: $out"
  say "$out"
  local epoch
  epoch=$(admin status 2>/dev/null | sed -n 's/^map epoch \([0-9][0-9]*\).*/\1/p')
  [[ -n $epoch ]] || fail "no map epoch in \`ringkv-admin status\` after assign"
  # A node creates the column families of its shards when it applies the map
  # (seconds for ~85 shards on disk); wait until every node serves it.
  for n in "${NODES[@]}"; do
    wait_for "$n to serve map epoch $epoch" "$n" ringkv-storage \
      node_at_epoch "${NODE_ADDR[$n]}" "$epoch"
  done

  for p in "${PROXY_PORTS[@]}"; do
    say "starting proxy on 127.0.0.1:$p"
    spawn "proxy-$p" "$BIN_DIR/ringkv-proxy" --etcd "$ETCD_URL" --cluster "$CLUSTER" \
      --listen "127.0.0.1:$p" --metrics-addr "${PROXY_METRICS[$p]}" --secret-file "$SECRET"
  done
  for p in "${PROXY_PORTS[@]}"; do
    wait_for "the proxy on 127.0.0.1:$p to answer SET with OK" "proxy-$p" ringkv-proxy \
      proxy_answers "$p"
  done
  print_addresses
}

# SIGTERM to the running processes among <name:program...>, then wait for them
# up to STOP_DEADLINE seconds, then SIGKILL the rest. Removes their pid files.
stop_group() {
  local entry name program pid pids=() names=()
  for entry in "$@"; do
    name=${entry%%:*} program=${entry#*:}
    if pid=$(live_pid "$name" "$program"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "$PIDS/$name.pid"
  done
  ((${#pids[@]} > 0)) || return 0
  local end=$((SECONDS + STOP_DEADLINE)) i alive
  while :; do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || break
    if ((SECONDS >= end)); then
      for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
          say "${names[$i]} (pid ${pids[$i]}) still running after ${STOP_DEADLINE}s: SIGKILL"
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      break
    fi
    sleep 0.1
  done
  say "stopped ${names[*]}"
}

# Prometheus first (if `make monitor` started it, so it does not log the others
# going), proxies (clients see them go), then storage nodes (they revoke their
# leases in etcd on the way out), etcd last.
stop_all() {
  local proxies=() nodes=() p n
  stop_group prometheus:prometheus
  for p in "${PROXY_PORTS[@]}"; do proxies+=("proxy-$p:ringkv-proxy"); done
  for n in "${NODES[@]}"; do nodes+=("$n:ringkv-storage"); done
  stop_group "${proxies[@]}"
  stop_group "${nodes[@]}"
  stop_group etcd:etcd
}

stop() {
  local any=0 name program
  while IFS=: read -r name program; do
    live_pid "$name" "$program" >/dev/null && any=1
  done < <(processes)
  stop_all
  rm -f "$PIDS"/*.pid 2>/dev/null || true
  ((any)) || say "no cluster process was running"
}

status() {
  local name program pid
  while IFS=: read -r name program; do
    if pid=$(live_pid "$name" "$program"); then
      printf '%-11s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-11s not running\n' "$name"
    fi
  done < <(processes)
  echo
  [[ -x $BIN_DIR/ringkv-admin ]] || {
    say "$BIN_DIR/ringkv-admin not found: build with \`make build\` (or set BIN_DIR)"
    exit 1
  }
  admin status
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
