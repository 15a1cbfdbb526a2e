#!/usr/bin/env bash
# Figure 4, status at scale: `ralph status` (and `ralph stats`, once that command exists) on a
# repository with 10,000 iterations of history.
#
#   bench/status-scale.sh
#
# The history is synthetic, written in the documented format (README, "Files" and "The
# iteration record"): one run of 10,000 iterations (the worst case for `status`, which reads
# the latest run's records), each with its iter-NNNN folder (prompt.md, agent.log,
# checks.log), records of about 1.5 KB with a realistic mix of outcomes, tokens, cost, checks
# and messages, 200 specs (half done) and their state.json.
source "$(dirname "$0")/lib.sh"
need hyperfine "apt-get install hyperfine"
build
scratch

n=10000 specs=200
[ "$QUICK" = 1 ] && n=100 specs=10
repo=$WORK/repo
mkdir -p "$repo/specs"
git_init "$repo"
printf '[agent]\npreset = "claude"\n\n[checks]\ncommands = ["cargo test"]\n' > "$repo/ralph.toml"
python3 - "$repo" "$n" "$specs" <<'PY'
import json, os, random, sys
root, n, nspecs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(8)
tasks = [f"{(i + 1) * 10:04}-task-{i}" for i in range(nspecs)]
for i, t in enumerate(tasks):
    status = "done" if i < nspecs // 2 else "todo"
    with open(f"{root}/specs/{t}.md", "w") as f:
        f.write(f"---\nstatus: {status}\npriority: {i % 5}\n---\n# Task {i}\n\n" + "Build the thing; test it.\n" * 20)
