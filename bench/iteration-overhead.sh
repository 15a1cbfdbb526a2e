#!/usr/bin/env bash
# Figure 1, per-iteration overhead: ralph's time per iteration next to a bare shell loop doing
# the same work (spawn the agent with stdin from /dev/null, run the check, `git add -A`,
# `git commit`), measured side by side by one hyperfine run and reported as the ratio.
#
#   bench/iteration-overhead.sh           # the progress path on both repositories, then the done path
#   bench/iteration-overhead.sh small     # a repository of a few files
#   bench/iteration-overhead.sh 50k       # a repository of 50,000 files (generated once, cached)
#   bench/iteration-overhead.sh done      # the done path: many tasks, one iteration each
#
# The progress path: the agent appends a line to work.txt and exits; the check is `true`; the
# task stays todo (no promise), so every iteration is checks, commit, next. The done path:
# the agent also prints the promise, and each run first adds N new tasks (and the bare loop N
# files, the same `git add` and commit), so each of its N iterations finishes a task: ralph
# writes `status: done` into the spec and commits it with the work. Each run is a fresh
# `ralph run --new-run --max-iterations N` (start-up included) on a repository that keeps its
# history, against N rounds of the bare loop on a twin repository. The two alternate: each
# round is one hyperfine call with one run of each (the order swapped every other round), and
# the figure is the median of the rounds' ratios. A shared machine's speed drifts over seconds;
# a ratio within a round sees both sides at the same speed, where medians of two blocks of
# runs, one after the other, can see the drift instead of ralph.
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch
cases=("${@:-small 50k done}")
read -r -a cases <<< "${cases[*]}"

# The big repository: 500 folders of 100 small files, committed and packed, kept in the cache.
big_template() {
  local files=$1 dir=$CACHE_DIR/repo-$1
  if [ ! -d "$dir/.git" ]; then
    echo "generating $dir ($files files, once)..." >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    python3 - "$dir.tmp" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 100
for i in range(n):
    d = os.path.join(root, "src", f"mod{i // per:04}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i % per:03}.rs"), "w") as f:
        f.write(f"// file {i}\npub fn f{i}() -> u32 {{ {i} }}\n")
PY
    git_init "$dir.tmp"
    git -C "$dir.tmp" add -A
    # No automatic gc in the background of the commit: the explicit one packs everything.
    git -C "$dir.tmp" -c gc.auto=0 commit -qm "$files files"
    git -C "$dir.tmp" gc -q
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

agent=$WORK/agent.sh
write_agent "$agent"
write_bare_loop "$WORK/bare-loop"
write_ralph_loop "$WORK/ralph-loop"
sides=(ralph bare)
if [ -n "$BEFORE" ]; then
  write_ralph_loop "$WORK/before-loop" "$BEFORE"
  sides+=(before)
fi

# The done path's agent, and its loops: N new tasks (or files) committed, then N iterations.
done_agent=$WORK/done-agent.sh
cat > "$done_agent" <<'SH'
#!/bin/sh
echo "one more line" >> work.txt
echo "Done. <promise>COMPLETE</promise>"
SH
chmod +x "$done_agent"
add_tasks() {
  cat > "$1" <<'SH'
#!/bin/bash
# add-tasks REPO N: the last round's specs (done) removed, N new ones, committed: a backlog of
# N tasks each round, not one that grows by N (work both sides do alike). ralph's state of the
# removed tasks goes too: each round is a night on a new backlog, as issue 15 measured it, not a
# state.json that grows by N tasks a round (see BENCHMARKS.md, session 5).
set -e
rm -f "$1"/.ralph/state.json "$1"/.ralph/state.json.prev "$1"/.ralph/state.json.spare
stamp=$(date +%s%N)
mkdir -p "$1/specs"
git -C "$1" rm -q --ignore-unmatch 'specs/t*.md'
mkdir -p "$1/specs"
for ((i = 1; i <= $2; i++)); do printf '# Task %s\n\nAppend a line to work.txt.\n' "$i" > "$1/specs/t$stamp-$(printf %04d "$i").md"; done
git -C "$1" add specs
git -C "$1" commit -qm "$2 tasks"
SH
  chmod +x "$1"
}
add_tasks "$WORK/add-tasks"
for side in ralph before; do
  bin=$RALPH
  [ "$side" = before ] && bin=$BEFORE
  cat > "$WORK/$side-done-loop" <<SH
#!/bin/bash
# REPO N: N new tasks, then a fresh run that does them all (exit 0: the backlog is done).
"$WORK/add-tasks" "\$1" "\$2" || exit 1
code=0
"$bin" -C "\$1" run --new-run >/dev/null 2>"\$1.ralph.err" || code=\$?
[ "\$code" = 0 ] || { echo "ralph exited \$code:" >&2; tail -5 "\$1.ralph.err" >&2; exit 1; }
SH
  chmod +x "$WORK/$side-done-loop"
