//! The loop end to end: tasks done and committed, failures reverted and retried with their
//! failure in the next prompt, blocking after the attempt limit, budgets and exit codes.

use crate::common::*;

const THREE_TASKS: &str = r#"
[[step]]
task = "010-one"
actions = [{ write = { path = "one.txt", content = "1\n" } }, { print = "wrote one" }, { promise = true }]
[[step]]
task = "020-two"
actions = [{ write = { path = "two.txt", content = "2\n" } }, { promise = true }]
[[step]]
task = "030-three"
actions = [{ write = { path = "three.txt", content = "3\n" } }, { promise = true }]
"#;

fn three_task_repo() -> TestRepo {
    TestRepo::with_loop(
        THREE_TASKS,
        &["test -f one.txt"],
        "",
        &[
            ("010-one.md", "# One\n\nWrite one.txt.\n"),
            ("020-two.md", "---\ndepends_on: [010-one]\n---\n# Two\n"),
            ("030-three.md", "# Three\n"),
        ],
    )
}

#[test]
fn a_three_task_backlog_completes_with_a_commit_per_task() {
    let repo = three_task_repo();
    let before = repo.head();
    let run = repo.ralph(&["run"]).expect(0);
    assert!(run.stderr().contains("backlog done"), "{}", run.stderr());

    let log = repo.git(&["log", "--format=%s", &format!("{before}..HEAD")]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec!["ralph(030-three): Three", "ralph(020-two): Two", "ralph(010-one): One"]
    );
    let body = repo.git(&["log", "-1", "--format=%B", "HEAD~2"]);
    assert!(body.contains("Ralph-Task: 010-one\nRalph-Run: "), "{body}");
    assert!(body.contains("Ralph-Iteration: 1"), "{body}");
    // The done status is in the same commit as the work.
    let files = repo.git(&["show", "--name-only", "--format=", "HEAD~2"]);
    assert_eq!(files.lines().collect::<Vec<_>>(), vec!["one.txt", "specs/010-one.md"]);
    for id in ["010-one", "020-two", "030-three"] {
        assert_eq!(repo.spec_status(id), "done");
    }
    assert_eq!(repo.dirt(), "");
    assert!(!repo.git(&["ls-files"]).contains(".ralph"));

    let records = repo.records();
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["iteration"], i + 1);
        assert_eq!(r["outcome"], "done");
        assert_eq!(r["exit_code"], 0);
        assert!(r["commit"].as_str().unwrap().len() == 40);
        for key in [
            "run_id",
            "task",
            "started_at",
            "ended_at",
            "duration_ms",
            "checks",
            "head_before",
            "files_changed",
            "learnings_added",
        ] {
            assert!(r.get(key).is_some(), "record lacks {key}: {r}");
        }
    }
    // The dependency ran after its prerequisite; file order decides the rest.
    let tasks: Vec<&str> = records.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, vec!["010-one", "020-two", "030-three"]);
    assert_eq!(records[0]["checks"][0]["command"], "test -f one.txt");
    assert_eq!(records[0]["checks"][0]["exit_code"], 0);
    assert_eq!(records[0]["head_before"], before);
    // The prompt was saved and names the other specs by path only.
    let prompt = repo.iter_file(1, "prompt.md");
    assert!(prompt.contains("Write one.txt."));
    assert!(prompt.contains("specs/020-two.md (todo)"));
    assert!(!prompt.contains("# Two"));
    assert!(repo.iter_file(1, "agent.log").contains("wrote one"));
    assert!(repo.iter_file(1, "checks.log").contains("$ test -f one.txt"));

    // A second run has nothing to do.
    repo.ralph(&["run"]).expect(0);
}

