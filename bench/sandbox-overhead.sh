#!/usr/bin/env bash
# The sandbox's cost per iteration: the same run of N progress iterations (the one-line agent,
# a `true` check, a commit each) with `[sandbox] kind = "none"`, with `[agent] env_allowlist`
# and with `kind = "bwrap"`, side by side in one hyperfine call per round (the order rotated),
# on twin repositories. Reported: the milliseconds bwrap adds to an iteration (the median of
# the rounds' differences, divided by N), and the ratio to the unsandboxed run.
#
#   bench/sandbox-overhead.sh        # 30 iterations a run, 5 rounds
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
need bwrap "apt-get install bubblewrap"
build
scratch
n=30 rounds=5
[ "$QUICK" = 1 ] && n=3 rounds=1
agent=$WORK/agent.sh
write_agent "$agent"
for kind in none allowlist bwrap; do
  ralph_fixture "$WORK/$kind" "$agent"
  case $kind in
    allowlist) sed -i 's/^prompt = "file"$/prompt = "file"\nenv_allowlist = true/' "$WORK/$kind/ralph.toml" ;;
    bwrap) printf '\n[sandbox]\nkind = "bwrap"\n' >> "$WORK/$kind/ralph.toml" ;;
  esac
  git -C "$WORK/$kind" diff --quiet || git -C "$WORK/$kind" commit -qam "$kind"
done
write_ralph_loop "$WORK/ralph-loop"
machine
load
added=() ratios=()
for ((r = 1; r <= rounds; r++)); do
  order=(none allowlist bwrap)
  [ $((r % 2)) = 0 ] && order=(bwrap allowlist none)
  cmds=()
  for k in "${order[@]}"; do cmds+=("$WORK/ralph-loop $WORK/$k $n"); done
  hyperfine --style none --runs 1 --export-json "$WORK/r$r.json" "${cmds[@]}" >/dev/null
  t() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print([x['median'] for x in r if '/'+sys.argv[2]+' ' in x['command']][0])" "$WORK/r$r.json" "$1"; }
  none=$(t none) allow=$(t allowlist) bw=$(t bwrap)
  echo "round $r: none ${none}s, env_allowlist ${allow}s, bwrap ${bw}s for $n iterations"
  added+=("$(python3 -c "print(($bw - $none) / $n * 1000)")")
  ratios+=("$(python3 -c "print($bw / $none)")")
done
med() { python3 -c "import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:])), 2))" "$@"; }
ms=$(med "${added[@]}") ratio=$(med "${ratios[@]}")
echo "bwrap adds ${ms} ms an iteration (median of $rounds rounds); runs take ${ratio}x as long as unsandboxed"
load
figure "sandbox (bwrap) per iteration" "reported" "+${ms} ms (${ratio}x)" "-"
