#!/usr/bin/env bash
# Figure 2, flat memory: ralph's resident memory after 10 and after 1,000 iterations of the
# one-line agent (bench/lib.sh), in one run each.
#
#   bench/memory.sh
#
# ralph's own peak (VmHWM, polled from /proc while it runs, so children do not count) and its
# resident set at the end of the run (VmRSS, last sample) are reported for each, with GNU time's
# maximum (ralph or the largest child it waited for: git, the agent).
source "$(dirname "$0")/lib.sh"
build
scratch
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

agent=$WORK/agent.sh
write_agent "$agent"
small=10 large=1000
[ "$QUICK" = 1 ] && small=2 large=5

# run N: prints "hwm_kb rss_kb time_max_kb seconds"
run() {
  local n=$1 repo=$WORK/repo-$1
  mkdir -p "$repo" && git_init "$repo" && printf 'hello\n' > "$repo/README.md"
  ralph_fixture "$repo" "$agent"
  $TIME -f '%M %e' -o "$WORK/time-$n" "$RALPH" -C "$repo" run --max-iterations "$n" >/dev/null 2>"$WORK/err-$n" &
  local tpid=$! pid="" hwm=0 rss=0
  # The child of GNU time is ralph.
  while [ -z "$pid" ] && kill -0 "$tpid" 2>/dev/null; do
    pid=$(pgrep -P "$tpid" || true)
    [ -n "$pid" ] || sleep 0.005
  done
  while [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; do
    local s
    s=$(cat "/proc/$pid/status" 2>/dev/null) || break
    h=$(awk '/^VmHWM/ {print $2}' <<< "$s"); r=$(awk '/^VmRSS/ {print $2}' <<< "$s")
    [ -n "$h" ] && hwm=$h
    [ -n "$r" ] && rss=$r
    sleep 0.02
  done
  wait "$tpid" || true
  local iters
  iters=$(wc -l < "$repo"/.ralph/runs/*/iterations.jsonl)
  [ "$iters" = "$n" ] || { echo "expected $n iterations, got $iters:" >&2; tail -3 "$WORK/err-$n" >&2; exit 1; }
  read -r tmax secs < <(tail -n 1 "$WORK/time-$n")
  echo "$hwm $rss $tmax $secs"
}

echo "== $(load)"
read -r h1 r1 t1 s1 < <(run $small)
mb() { python3 -c "print(f'{$1 / 1024:.1f} MB')"; }
echo "$small iterations: ralph peak $(mb "$h1"), resident at the end $(mb "$r1"); GNU time max $(mb "$t1"); ${s1} s"
read -r h2 r2 t2 s2 < <(run $large)
echo "$large iterations: ralph peak $(mb "$h2"), resident at the end $(mb "$r2"); GNU time max $(mb "$t2"); ${s2} s"
growth=$(python3 -c "print(f'{($h2 - $h1) / 1024:.1f}')")
echo "growth of the peak from $small to $large iterations: $growth MB; $(load)"
figure "flat memory: peak RSS after $small / $large iterations" "equal within a few MB, < 30 MB" \
  "$(python3 -c "print(f'{$h1/1024:.1f} MB / {$h2/1024:.1f} MB')")" \
  "$(python3 -c "print('met' if $h2 < 30*1024 and ($h2 - $h1) < 3*1024 else 'MISSED')")"
