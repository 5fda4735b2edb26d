#!/usr/bin/env bash
# redis-server dressed up as ringkv, to check the integration suite itself:
#
#   RINGKV_BIN=$PWD/integration/tools/redis-as-ringkv.sh cargo test --release -p ringkv-integration
#
# Every test must pass against it, apart from places where ringkv is meant to differ from
# redis-server. It translates ringkv's flags to redis-server's and mimics ringkv's command
# line contract (--help, exit status 2 with one stderr line naming a bad flag).
set -u
bind=127.0.0.1 port=6379 dir=./data fsync=everysec in_memory=no
usage() {
  cat <<'USAGE'
Usage: ringkv [OPTIONS]
  --bind <ADDR>       address to listen on [default: 127.0.0.1]
  --port <PORT>       port to listen on [default: 6379]
  --dir <DIR>         data directory [default: ./data]
  --shards <N>        number of shards [default: 256]
  --in-memory         keep data in memory only (lost on restart)
  --fsync <POLICY>    always|everysec|no [default: everysec]
  -h, --help          print help
USAGE
}
fail() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --bind) bind="${2:?}"; shift 2 ;;
    --port)
      [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -le 65535 ] || fail "invalid value '${2:-}' for '--port <PORT>'"
      port="$2"; shift 2 ;;
    --dir) dir="${2:?}"; shift 2 ;;
    --shards)
      [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] || fail "invalid value '${2:-}' for '--shards <N>'"
      shift 2 ;;
    --in-memory) in_memory=yes; shift ;;
    --fsync)
      case "${2:-}" in always|everysec|no) fsync="$2" ;; *) fail "invalid value '${2:-}' for '--fsync <POLICY>'" ;; esac
      shift 2 ;;
    *) fail "unexpected argument '$1'" ;;
  esac
done
mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ] || fail "--dir $dir: cannot create a writable directory"
if [ "$in_memory" = yes ]; then persistence=(--appendonly no); else persistence=(--appendonly yes --appendfsync "$fsync"); fi
exec redis-server --bind "$bind" --port "$port" --dir "$dir" --save "" --databases 1 \
  --daemonize no "${persistence[@]}"
