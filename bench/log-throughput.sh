#!/usr/bin/env bash
# Figure 3, log throughput: an agent that prints 1 GB. ralph's wall time next to the bare
# `agent > file`, side by side in one hyperfine run, and ralph's peak resident memory.
#
#   bench/log-throughput.sh              # every case; `lines` is the figure
#   bench/log-throughput.sh lines        # one case: lines | lines-masked | one-line | binary
#
# lines: 1 GiB of 62-byte lines (`yes`); lines-masked: the same with a credential in the
# environment (masking on); one-line: a single 100 MiB line; binary: 1 GiB from /dev/urandom. The agent is a shell script; ralph runs it for one iteration with
# `max_log_size` raised so the whole flood is written to agent.log, as the bare run writes it
# to a file. Peak memory is GNU time's %M of one more run (ralph, or the largest child).
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

gib=1073741824 mib100=104857600 runs=${BENCH_RUNS:-10}
[ "$QUICK" = 1 ] && gib=10485760 mib100=1048576 runs=1
declare -A GEN=(
  [lines]="yes 'the quick brown fox jumps over the lazy dog, again and again' | head -c $gib"
  [lines-masked]="yes 'the quick brown fox jumps over the lazy dog, again and again' | head -c $gib"
  [one-line]="head -c $mib100 /dev/zero | tr '\\\\0' x"
  [binary]="head -c $gib /dev/urandom"
)
cases=("${@:-lines lines-masked one-line binary}")
read -r -a cases <<< "${cases[*]}"
write_ralph_loop "$WORK/ralph-loop"
[ -n "$BEFORE" ] && write_ralph_loop "$WORK/before-loop" "$BEFORE"

for c in "${cases[@]}"; do
  [ -n "${GEN[$c]:-}" ] || { echo "unknown case $c (lines | lines-masked | one-line | binary)" >&2; exit 2; }
  # lines-masked: the same flood with a credential in ralph's environment, as an agent's API
  # key always is: every chunk then goes through the secret masking.
  unset BENCH_API_KEY
  [ "$c" = lines-masked ] && export BENCH_API_KEY=sk-bench-0123456789abcdefghijklmnopqrstuvwxyz
  agent=$WORK/$c-agent.sh
  printf '#!/bin/sh\n%s\n' "${GEN[$c]}" > "$agent"
  chmod +x "$agent"
  repo=$WORK/$c
  mkdir -p "$repo/specs"
  git_init "$repo"
  printf '# Flood\n' > "$repo/specs/010-flood.md"
  cat > "$repo/ralph.toml" <<TOML
[agent]
command = ["$agent"]
prompt = "file"
max_log_size = "2GiB"
timeout = "10m"

[checks]
commands = ["true"]
TOML
  git -C "$repo" add -A && git -C "$repo" commit -qm init
  echo "== $c: $(load)"
  # Each run's log is removed before the next (a run writes a whole agent.log).
  extra=()
  [ -n "$BEFORE" ] && extra=(-n "ralph before $c" "$WORK/before-loop $repo 1")
  hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$WORK/$c.json" \
    --prepare "rm -rf $repo/.ralph/runs $WORK/bare.out" \
    -n "ralph $c" "$WORK/ralph-loop $repo 1" \
    -n "bare $c" "sh -c '$agent > $WORK/bare.out'" "${extra[@]}"
  [ -n "$BEFORE" ] && echo "$c: ralph before $(python3 -c "print(f'{$(median_of "$WORK/$c.json" 2) / $(median_of "$WORK/$c.json" 1):.2f}')")× the bare run"
  ralph_s=$(median_of "$WORK/$c.json" 0)
  bare_s=$(median_of "$WORK/$c.json" 1)
  rm -rf "$repo/.ralph/runs" "$WORK/bare.out"
  $TIME -f '%M' -o "$WORK/rss" "$RALPH" -C "$repo" run --new-run --max-iterations 1 >/dev/null 2>&1 || true
  rss_kb=$(tail -n 1 "$WORK/rss")
  log=$(stat -c %s "$repo"/.ralph/runs/*/iter-0001/agent.log)
  rm -rf "$repo/.ralph/runs"
  ratio=$(python3 -c "print(f'{$ralph_s / $bare_s:.2f}')")
  echo "$c: bare $(printf '%.2f' "$bare_s") s, ralph $(printf '%.2f' "$ralph_s") s, ratio $ratio, ralph peak RSS $((rss_kb / 1024)) MB, agent.log $log bytes; $(load)"
  if [ "$c" = lines ]; then
    figure "log throughput, 1 GiB of lines" "≤ 1.25×, < 50 MB" "${ratio}×, $((rss_kb / 1024)) MB" \
      "$(python3 -c "print('met' if $ratio <= 1.25 and $rss_kb < 50*1024 else 'MISSED')")"
  fi
done