#[test]
fn failing_checks_are_reverted_and_retried_with_the_failure_then_blocked() {
    let scenario = r#"
[[step]]
task = "010-fix"
iteration = 1
actions = [
  { write = { path = "value.txt", content = "wrong\n" } },
  { learning = "value.txt must hold the word right" },
  { promise = true },
]
[[step]]
task = "010-fix"
iteration = 2
actions = [
  { expect_prompt = "MARKER: value.txt holds wrong" },
  { write = { path = "value.txt", content = "still wrong\n" } },
  { learning = "Value.txt must hold the word RIGHT." },
  { promise = true },
]
[[step]]
task = "020-next"
actions = [{ write = { path = "next.txt", content = "n\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["test ! -f value.txt || { echo \"MARKER: value.txt holds $(cat value.txt)\"; exit 1; }"],
        "[budget]\nmax_attempts = 2\n",
        &[("010-fix.md", "# Fix\n"), ("020-next.md", "# Next\n")],
    );
    let before = repo.head();
    repo.ralph(&["run"]).expect(4);

    let records = repo.records();
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["checks_failed", "checks_failed", "done"]);
    // Reverted: the bad file is gone and no work commit was made for the task.
    assert!(!repo.exists("value.txt"));
    assert_eq!(records[0]["commit"], serde_json::Value::Null);
    assert_eq!(records[0]["files_changed"], serde_json::json!(["value.txt"]));
    assert!(repo.iter_file(1, "rejected.patch").contains("+wrong"));
    // The second prompt carried the failing check's output (the agent asserted it too).
    assert!(repo.iter_file(2, "prompt.md").contains("MARKER: value.txt holds wrong"));
    assert!(repo.iter_file(2, "prompt.md").contains("attempt 2 of 2"));
    // Blocked after the limit, with the reason, committed; the loop moved on.
    assert_eq!(repo.spec_status("010-fix"), "blocked");
    assert!(repo.read("specs/010-fix.md").contains("blocked_reason: \"2 failed attempts"));
    assert_eq!(records[1]["blocked"], true);
    assert!(repo.exists("next.txt"));
    // Learnings survive the revert, once each, tagged with the task.
    let agents = repo.read("AGENTS.md");
    assert_eq!(
        agents.matches("value.txt must hold").count() + agents.matches("Value.txt must hold").count(),
        1,
        "{agents}"
    );
    assert!(agents.contains("- [L1] value.txt must hold the word right (010-fix)\n"), "{agents}");
    // The second wording merged into the first: the store counts it twice.
    let store: serde_json::Value = serde_json::from_str(&repo.read(".ralph/learnings.json")).unwrap();
    assert_eq!(store["entries"][0]["count"], 2);
    assert_eq!(store["entries"][0]["task"], "010-fix");
    assert_eq!(store["entries"][0]["iteration"], 1);
    assert!(store["entries"][0]["failure"].as_str().unwrap().contains("failed (exit 1)"), "{store}");
    assert_eq!(repo.dirt(), "");
    let subjects = repo.git(&["log", "--format=%s", &format!("{before}..HEAD")]);
    assert!(subjects.contains("ralph(010-fix): learnings from iteration 1"), "{subjects}");
    assert!(subjects.contains("ralph(010-fix): blocked (2 failed attempts)"), "{subjects}");

    let status = repo.ralph(&["status", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let fix = v["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "010-fix").unwrap();
    assert_eq!(fix["status"], "blocked");
    assert_eq!(fix["attempts"], 2);

    // Unblocking by hand gives the task fresh attempts.
    let text = repo.read("specs/010-fix.md").replace("status: blocked", "status: todo");
    repo.write("specs/010-fix.md", &text);
    repo.commit_all("unblock");
    repo.ralph(&["run", "--new-run", "--max-iterations", "1"]).expect(3);
    let status = repo.ralph(&["status", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_eq!(v["tasks"][0]["attempts"], 1);
    // The scenario has no third step: the agent's complaint on stderr is the failure shown.
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "agent_failed");
    assert!(r["failure"].as_str().unwrap().contains("no step matches task 010-fix iteration 3"), "{r}");
}

#[test]
fn green_without_the_promise_commits_progress_and_continues_in_a_fresh_iteration() {
    let scenario = r#"
[[step]]
task = "010-big"
iteration = 1
actions = [{ write = { path = "part1.txt", content = "a\n" } }, { progress = "part 1 done; part 2 next" }]
[[step]]
task = "010-big"
iteration = 2
actions = [{ expect_prompt = "part 1 done; part 2 next" }, { write = { path = "part2.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-big.md", "# Big\n")]);
    repo.ralph(&["run"]).expect(0);
    let records = repo.records();
    assert_eq!(records[0]["outcome"], "progress");
    assert_eq!(records[0]["progress"], "part 1 done; part 2 next");
    assert_eq!(records[1]["outcome"], "done");
    let subjects = repo.git(&["log", "--format=%s", "-2"]);
    assert_eq!(subjects, "ralph(010-big): Big\nralph(010-big): progress on Big\n");
}

#[test]
fn an_echo_of_the_prompt_does_not_complete_the_task() {
    let scenario = r#"
[[step]]
actions = [{ echo_prompt = true }, { write = { path = "x.txt", content = "x\n" } }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run", "--max-iterations", "2"]).expect(3);
    let records = repo.records();
    assert_eq!(records[0]["outcome"], "progress");
    assert_eq!(records[0]["promise"], false);
    assert!(repo.iter_file(1, "agent.log").contains("<promise>COMPLETE</promise>"));
    assert_eq!(repo.spec_status("010-a"), "todo");
}

#[test]
fn a_custom_promise_is_honoured() {
    let scenario = r#"
[[step]]
actions = [{ promise = true }, { write = { path = "x.txt", content = "x\n" } }]
[[step]]
task = "never"
actions = []
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "completion_promise = \"ALL-DONE-NOW\"\n",
        &[("010-a.md", "# A\n")],
    );
    repo.ralph(&["run", "--max-iterations", "1"]).expect(3);
    assert_eq!(repo.records()[0]["outcome"], "progress");
    repo.set_scenario("[[step]]\nactions = [{ promise = \"I say ALL-DONE-NOW\" }]\n");
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.spec_status("010-a"), "done");
}

#[test]
fn budgets_end_the_run_with_exit_3() {
    let repo = three_task_repo();
    let run = repo.ralph(&["run", "--max-iterations", "1"]).expect(3);
    assert!(run.stderr().contains("iteration budget (1)"), "{}", run.stderr());
    assert_eq!(repo.records().len(), 1);

    // Consecutive failures stop the run even though attempts remain.
    let scenario = "[[step]]\nactions = [{ exit = 1 }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[budget]\nmax_attempts = 10\nmax_consecutive_failures = 2\n",
        &[("010-a.md", "# A\n")],
    );
    let run = repo.ralph(&["run"]).expect(3);
    assert!(run.stderr().contains("2 iterations in a row failed"), "{}", run.stderr());
    let records = repo.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["outcome"], "agent_failed");
    assert_eq!(records[0]["exit_code"], 1);

    // The time budget: checked before each iteration.
    let repo = three_task_repo();
    repo.set_scenario("[[step]]\nactions = [{ sleep = \"1200ms\" }, { print = \"slow\" }]\n");
    let run = repo.ralph(&["run", "--max-duration", "1s"]).expect(3);
    assert!(run.stderr().contains("time budget"), "{}", run.stderr());
}

#[test]
fn the_run_json_records_how_the_run_ended() {
    let repo = three_task_repo();
    repo.ralph(&["run"]).expect(0);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.latest_run_dir().join("run.json")).unwrap())
            .unwrap();
    assert_eq!(meta["exit_code"], 0);
    assert_eq!(meta["iterations"], 3);
    assert_eq!(meta["end_reason"], "backlog done");
}

