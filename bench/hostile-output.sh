#!/usr/bin/env bash
# Hostile output: ralph's wall time and peak memory when the agent prints 1 GB of lines, a
# single 100 MB line, or 1 GB of binary garbage, next to the bare `agent > file`.
#
#   bench/hostile-output.sh            # all three cases
#   bench/hostile-output.sh lines      # one case: lines | one-line | binary
#
# Prints one row per case: the bare time, ralph's time, the ratio, and ralph's peak resident
# memory (GNU time's %M: ralph, or the largest child it waited for).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
RALPH=$PWD/target/release/ralph
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }

declare -A GEN=(
  [lines]="yes 'the quick brown fox jumps over the lazy dog, again and again' | head -c 1073741824"
  [one-line]="head -c 104857600 /dev/zero | tr '\\\\0' x"
  [binary]="head -c 1073741824 /dev/urandom"
)
cases=("${@:-lines one-line binary}")
read -r -a cases <<< "${cases[*]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-9s %10s %10s %7s %14s %10s\n' case bare_s ralph_s ratio ralph_max_rss log_bytes
for c in "${cases[@]}"; do
  gen=${GEN[$c]}
  # The bare loop: the same output into a file.
  bare=$($TIME -f '%e' sh -c "$gen > $work/bare.out" 2>&1 >/dev/null | tail -n 1)
  rm -f "$work/bare.out"
  repo=$work/$c
  mkdir -p "$repo/specs"
  git -C "$repo" init -q
  git -C "$repo" config user.email bench@example.invalid
  git -C "$repo" config user.name bench
  echo "# flood" > "$repo/specs/010-flood.md"
  cat > "$work/$c.toml" <<TOML
[[step]]
actions = [{ run = $(printf '%s' "$gen" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))') }, { print = "" }, { promise = true }]
TOML
  cat > "$repo/ralph.toml" <<TOML
[agent]
command = ["$RALPH", "scripted-agent", "$work/$c.toml"]
max_log_size = "2GiB"
timeout = "10m"
TOML
  git -C "$repo" add -A && git -C "$repo" commit -qm init
  out=$( { $TIME -f '%e %M' "$RALPH" -C "$repo" run --max-iterations 1 >/dev/null 2>"$work/err"; } 2>&1 || true)
  read -r secs rss < <(tail -n 1 "$work/err")
  log=$(stat -c %s "$repo"/.ralph/runs/*/iter-0001/agent.log)
  ratio=$(python3 -c "print(f'{$secs/$bare:.2f}' if $bare > 0 else 'n/a')")
  printf '%-9s %10s %10s %7s %11s KB %10s\n' "$c" "$bare" "$secs" "$ratio" "$rss" "$log"
  rm -rf "$repo"
done
