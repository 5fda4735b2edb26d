#!/usr/bin/env bash
# Install the Debian packages (and rustup components) ringkv needs for the given
# purposes, but only the missing ones, so it is cheap to call before every target.
#
#   scripts/install-deps.sh [PURPOSE...]     default: every purpose
#
# To add a dependency, add it to its purpose below (or add a purpose).
set -euo pipefail

declare -A PACKAGES=(
  # bindgen (RocksDB) needs libclang; etcd-client's build runs protoc, which needs the
  # well-known types (google/protobuf/*.proto) of libprotobuf-dev: only a Recommends of
  # protobuf-compiler, which --no-install-recommends leaves out.
  [build]="build-essential pkg-config libclang-dev protobuf-compiler libprotobuf-dev"
  # so that the README's `redis-cli` works against `make run`.
  [run]="redis-tools"
  [lint]="build-essential pkg-config libclang-dev protobuf-compiler libprotobuf-dev"
  # prometheus: tests/monitoring.rs evaluates every dashboard query in a real one.
  # openssl: tests/tls.rs makes its certificates with the openssl command line.
  [test]="redis-server redis-tools etcd-server prometheus openssl"
  # `make monitor`: a Prometheus scraping the `make cluster` processes.
  [monitor]="prometheus"
  # the cluster column of `make bench` runs its own etcd.
  [bench]="redis-server redis-tools nutcracker etcd-server"
)
declare -A COMPONENTS=(
  [lint]="rustfmt clippy"
  [test]="rustfmt clippy"
)

say() { echo "install-deps: $*" >&2; }

purposes=("$@")
if ((${#purposes[@]} == 0)); then
  purposes=("${!PACKAGES[@]}")
fi

want=() components=()
for p in "${purposes[@]}"; do
  if [[ -z ${PACKAGES[$p]+x} ]]; then
    say "unknown purpose '$p' (known: ${!PACKAGES[*]})"
    exit 2
  fi
  read -ra list <<<"${PACKAGES[$p]}"
  want+=("${list[@]}")
  read -ra list <<<"${COMPONENTS[$p]:-}"
  components+=("${list[@]}")
done

# `dpkg -s` also succeeds for removed packages whose config files remain, so
# look at the status itself.
installed() {
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

missing=()
if ! command -v dpkg-query >/dev/null; then
  say "not a Debian system; make sure these are installed: $(printf '%s\n' "${want[@]}" | sort -u | xargs)"
else
  for pkg in $(printf '%s\n' "${want[@]}" | sort -u); do
    installed "$pkg" || missing+=("$pkg")
  done
fi

if ((${#missing[@]} == 0)); then
  say "${purposes[*]}: all packages present"
else
  say "${purposes[*]}: installing ${missing[*]}"
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { say "need root (or sudo) to install packages"; exit 1; }
    sudo=(sudo)
  fi
  log=$(mktemp)
  policy=/usr/sbin/policy-rc.d
  cleanup() {
    rm -f "$log"
    if [[ -n ${own_policy:-} ]]; then "${sudo[@]}" rm -f "$policy"; fi
  }
  trap cleanup EXIT
  # Debian starts daemons on install: a system redis on :6379 would take the
  # port `make run` needs, a system prometheus would take :9090 (`make monitor`'s),
  # and the tests start their own redis/etcd/prometheus anyway.
  # policy-rc.d exit code 101 means "don't start services" to invoke-rc.d and
  # deb-systemd-invoke. Keep an existing policy (Docker images ship one).
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
    -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600)
  # Fresh machines have empty or stale package lists. An unreachable extra
  # repository fails the update but need not fail the install.
  "${apt[@]}" update >"$log" 2>&1 || true
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    cat "$log" >&2
    say "apt-get failed"
    exit 1
  fi
  # ...and keep those daemons from starting at the next boot.
  if [[ -d /run/systemd/system ]]; then
    for pkg in "${missing[@]}"; do
      for unit in $(dpkg -L "$pkg" | grep -E '^(/usr)?/lib/systemd/system/[^/@]+\.service$' || true); do
        say "disabling ${unit##*/} (ringkv starts its own instances)"
        "${sudo[@]}" systemctl disable --now "${unit##*/}" >/dev/null 2>&1 || true
      done
    done
  fi
  say "installed ${missing[*]}"
fi

for c in $(printf '%s\n' "${components[@]}" | sort -u); do
  case $c in
    rustfmt) probe=(cargo fmt --version) ;;
    clippy) probe=(cargo clippy --version) ;;
    *) probe=(false) ;;
  esac
  if ! "${probe[@]}" >/dev/null 2>&1; then
    command -v rustup >/dev/null || { say "missing rust component $c and no rustup to add it"; exit 1; }
    say "adding rust component $c"
    rustup component add "$c"
  fi
done