#[test]
fn the_agent_cannot_mark_its_own_task_done_or_lose_its_spec() {
    // It edits its spec to `done` without the promise: ralph puts `todo` back.
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ run = "sed -i 's/status: todo/status: done/' specs/010-a.md" }, { write = { path = "a.txt", content = "a\n" } }]
[[step]]
task = "020-b"
actions = [{ delete = "specs/020-b.md" }, { write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[
            ("010-a.md", "---\nstatus: todo\n---\n# A\n\nKeep this body.\n"),
            ("020-b.md", "---\ntitle: Bee\n---\n# B\n"),
        ],
    );
    repo.ralph(&["run", "--max-iterations", "1"]).expect(3);
    assert_eq!(repo.records()[0]["outcome"], "progress");
    assert_eq!(repo.read("specs/010-a.md"), "---\nstatus: todo\n---\n# A\n\nKeep this body.\n");

    // It deletes its spec and claims completion: the spec comes back, marked done.
    std::fs::remove_file(repo.path("specs/010-a.md")).unwrap();
    repo.commit_all("drop a");
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.read("specs/020-b.md"), "---\ntitle: Bee\nstatus: done\n---\n# B\n");
}

#[test]
fn an_empty_backlog_says_so() {
    let repo = TestRepo::with_loop("", &["true"], "", &[]);
    let run = repo.ralph(&["run"]).expect(0);
    assert!(run.stderr().contains("the backlog is empty"), "{}", run.stderr());
}

#[test]
fn a_task_is_done_only_when_its_own_checks_pass_too() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ write = { path = "docs.md", content = "draft\n" } }, { promise = true }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "grep -q final docs.md" }, { write = { path = "docs.md", content = "final\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[("010-docs.md", "---\nchecks: [\"grep -q final docs.md\"]\n---\n# Docs\n")],
    );
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "checks_failed");
    assert_eq!(r[0]["checks"][1]["command"], "grep -q final docs.md");
    assert_eq!(r[1]["outcome"], "done");
}

#[test]
fn a_resumed_run_with_its_budget_spent_names_the_limit_and_the_ways_on() {
    let scenario =
        "[[step]]\nactions = [{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[budget]\nmax_iterations = 1\n",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    let err = repo.ralph(&["run"]).expect(3).stderr();
    assert!(err.contains("stopped: the iteration budget (1) is spent"), "{err}");
    // Resumed: nothing can run, and the user is told what to change.
    let err = repo.ralph(&["run"]).expect(3).stderr();
    assert!(
        err.contains("the iteration budget (1) is spent already, by the earlier session(s) of run")
            && err.contains("raise it (--max-iterations, or [budget] max_iterations in ralph.toml)")
            && err.contains("`ralph run --new-run`"),
        "{err}"
    );
    // Either way on works.
    repo.ralph(&["run", "--max-iterations", "5"]).expect(0);
    assert!(repo.exists("020-b.txt"));
}
