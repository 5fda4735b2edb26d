#!/usr/bin/env bash
# Keeps a shared cargo target directory from filling the disk.
#
# The servers and the tests that link the engine carry RocksDB statically (40-65 MB each),
# and cargo never deletes an executable an earlier build left behind: a change of
# dependencies, features or profile gives every executable a new hash and keeps the old
# ones. Two days of such builds sharing $CARGO_TARGET_DIR (CI's clean clones get the same
# hashes and share it too) grew it to 52 GB, and a CI run ended in "No space left on
# device". This deletes, per executable name, all but the newest $KEEP (4: a crate's binary
# and its unit tests share a name, so two builds of each). Libraries and build-script
# output are left alone: deleting one could make cargo rebuild RocksDB (~15 min); an
# executable it deletes is only relinked.
#
# Usage: scripts/prune-target.sh [target-dir]   (default: $CARGO_TARGET_DIR, else ./target)
set -euo pipefail

target=${1:-${CARGO_TARGET_DIR:-target}}
keep=${KEEP:-4}
# Below this many MiB free, say so before a run that may need it (RocksDB tests write WALs
# and SST files under $TMPDIR).
warn_below_mib=${WARN_BELOW_MIB:-4096}

freed=0
for deps in "$target"/release/deps "$target"/debug/deps; do
  [ -d "$deps" ] || continue
  declare -A seen=()
  # "<mtime> <size> <path>" of each executable cargo built, newest first; the name is the
  # file name without its "-<16 hex digits>" hash.
  while read -r _ size path; do
    file=${path##*/}
    name=${file%-*}
    seen[$name]=$((${seen[$name]:-0} + 1))
    if [ "${seen[$name]}" -gt "$keep" ]; then
      freed=$((freed + size))
      rm -f -- "$path" "$path.d" "$path.dwp"
    fi
  done < <(find "$deps" -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
    -regex '.*/[A-Za-z0-9_]+-[0-9a-f]{16}' -printf '%T@ %s %p\n' | sort -rn)
  unset seen
done
if [ "$freed" -gt 0 ]; then
  echo "prune-target: deleted $((freed / 1048576)) MiB of stale executables under $target"
fi

for dir in "$target" "${TMPDIR:-/tmp}"; do
  [ -d "$dir" ] || continue
  free_mib=$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')
  if [ "$free_mib" -lt "$warn_below_mib" ]; then
    echo "prune-target: WARNING: only $free_mib MiB free on the filesystem of $dir;" \
      "a full build and test run needs about 4 GiB (RocksDB's tests write under \$TMPDIR)" >&2
  fi
done
