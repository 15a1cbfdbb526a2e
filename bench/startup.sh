#!/usr/bin/env bash
# Figure 6, start-up: `ralph status` on a fresh repository (one commit, `ralph init` run).
#
#   bench/startup.sh
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch
repo=$WORK/fresh
mkdir -p "$repo"
git_init "$repo"
git -C "$repo" commit -q --allow-empty -m init
"$RALPH" -C "$repo" init >/dev/null
echo "== $(load)"
hyperfine --style basic -N --warmup 5 --export-json "$WORK/startup.json" --output=null \
  -n "ralph status" "$RALPH -C $repo status" \
  -n "git rev-parse --show-toplevel (for scale)" "git -C $repo rev-parse --show-toplevel"
ms=$(python3 -c "print(f'{$(median_of "$WORK/startup.json" 0) * 1000:.1f}')")
echo "ralph status on a fresh repository: $ms ms; $(load)"
figure "start-up: ralph status, fresh repo" "< 10 ms" "$ms ms" "$(verdict "$ms" '<' 10)"
