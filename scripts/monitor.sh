#!/usr/bin/env bash
# A Prometheus next to the local cluster (`make cluster`), in the background:
# Debian's prometheus with grafana/prometheus.yml, which scrapes every process
# scripts/cluster.sh starts (proxies, storage nodes, etcd) every 2 s.
#
#   scripts/monitor.sh start    start it (or say it is already running); returns
#                               once it answers /-/ready, printing its address
#   scripts/monitor.sh stop     stop it, by pid (`make cluster-stop` does too)
#
# It lives with the cluster under ./.cluster: prometheus/ (its TSDB, kept across
# restarts), pids/prometheus.pid and logs/prometheus.log. It listens on
# 127.0.0.1:9090; point Grafana at it with grafana/provisioning (see
# grafana/README.md).
#
# Environment: PROMETHEUS_BIN (default /usr/bin/prometheus, installed with
# `scripts/install-deps.sh monitor` when missing), START_DEADLINE and
# STOP_DEADLINE in seconds (default 60 and 20).
set -euo pipefail

cd "$(dirname "$0")/.."

PROMETHEUS_BIN=${PROMETHEUS_BIN:-/usr/bin/prometheus}
START_DEADLINE=${START_DEADLINE:-60}
STOP_DEADLINE=${STOP_DEADLINE:-20}

ROOT=.cluster
PIDS=$ROOT/pids
LOGS=$ROOT/logs
NAME=prometheus
CONFIG=grafana/prometheus.yml
LISTEN_HOST=127.0.0.1
LISTEN_PORT=9090
# The first proxy `make cluster` starts: if it does not answer there is no cluster.
PROXY_PORT=6380

say() { echo "monitor: $*" >&2; }

# The pid in prometheus.pid if that process is alive AND still runs prometheus
# (a stale pid file may name a pid the kernel has given to something else).
live_pid() {
  local pid exe
  [[ -f $PIDS/$NAME.pid ]] || return 1
  pid=$(<"$PIDS/$NAME.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) || return 1
  [[ ${exe##*/} == "${PROMETHEUS_BIN##*/}" ]] || return 1
  echo "$pid"
}

# `GET <path>` on 127.0.0.1:<port> over bash's /dev/tcp (no curl needed);
# succeeds when the status is 200.
http_ok() {
  local port=$1 path=$2
  timeout 2 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/'"$port"' || exit 1
    printf "GET '"$path"' HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
    head -n1 <&3 | grep -q "^HTTP/1\.[01] 200"' 2>/dev/null
}

# A RESP PING to 127.0.0.1:<port>; succeeds on +PONG.
pong() {
  timeout 2 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/'"$1"' || exit 1
    printf "PING\r\n" >&3
    head -n1 <&3 | grep -q "^+PONG"' 2>/dev/null
}

# Succeeds when something accepts connections on 127.0.0.1:<port>.
port_open() {
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1" 2>/dev/null
}

# host:port of every target in prometheus.yml (the `targets: [...]` lines that
# are not commented out).
scrape_targets() {
  grep -E '^[[:space:]]*- targets:' "$CONFIG" | grep -oE '[0-9.]+:[0-9]+'
}

print_address() {
  echo "Prometheus is running on http://$LISTEN_HOST:$LISTEN_PORT (pid $(live_pid || echo -))"
  echo "  targets: http://$LISTEN_HOST:$LISTEN_PORT/targets    config: $CONFIG"
  echo "  data: ./$ROOT/prometheus    log: $LOGS/$NAME.log    stop: make cluster-stop"
  echo "  dashboards: grafana/dashboards/*.json (grafana/README.md says how to load them)"
}

start() {
  if ! pong "$PROXY_PORT"; then
    say "no ringkv proxy answers on 127.0.0.1:$PROXY_PORT: run \`make cluster\` first"
    exit 1
  fi
  if [[ ! -x $PROMETHEUS_BIN ]]; then
    if [[ $PROMETHEUS_BIN == /usr/bin/prometheus ]]; then
      scripts/install-deps.sh monitor
    fi
    [[ -x $PROMETHEUS_BIN ]] || {
      say "$PROMETHEUS_BIN not found: \`scripts/install-deps.sh monitor\` installs Debian's prometheus (or set PROMETHEUS_BIN)"
      exit 1
    }
  fi
  mkdir -p "$PIDS" "$LOGS" "$ROOT/prometheus"

  if live_pid >/dev/null; then
    say "already running; nothing started"
    print_address
    return 0
  fi
  rm -f "$PIDS/$NAME.pid"
  if port_open "$LISTEN_PORT"; then
    say "something else already listens on $LISTEN_HOST:$LISTEN_PORT; stop it first"
    exit 1
  fi

  say "starting prometheus on $LISTEN_HOST:$LISTEN_PORT (config $CONFIG, data in $ROOT/prometheus)"
  # Background jobs of a non-interactive shell ignore SIGINT, and nohup makes
  # them ignore SIGHUP, so it outlives this script and the terminal.
  nohup "$PROMETHEUS_BIN" --config.file="$CONFIG" --storage.tsdb.path="./$ROOT/prometheus" \
    --web.listen-address="$LISTEN_HOST:$LISTEN_PORT" >>"$LOGS/$NAME.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PIDS/$NAME.pid"

  # Liveness by the pid itself here: for a moment after the fork the process is
  # still nohup, not prometheus, so live_pid would call it gone.
  local end=$((SECONDS + START_DEADLINE))
  until http_ok "$LISTEN_PORT" /-/ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "prometheus exited during startup; last lines of $LOGS/$NAME.log:"
      tail -n 20 "$LOGS/$NAME.log" >&2
      rm -f "$PIDS/$NAME.pid"
      exit 1
    fi
    if ((SECONDS >= end)); then
      say "prometheus not ready after ${START_DEADLINE}s; stopping it. Last lines of $LOGS/$NAME.log:"
      tail -n 20 "$LOGS/$NAME.log" >&2
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$PIDS/$NAME.pid"
      exit 1
    fi
    sleep 0.2
  done

  # A target that does not answer is most often a cluster started without
  # --metrics-addr (by an older scripts/cluster.sh): say so now rather than
  # leave empty dashboards to puzzle over.
  local target missing=()
  while read -r target; do
    http_ok "${target##*:}" /metrics || missing+=("$target")
  done < <(scrape_targets)
  if ((${#missing[@]} > 0)); then
    say "warning: no /metrics on ${missing[*]}; if the cluster predates --metrics-addr," \
      "restart it: make cluster-stop && make cluster && make monitor"
  fi
  print_address
}

stop() {
  local pid
  if ! pid=$(live_pid); then
    rm -f "$PIDS/$NAME.pid"
    say "prometheus was not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local end=$((SECONDS + STOP_DEADLINE))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= end)); then
      say "prometheus (pid $pid) still running after ${STOP_DEADLINE}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$PIDS/$NAME.pid"
  say "stopped prometheus"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