run_id = "20260101-000000"
run = f"{root}/.ralph/runs/{run_id}"
os.makedirs(run)
prompt = "# Task\n\n" + "Context line for the agent.\n" * 80
log = "".join(f'{{"type":"assistant","message":{{"content":[{{"type":"text","text":"step {k}"}}]}}}}\n' for k in range(20))
outcomes = ["progress"] * 5 + ["done"] * 2 + ["checks_failed"] * 2 + ["agent_failed"]
state = {"tasks": {}, "test_counts": {"cargo test": 412}, "baseline": None}
t0 = 1767225600  # 2026-01-01T00:00:00Z
with open(f"{run}/iterations.jsonl", "w") as jl:
    for it in range(1, n + 1):
        task = tasks[(it * 7) % nspecs]
        outcome = random.choice(outcomes)
        green = outcome in ("progress", "done")
        start = t0 + it * 300
        dur = random.randint(60_000, 290_000)
        ts = lambda s: __import__("time").strftime("%Y-%m-%dT%H:%M:%S.000Z", __import__("time").gmtime(s))
        rec = {
            "run_id": run_id, "iteration": it, "task": task,
            "started_at": ts(start), "ended_at": ts(start + dur // 1000), "duration_ms": dur,
            "exit_code": 0 if outcome != "agent_failed" else 1, "outcome": outcome,
            "checks": [{"command": "cargo test", "exit_code": 0 if green else 101, "duration_ms": random.randint(5_000, 60_000)}]
                      + ([{"command": "cargo clippy -- -D warnings", "exit_code": 0, "duration_ms": 8000}] if green else []),
            "head_before": f"{random.getrandbits(160):040x}",
            "commit": f"{random.getrandbits(160):040x}" if green else None,
            "files_changed": [f"src/module_{random.randint(0, 40)}.rs" for _ in range(random.randint(1, 6))],
            "learnings_added": ["Run the migrations before the tests."] if it % 50 == 0 else [],
            "learnings_rejected": [],
            "promise": outcome == "done",
            "failure": None if green else "test result: FAILED. 1 passed; 1 failed\n---- tests::it_parses stdout ----\nthread panicked at src/parse.rs:42: assertion failed" + " (details)" * 20,
            "progress": "Parser done; the CLI flag remains." if outcome == "progress" else None,
            "blocked": False, "output_leaked": False, "log_capped": False,
            "tokens": {"input": random.randint(1000, 9000), "output": random.randint(2000, 30000),
                       "cache_read": random.randint(100_000, 900_000), "cache_write": random.randint(1000, 50_000)},
            "cost_usd": round(random.uniform(0.05, 2.5), 4), "num_turns": random.randint(3, 60),
            "model": "claude-sonnet-4-5", "agent_session_id": f"{random.getrandbits(128):032x}",
            "final_message": "I implemented the change and ran the tests; all pass. " * 6,
            "is_error": False, "limit_resets_at": None,
        }
        jl.write(json.dumps(rec, separators=(",", ":")) + "\n")
        d = f"{run}/iter-{it:04}"
        os.mkdir(d)
        for name, body in (("prompt.md", prompt), ("agent.log", log), ("checks.log", "$ cargo test\nok\n")):
            with open(f"{d}/{name}", "w") as f:
                f.write(body)
        st = state["tasks"].setdefault(task, {"iterations": 0, "attempts": 0, "blocked_by_ralph": False, "tokens": 0, "elapsed_ms": 0, "done_hash": None, "last": None})
        st["iterations"] += 1
        st["elapsed_ms"] += dur
        st["last"] = {"run_id": run_id, "iteration": it, "outcome": outcome, "failure": rec["failure"], "progress": rec["progress"]}
end = t0 + (n + 1) * 300
meta = {
    "run_id": run_id, "pid": 1, "started_at": "2026-01-01T00:00:00.000Z",
    "ended_at": __import__("time").strftime("%Y-%m-%dT%H:%M:%S.000Z", __import__("time").gmtime(end)),
    "iterations": n, "exit_code": 3, "end_reason": f"stopped: the iteration budget ({n}) is spent",
    "branch": "main", "sessions": 1, "elapsed_ms": n * 300_000,
    "spent": {"iterations": n, "elapsed_ms": n * 300_000, "tokens": n * 500_000, "cost_usd": n * 1.2,
              "consecutive_failures": 0, "no_change_streak": 0, "failure_signature": None, "failure_streak": 0},
    "limits": {"max_iterations": n, "max_duration_ms": None, "max_tokens": None, "max_cost": None},
}
with open(f"{run}/run.json", "w") as f:
    json.dump(meta, f, indent=2)
with open(f"{root}/.ralph/state.json", "w") as f:
    json.dump(state, f, indent=2)
with open(f"{root}/.ralph/.gitignore", "w") as f:
    f.write("*\n")
PY
git -C "$repo" add -A && git -C "$repo" commit -qm history
jsonl=$repo/.ralph/runs/20260101-000000/iterations.jsonl
echo "== $n iterations ($(($(stat -c %s "$jsonl") / 1024)) KB of records), $specs specs; $(load)"
"$RALPH" -C "$repo" status | head -3
cmds=(-n "ralph status" "$RALPH -C $repo status" -n "ralph status --json" "$RALPH -C $repo status --json")
has_stats=0
if "$RALPH" stats --help >/dev/null 2>&1; then
  has_stats=1
  cmds+=(-n "ralph stats" "$RALPH -C $repo stats")
else
  echo "note: this build has no \`ralph stats\`; only \`ralph status\` is timed"
fi
hyperfine --style basic -N --warmup 3 --export-json "$WORK/status.json" --output=null "${cmds[@]}"
status_ms=$(python3 -c "print(f'{$(median_of "$WORK/status.json" 0) * 1000:.1f}')")
json_ms=$(python3 -c "print(f'{$(median_of "$WORK/status.json" 1) * 1000:.1f}')")
echo "ralph status: $status_ms ms, --json: $json_ms ms; $(load)"
figure "ralph status, $n iterations" "< 50 ms" "$status_ms ms (--json $json_ms ms)" "$(verdict "$status_ms" '<' 50)"
if [ "$has_stats" = 1 ]; then
  stats_ms=$(python3 -c "print(f'{$(median_of "$WORK/status.json" 2) * 1000:.1f}')")
  echo "ralph stats: $stats_ms ms"
  figure "ralph stats, $n iterations" "< 50 ms" "$stats_ms ms" "$(verdict "$stats_ms" '<' 50)"
else
  figure "ralph stats, $n iterations" "< 50 ms" "not measured: no \`ralph stats\` in this build" "n/a"
fi
