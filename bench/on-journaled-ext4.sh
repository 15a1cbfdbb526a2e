#!/usr/bin/env bash
# Runs one benchmark script with its fixtures (TMPDIR) on an ext4 file system with a journal,
# the common Linux setup, made in an image file and loop-mounted for the run (needs root).
# The machine's own root file system may differ: BENCHMARKS.md says how it matters.
#
#   sudo bench/on-journaled-ext4.sh iteration-overhead.sh small
#   sudo bench/on-journaled-ext4.sh iteration-overhead.sh 50k
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SCRIPT [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (mount)" >&2; exit 2; }
bench=$(cd "$(dirname "$0")" && pwd)
script=$1
shift
image=$(mktemp "${TMPDIR:-/var/tmp}/ralph-bench-ext4.XXXXXX")
mnt=$(mktemp -d)
cleanup() {
  umount "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT
truncate -s 4G "$image"
mkfs.ext4 -q -F "$image"
mount -o loop "$image" "$mnt"
echo "fixtures on: $(findmnt -no FSTYPE,OPTIONS "$mnt") ($(tune2fs -l "$image" | grep -o has_journal))"
TMPDIR=$mnt "$bench/$script" "$@"