done
cat > "$WORK/bare-done-loop" <<SH
#!/bin/bash
"$WORK/add-tasks" "\$1" "\$2" || exit 1
exec "$WORK/bare-loop" "\$1" "$done_agent" "\$2"
SH
chmod +x "$WORK/bare-done-loop"

for c in "${cases[@]}"; do
  case $c in
    small|done) n=50 rounds=15 ;;
    50k) n=50 rounds=6 ;;
    *) echo "unknown case $c (small | 50k | done)" >&2; exit 2 ;;
  esac
  [ "$QUICK" = 1 ] && n=3 rounds=2
  for side in "${sides[@]}"; do
    repo=$WORK/$c-$side
    case $c in
      small|done) mkdir -p "$repo" && git_init "$repo" && printf 'hello\n' > "$repo/README.md" ;;
      50k)
        files=50000
        [ "$QUICK" = 1 ] && files=500
        git clone -q "$(big_template $files)" "$repo"
        ;;
    esac
    if [ "$c" = done ]; then
      ralph_fixture "$repo" "$done_agent"
      # No task that stays todo: each run's N new tasks are the backlog.
      git -C "$repo" rm -q specs/010-work.md && git -C "$repo" commit -qm "no standing task"
    else
      ralph_fixture "$repo" "$agent"
    fi
  done
  echo "== $c: $(git -C "$WORK/$c-ralph" ls-files | wc -l) files, $n iterations a run, $rounds rounds after one warm-up; $(load)"
  declare -A cmd=(
    [ralph]="$WORK/ralph-loop $WORK/$c-ralph $n"
    [bare]="$WORK/bare-loop $WORK/$c-bare $agent $n"
    [before]="$WORK/before-loop $WORK/$c-before $n"
  )
  if [ "$c" = done ]; then
    cmd=(
      [ralph]="$WORK/ralph-done-loop $WORK/$c-ralph $n"
      [bare]="$WORK/bare-done-loop $WORK/$c-bare $n"
      [before]="$WORK/before-done-loop $WORK/$c-before $n"
    )
  fi
  : > "$WORK/$c.rounds"
  for ((r = 0; r <= rounds; r++)); do
    order=("${sides[@]}")
    if ((r % 2)); then
      order=(); for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("${sides[i]}"); done
    fi
    args=()
    for side in "${order[@]}"; do args+=(-n "$side" "${cmd[$side]}"); done
    hyperfine --style none --runs 1 --export-json "$WORK/$c-round.json" "${args[@]}"
    # Round 0 warms the caches up and is not counted.
    ((r == 0)) && continue
    python3 - "$WORK/$c-round.json" "$n" "$r" >> "$WORK/$c.rounds" <<'PY'
import json, sys
times = {x["command"]: x["times"][0] for x in json.load(open(sys.argv[1]))["results"]}
n, r = int(sys.argv[2]), sys.argv[3]
print(r, " ".join(f"{k}={v / n * 1000:.2f}" for k, v in sorted(times.items())))
PY
    tail -1 "$WORK/$c.rounds" | python3 -c "import sys; r,*kv=sys.stdin.read().split(); d=dict(x.split('=') for x in kv); print(f'  round {r}: ' + ', '.join(f'{k} {v} ms' for k,v in d.items()) + f', ratio {float(d[\"ralph\"])/float(d[\"bare\"]):.2f}')"
  done
  read -r ralph_ms bare_ms ratio spread before_ratio < <(python3 - "$WORK/$c.rounds" <<'PY'
import statistics, sys
rounds = [dict(kv.split("=") for kv in line.split()[1:]) for line in open(sys.argv[1])]
ms = lambda side: statistics.median(float(d[side]) for d in rounds)
ratios = sorted(float(d["ralph"]) / float(d["bare"]) for d in rounds)
before = statistics.median(float(d["before"]) / float(d["bare"]) for d in rounds) if "before" in rounds[0] else 0
print(f"{ms('ralph'):.1f} {ms('bare'):.1f} {statistics.median(ratios):.2f} {ratios[0]:.2f}-{ratios[-1]:.2f} {before:.2f}")
PY
  )
  [ -n "$BEFORE" ] && echo "$c: ralph before: ratio $before_ratio (median of the rounds)"
  target=1.3
  [ "$c" = 50k ] && target=1.1
  echo "$c: ralph $ralph_ms ms/iteration, bare loop $bare_ms ms/iteration (medians), ratio $ratio (median of $rounds rounds, $spread; target $target); $(load)"
  name="$c repo"
  [ "$c" = done ] && name="done path, small repo"
  figure "per-iteration overhead, $name" "≤ ${target}×" "${ratio}× (ralph $ralph_ms ms, bare $bare_ms ms; rounds $spread)" "$(verdict "$ratio" '<=' "$target")"
done
