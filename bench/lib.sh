# Shared by the bench/ scripts; sourced, not run.
#
# Builds the release binary (honouring CARGO_TARGET_DIR), names it $RALPH, and offers the
# fixtures: a git repository with a one-line agent and a `true` check, a bare loop doing the
# same work, the machine's description and load. BENCH_QUICK=1 (bench/run-all.sh --quick)
# shrinks every size so the scripts can be smoke-tested in seconds; its figures mean nothing.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
QUICK=${BENCH_QUICK:-0}
# Generated fixtures that are worth keeping between runs (the 50,000-file repository).
CACHE_DIR=$TARGET_DIR/bench-cache

# Sets $RALPH: the binary in RALPH_BIN if given (to compare builds: RALPH_BIN=/tmp/old/ralph),
# else a fresh release build, copied aside so that another build into the same target folder
# cannot swap it in the middle of a measurement.
build() {
  if [ -z "${RALPH_BIN:-}" ]; then
    (cd "$REPO_DIR" && cargo build --release --quiet)
    mkdir -p "$CACHE_DIR"
    RALPH_BIN=$CACHE_DIR/ralph
    cp "$TARGET_DIR/release/ralph" "$RALPH_BIN.tmp" && mv "$RALPH_BIN.tmp" "$RALPH_BIN"
    export RALPH_BIN
  fi
  RALPH=$RALPH_BIN
  echo "binary: $RALPH"
}

need() {
  command -v "$1" >/dev/null || { echo "needs $1 ($2)" >&2; exit 2; }
}

# A scratch folder removed on exit.
scratch() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/ralph-bench.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
}

load() { uptime | sed 's/.*load average: /load /'; }

machine() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r), $(git --version)"
}

# git identity and quiet defaults for a fixture repository.
git_init() {
  git -C "$1" init -q -b main
  git -C "$1" config user.email bench@example.invalid
  git -C "$1" config user.name bench
  git -C "$1" config commit.gpgsign false
}

# The agent of figures 1 and 2: changes one file and returns at once. It is what the bare
# loop runs too.
write_agent() {
  cat > "$1" <<'SH'
#!/bin/sh
echo "one more line" >> work.txt
SH
  chmod +x "$1"
}

# A repository ready for `ralph run`: one spec that stays todo (the agent never prints the
# promise, so every iteration is `progress`: checks, commit, next), the agent as a custom
# command with the prompt passed as a file (stdin stays /dev/null, as in the bare loop) and
# a `true` check. $1: the repository (created, or an existing checkout), $2: the agent.
ralph_fixture() {
  local repo=$1 agent=$2
  mkdir -p "$repo/specs"
  if [ -d "$repo/.git" ]; then
    git -C "$repo" config user.email bench@example.invalid
    git -C "$repo" config user.name bench
  else
    git_init "$repo"
  fi
  printf '# Keep going\n\nAppend a line to work.txt.\n' > "$repo/specs/010-work.md"
  cat > "$repo/ralph.toml" <<TOML
[agent]
command = ["$agent"]
prompt = "file"

[checks]
commands = ["true"]

[budget]
max_iterations = 100000
TOML
  git -C "$repo" add -A
  git -C "$repo" commit -qm "ralph fixture"
}

# The bare loop: the same work per iteration, in a shell. $1: repository, $2: agent,
# $3: iterations. The agent's output goes to a file outside the tree, as `agent > log`.
write_bare_loop() {
  cat > "$1" <<'SH'
#!/bin/bash
# bare-loop REPO AGENT N: spawn the agent (stdin /dev/null), run the check, git add -A, git commit.
set -e
cd "$1"
for ((i = 1; i <= $3; i++)); do
  "$2" </dev/null >"$1.agent.log" 2>&1
  sh -c true
  git add -A
  git commit -q -m "bare loop iteration $i"
done
SH
  chmod +x "$1"
}

# ralph's run of N iterations; the budget ending the run (exit 3) is the expected end.
# write_ralph_loop FILE [BINARY]: the binary defaults to $RALPH.
write_ralph_loop() {
  cat > "$1" <<SH
#!/bin/bash
# ralph-loop REPO N: a fresh run of N iterations.
code=0
"${2:-$RALPH}" -C "\$1" run --new-run --max-iterations "\$2" >/dev/null 2>"\$1.ralph.err" || code=\$?
[ "\$code" = 3 ] || { echo "ralph exited \$code:" >&2; tail -5 "\$1.ralph.err" >&2; exit 1; }
SH
  chmod +x "$1"
}

# RALPH_BEFORE=/path/to/an/older/ralph adds that build to the side-by-side measurements of
# figures 1 and 3 (before and after a change, in one hyperfine run).
BEFORE=${RALPH_BEFORE:-}

# Median of a command's times in a hyperfine JSON export (robust to a run disturbed by the
# machine's other users; hyperfine prints the mean and σ as well).
median_of() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(r[int(sys.argv[2])]['median'])" "$1" "$2"; }

# "figure | target | measured | verdict" line for run-all.sh to collect.
figure() { printf 'FIGURE|%s|%s|%s|%s\n' "$1" "$2" "$3" "$4"; }

# verdict VALUE OP TARGET: "met" or "MISSED", e.g. verdict 1.2 '<=' 1.3.
verdict() { python3 -c "import sys; print('met' if float(sys.argv[1]) $2 float(sys.argv[2]) else 'MISSED')" "$1" "$3"; }
