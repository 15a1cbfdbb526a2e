#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, then a table of the figures (target, measured, verdict).
#
#   bench/run-all.sh            # the real sizes: about 18 minutes on 2 cores
#   bench/run-all.sh --quick    # tiny sizes, a smoke test of the scripts (figures meaningless)
#
# Needs hyperfine and GNU time; builds the release binary (CARGO_TARGET_DIR is honoured).
# Each script can be run alone; see its header.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = --quick ]; then
  export BENCH_QUICK=1
fi
source ./lib.sh
build
out=$(mktemp)
trap 'rm -f "$out"' EXIT
machine
# Figure 1 early: the scripts after it create and delete thousands of files, and on ext4 without
# a journal (this VM's root) file creations stay slower for minutes after mass deletions.
scripts=(startup iteration-overhead status-scale spec-pickup memory log-throughput parallel-speedup)
# The sandbox's cost, where bubblewrap is installed.
command -v bwrap >/dev/null && scripts+=(sandbox-overhead)
for s in "${scripts[@]}"; do
  echo
  echo "### $s"
  # Only the lines' case counts for figure 3; the others are in BENCHMARKS.md for the record.
  args=()
  [ "$s" = log-throughput ] && args=(lines)
  "./$s.sh" "${args[@]}" 2>&1 | tee -a "$out" | grep -v '^FIGURE|'
done
echo
echo "| Figure | Target | Measured | |"
echo "|---|---|---|---|"
grep '^FIGURE|' "$out" | awk -F'|' '{printf "| %s | %s | %s | %s |\n", $2, $3, $4, $5}'
[ "${BENCH_QUICK:-0}" = 1 ] && echo "(--quick: tiny sizes; the figures mean nothing)"
exit 0
