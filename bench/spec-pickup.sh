#!/usr/bin/env bash
# Figure 5, spec pickup: how soon after a spec is written the running loop acts on it.
#
#   bench/spec-pickup.sh
#
# watch: `ralph run --watch` waits on an empty backlog; a new spec is written and the time to
#   the agent starting on it is taken (the agent writes $EPOCHREALTIME first thing). Repeated
#   with a new spec each time, once the loop is waiting again.
# between iterations: the loop works on a slow task (its agent takes 1 s) when a new spec with
#   a higher priority is written; the time from the later of the write and the end of the
#   running agent to the agent starting on the new spec is taken: what ralph adds between two
#   agents, since a spec edited while an agent runs applies from the next iteration by design.
source "$(dirname "$0")/lib.sh"
build
scratch
rounds=10
[ "$QUICK" = 1 ] && rounds=2
events=$WORK/events
agent=$WORK/agent.sh
cat > "$agent" <<SH
#!/bin/bash
echo "start \$EPOCHREALTIME \$RALPH_TASK" >> $events
case \$RALPH_TASK in
  slow) echo more >> slow.txt; sleep 1; echo "end \$EPOCHREALTIME \$RALPH_TASK" >> $events ;;
  *) echo "<promise>COMPLETE</promise>" ;;
esac
SH
chmod +x "$agent"

setup() {
  local repo=$1
  mkdir -p "$repo/specs"
  git_init "$repo"
  printf 'Specs go here.\n' > "$repo/specs/README"
  cat > "$repo/ralph.toml" <<TOML
[agent]
command = ["$agent"]
prompt = "file"

[checks]
commands = ["true"]
TOML
}

# wait_for PATTERN: until a line of the events file matches; prints it.
wait_for() {
  local deadline=$((SECONDS + 30))
  while ! grep -q -- "$1" "$events" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for '$1'" >&2; tail -5 "$WORK/err" >&2; exit 1; }
    sleep 0.005
  done
  grep -- "$1" "$events" | tail -n 1
}

# stats NAME VALUES_MS...: prints "median max" and a line.
stats() {
  local name=$1
  shift
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'{statistics.median(v):.0f} {max(v):.0f}')" "$@"
}

echo "== $(load)"
# watch
repo=$WORK/watch
setup "$repo"
git -C "$repo" add -A && git -C "$repo" commit -qm init
: > "$events"
"$RALPH" -C "$repo" run --watch >/dev/null 2>"$WORK/err" &
pid=$!
sleep 1
watch_ms=()
for ((k = 1; k <= rounds; k++)); do
  t0=$EPOCHREALTIME
  printf '# New task %s\n\nDo it.\n' "$k" > "$repo/specs/$(printf '%03d' "$k")-new-$k.md"
  line=$(wait_for "start .* $(printf '%03d' "$k")-new-$k\$")
  t2=$(awk '{print $2}' <<< "$line")
  watch_ms+=("$(python3 -c "print(($t2 - $t0) * 1000)")")
  # Let the iteration end and the loop wait again.
  until [ "$(cat "$repo"/.ralph/runs/*/iterations.jsonl 2>/dev/null | wc -l)" -ge "$k" ]; do sleep 0.01; done
  sleep 1
done
kill -INT "$pid"
wait "$pid" || true
read -r w_med w_max < <(stats watch "${watch_ms[@]}")
echo "watch: write to agent start, $rounds new specs: median $w_med ms, max $w_max ms (each: ${watch_ms[*]})"

# between iterations
repo=$WORK/between
setup "$repo"
printf '# Slow\n\nKeeps going.\n' > "$repo/specs/500-slow.md"
sed -i 's/^# Slow/---\nid: slow\n---\n# Slow/' "$repo/specs/500-slow.md"
git -C "$repo" add -A && git -C "$repo" commit -qm init
: > "$events"
"$RALPH" -C "$repo" run >/dev/null 2>"$WORK/err" &
pid=$!
gap_ms=()
total_ms=()
for ((k = 1; k <= rounds; k++)); do
  starts=$(grep -c "start .* slow" "$events" || true)
  until [ "$(grep -c "start .* slow" "$events" || true)" -gt "$starts" ]; do sleep 0.005; done
  # Somewhere in the middle of the slow agent's second.
  sleep "0.$((RANDOM % 6 + 2))"
  t0=$EPOCHREALTIME
  name=$(printf '%03d' "$k")-new-$k
  printf -- '---\npriority: 0\n---\n# New task %s\n\nDo it.\n' "$k" > "$repo/specs/$name.md"
  line=$(wait_for "start .* $name\$")
  t2=$(awk '{print $2}' <<< "$line")
  t1=$(grep "end .* slow" "$events" | tail -n 1 | awk '{print $2}')
  gap_ms+=("$(python3 -c "print(($t2 - max($t0, $t1)) * 1000)")")
  total_ms+=("$(python3 -c "print(($t2 - $t0) * 1000)")")
done
kill -INT "$pid"
wait "$pid" || true
read -r g_med g_max < <(stats gap "${gap_ms[@]}")
read -r t_med t_max < <(stats total "${total_ms[@]}")
echo "between iterations: from the later of the write and the running agent's end to the agent starting on the new spec: median $g_med ms, max $g_max ms (each: ${gap_ms[*]}); from the write alone: median $t_med ms; $(load)"
figure "spec pickup, --watch waiting" "< 500 ms" "median $w_med ms, max $w_max ms" "$(verdict "$w_max" '<' 500)"
figure "spec pickup, between iterations" "< 500 ms" "median $g_med ms, max $g_max ms" "$(verdict "$g_max" '<' 500)"
