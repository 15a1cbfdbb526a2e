#!/usr/bin/env bash
# Parallel workers: the wall time of `ralph run --new-run -j N` on a backlog of independent
# tasks, for N = 1, 2, 4, and the speed-up over N = 1 (the single loop: `-j 1` is it).
#
#   bench/parallel-speedup.sh
#
# The fixture: 8 tasks (no `depends_on`, no `touches`), an agent (a custom command, the prompt
# passed as a file) that sleeps 2 s, writes a file named after its task ($RALPH_TASK) and prints
# the promise, and a `true` check: each task is one iteration, done and landed. The agent
# sleeps, so the figure measures what ralph adds around agents that run at once (worker
# start-up, the slots' checkouts, landing one task at a time), not how CPU-bound agents share
# the cores. Each measurement is a fresh copy of the fixture. Each round is one hyperfine call
# with one run of each N (the order reversed every other round); the figure is the median of the
# rounds' speed-ups (a ratio within a round sees all three at the machine's speed of the
# moment). The overhead is the wall time minus the agents' sleeps on the critical path
# (2 s × ⌈tasks / N⌉), in all and per task.
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch

tasks=8 sleep_s=2 rounds=5 jobs=(1 2 4)
[ "$QUICK" = 1 ] && tasks=4 sleep_s=0.2 rounds=1

# The agent: the sleep, the task's file, the promise.
agent=$WORK/agent.sh
cat > "$agent" <<SH
#!/bin/sh
sleep $sleep_s
echo "done by \$RALPH_TASK" > "\$RALPH_TASK.txt"
echo "Done. <promise>COMPLETE</promise>"
SH
chmod +x "$agent"

# The template every measurement copies: ralph_fixture's repository and settings, its one
# standing task replaced by the independent ones.
template=$WORK/template
mkdir -p "$template"
git_init "$template"
printf 'hello\n' > "$template/README.md"
ralph_fixture "$template" "$agent"
git -C "$template" rm -q specs/010-work.md
mkdir -p "$template/specs"
for ((i = 1; i <= tasks; i++)); do
  printf '# Task %s\n\nWrite the task'"'"'s file.\n' "$i" > "$template/specs/t$(printf %02d "$i").md"
done
git -C "$template" add specs
git -C "$template" commit -qm "$tasks independent tasks"

# parallel-run REPO N: a fresh run with N workers; it must end with the backlog done (exit 0)
# and every task's file on main.
cat > "$WORK/parallel-run" <<SH
#!/bin/bash
code=0
"$RALPH" -C "\$1" run --new-run -j "\$2" >"\$1.ralph.out" 2>&1 || code=\$?
[ "\$code" = 0 ] || { echo "ralph -j \$2 exited \$code:" >&2; tail -5 "\$1.ralph.out" >&2; exit 1; }
landed=\$(git -C "\$1" ls-tree --name-only main | grep -c '^t.*\.txt\$' || true)
[ "\$landed" = $tasks ] || { echo "ralph -j \$2: \$landed of $tasks tasks' files on main" >&2; exit 1; }
SH
chmod +x "$WORK/parallel-run"

echo "== $tasks independent tasks, an agent sleeping ${sleep_s} s each, -j ${jobs[*]}; rounds: $rounds; $(load)"
: > "$WORK/rounds"
for ((r = 1; r <= rounds; r++)); do
  order=("${jobs[@]}")
  if ((r % 2 == 0)); then
    order=(); for ((i = ${#jobs[@]} - 1; i >= 0; i--)); do order+=("${jobs[i]}"); done
  fi
  args=()
  for n in "${order[@]}"; do args+=(-n "j$n" "$WORK/parallel-run $WORK/repo $n"); done
  hyperfine --style none --runs 1 --prepare "rm -rf $WORK/repo $WORK/repo.ralph.out && cp -a $template $WORK/repo" \
    --export-json "$WORK/round.json" "${args[@]}" >/dev/null
  python3 - "$WORK/round.json" "$r" >> "$WORK/rounds" <<'PY'
import json, sys
times = {x["command"]: x["times"][0] for x in json.load(open(sys.argv[1]))["results"]}
print(sys.argv[2], " ".join(f"{k}={v:.3f}" for k, v in sorted(times.items())))
PY
  tail -1 "$WORK/rounds" | python3 -c "
import sys
r, *kv = sys.stdin.read().split()
d = {k: float(v) for k, v in (x.split('=') for x in kv)}
print(f'  round {r}: ' + ', '.join(f'{k} {v:.2f} s' for k, v in d.items())
      + '; speed-up ' + ', '.join(f'{k} {d[\"j1\"] / v:.2f}×' for k, v in d.items() if k != 'j1'))"
done

python3 - "$WORK/rounds" "$tasks" "$sleep_s" "${jobs[@]}" > "$WORK/summary" <<'PY'
import math, statistics, sys
rounds = [{k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])} for line in open(sys.argv[1])]
tasks, sleep, jobs = int(sys.argv[2]), float(sys.argv[3]), [int(j) for j in sys.argv[4:]]
for n in jobs:
    walls = sorted(d[f"j{n}"] for d in rounds)
    wall = statistics.median(walls)
    speedup = statistics.median(d["j1"] / d[f"j{n}"] for d in rounds)
    ideal = sleep * math.ceil(tasks / n)
    extra = wall - ideal
    print(f"{n} {wall:.2f} {walls[0]:.2f}-{walls[-1]:.2f} {speedup:.2f} {ideal:.1f} {extra:.2f} {extra / tasks * 1000:.0f}")
PY
while read -r n wall spread speedup ideal extra per_task; do
  echo "-j $n: wall $wall s (median of $rounds, $spread), speed-up ${speedup}× over -j 1; the sleeps alone $ideal s, overhead $extra s ($per_task ms a task)"
done < "$WORK/summary"
echo "$(load)"
read -r _ wall4 _ speedup4 _ _ per_task4 < <(grep '^4 ' "$WORK/summary")
read -r _ wall1 _ _ _ _ per_task1 < <(grep '^1 ' "$WORK/summary")
figure "parallel speed-up, 4 workers, $tasks tasks of ${sleep_s} s" "≥ 2× (-j 4 under half the serial wall time)" \
  "${speedup4}× (-j 4 $wall4 s, -j 1 $wall1 s; overhead $per_task4 ms a task, serial $per_task1 ms)" \
  "$(verdict "$speedup4" '>=' 2)"
