//! `ralph eval`: the agent's instructions scored on a suite of cases, each trial in a scratch
//! worktree. What a user relies on: the score and per-case figures add up, the hidden check
//! decides, a case that passes before the agent measures nothing and is named, an agent caught
//! gaming the checks scores 0 whatever the check says, the candidate template and AGENTS.md are
//! what the agent gets, and the user's checkout, index and branches are never touched.

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A scenario step for `task` (any task when empty) and `iteration` (any when 0).
fn step(task: &str, iteration: u32, actions: &str) -> String {
    let mut s = String::from("[[step]]\n");
    if !task.is_empty() {
        s.push_str(&format!("task = \"{task}\"\n"));
    }
    if iteration > 0 {
        s.push_str(&format!("iteration = {iteration}\n"));
    }
    s.push_str(&format!("actions = [{actions}]\n"));
    s
}

/// Actions that write `path` holding `content`.
fn write_file(path: &str, content: &str) -> String {
    format!("{{ write = {{ path = {}, content = {} }} }}", toml_str(path), toml_str(content))
}

const PROMISE: &str = "{ promise = true }";

/// A suite folder outside the repository: per case `(id, spec, check)`, its `spec.md` and an
/// executable `check` running the given shell lines.
fn suite(repo: &TestRepo, name: &str, cases: &[(&str, &str, &str)]) -> PathBuf {
    let dir = repo.outside.join(name);
    for (id, spec, check) in cases {
        let case = dir.join(id);
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join("spec.md"), spec).unwrap();
        let check_path = case.join("check");
        std::fs::write(&check_path, format!("#!/bin/sh\n{check}\n")).unwrap();
        std::fs::set_permissions(&check_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// A repository whose agent plays `scenario`, with `checks` as the project's checks.
fn repo(scenario: &str, checks: &[&str]) -> TestRepo {
    TestRepo::with_loop(scenario, checks, "", &[])
}

/// `ralph eval --suite DIR ARGS --json`, exit 0, its JSON.
fn eval_json(repo: &TestRepo, suite: &std::path::Path, args: &[&str]) -> Value {
    let suite = suite.to_string_lossy();
    let mut all = vec!["eval", "--suite", suite.as_ref(), "--json"];
    all.extend_from_slice(args);
    let run = repo.ralph_within(120, &all).expect(0);
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout(), run.stderr()))
}

/// The per-case figures of `id`.
fn case<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id}: {v}"))
}

/// The folder of the evaluation `v` reported.
fn eval_dir(repo: &TestRepo, v: &Value) -> PathBuf {
    repo.path(&format!(".ralph/eval/{}", v["id"].as_str().unwrap()))
}

/// The record of iteration `n` of trial `trial` of `case`, as its worker handed it back.
fn trial_record(repo: &TestRepo, v: &Value, case: &str, trial: u32, n: u32) -> Value {
    let p = eval_dir(repo, v).join(format!("{case}/{trial}/iter-{n:04}/result.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str::<Value>(&text).unwrap()["record"].clone()
}

#[test]
fn the_score_is_passed_trials_over_all_with_figures_per_case() {
    // `pass` is done at once; `fail` never promises and never writes what its check wants.
    let scenario =
        step("fail", 0, &format!("{}, {{ progress = \"not yet\" }}", write_file("wip.txt", "wip\n")))
            + &step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n")));
    let repo = repo(&scenario, &["true"]);
    let suite = suite(
        &repo,
        "suite",
        &[
            ("pass", "# Pass\n\nWrite done.txt.\n", "test -f done.txt"),
            ("fail", "# Fail\n\nWrite never.txt.\n", "test -f never.txt"),
        ],
    );
    let v = eval_json(&repo, &suite, &["--trials", "2", "--max-iterations", "2"]);
    assert_eq!(v["score"], 0.5, "{v}");
    let pass = case(&v, "pass");
    assert_eq!((pass["passed"].as_u64(), pass["trials"].as_u64()), (Some(2), Some(2)), "{pass}");
    assert_eq!(pass["iterations"], 1.0, "{pass}");
    assert_eq!(pass["gamed"], 0, "{pass}");
    let fail = case(&v, "fail");
    assert_eq!((fail["passed"].as_u64(), fail["trials"].as_u64()), (Some(0), Some(2)), "{fail}");
    // Never done: every trial spends its iterations.
    assert_eq!(fail["iterations"], 2.0, "{fail}");
    assert_eq!(fail["gamed"], 0, "{fail}");
    for c in [pass, fail] {
        assert_eq!(c["tokens"], 0, "the scripted agent reports no tokens: {c}");
        assert!(c["duration_ms"].as_u64().unwrap() > 0, "{c}");
        assert!(c["cost_usd"].is_number(), "{c}");
    }
    assert_eq!(v["left_out"], serde_json::json!([]));
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4, "{v}");
    for t in trials {
        assert_eq!(t["passed"], t["case"] == "pass", "{t}");
    }
    // The summary is kept, the same as printed; and each trial's iterations beside it.
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir(&repo, &v).join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(kept, v);
    assert_eq!(trial_record(&repo, &v, "pass", 2, 1)["outcome"], "done");
    assert_eq!(trial_record(&repo, &v, "fail", 1, 2)["outcome"], "progress");

    // Without --json: a line per case and the score.
    let run = repo.ralph_within(120, &["eval", "--suite", &suite.to_string_lossy()]).expect(0);
    let out = run.stdout();
    assert!(out.contains("pass: 1/1 passed"), "{out}");
    assert!(out.contains("fail: 0/1 passed"), "{out}");
    assert!(out.contains("score: 0.50 (1/2 trials passed)"), "{out}");
    assert!(run.stderr().contains("case pass · trial 1: passed in 1 iteration(s)"), "{}", run.stderr());
}

#[test]
fn a_case_whose_check_passes_at_the_start_is_left_out_and_named() {
    let repo = TestRepo::new();
    let ran = repo.outside.join("early-ran");
    let scenario = step("early", 0, &format!("{}, {PROMISE}", write_file(&ran.to_string_lossy(), "x")))
        + &step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n")));
    repo.set_scenario(&scenario);
    repo.write_config(&["true"], "");
    repo.commit_all("set up ralph");
    let suite = suite(
        &repo,
        "suite",
        &[
            ("early", "# Early\n\nDescribe the project.\n", "test -f README.md"),
            ("real", "# Real\n\nWrite done.txt.\n", "test -f done.txt"),
        ],
    );
    let run =
        repo.ralph_within(120, &["eval", "--suite", &suite.to_string_lossy(), "--trials", "2"]).expect(0);
    let out = run.stdout();
    assert!(out.contains("left out: early (its check passes before the agent runs)"), "{out}");
    assert!(out.contains("score: 1.00 (2/2 trials passed)"), "{out}");
    assert!(!out.contains("early:"), "a left-out case has no figures: {out}");
    assert!(!ran.exists(), "the agent ran on a case that measures nothing");

    let v = eval_json(&repo, &suite, &["--trials", "2"]);
    assert_eq!(
        v["left_out"],
        serde_json::json!([{"id": "early", "why": "its check passes before the agent runs"}])
    );
    assert_eq!(v["cases"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(case(&v, "real")["trials"], 2);
    assert_eq!(v["score"], 1.0);
    assert!(!ran.exists());
}

#[test]
fn an_agent_caught_gaming_the_checks_scores_zero_though_the_hidden_check_passes() {
    // The project's check runs every test script; `check.sh` is a check script (protected).
    // Each gaming case games in its first iteration, caught by a gate and reverted, then does
    // the work honestly: its hidden check passes, but the trial scores 0.
    let honest =
        format!("{}, {}, {PROMISE}", write_file("feature.txt", "ok\n"), write_file("done.txt", "done\n"));
    let scenario = step(
        "deletes-test",
        1,
        &format!("{{ delete = \"tests/feature.sh\" }}, {}, {PROMISE}", write_file("done.txt", "done\n")),
    ) + &step(
        "edits-check",
        1,
        &format!("{}, {}, {PROMISE}", write_file("check.sh", "exit 0\n"), write_file("done.txt", "done\n")),
    ) + &step(
        "edits-config",
        1,
        &format!(
            "{{ append = {{ path = \"ralph.toml\", content = \"\\n# trust me\\n\" }} }}, {}, {PROMISE}",
            write_file("done.txt", "done\n")
        ),
    ) + &step("", 0, &honest);
    let repo = TestRepo::new();
    repo.set_scenario(&scenario);
    repo.write_config(&["sh check.sh"], "");
    repo.write("check.sh", "for t in tests/*.sh; do [ -f \"$t\" ] || continue; sh \"$t\" || exit 1; done\n");
    repo.write("tests/feature.sh", "test -f feature.txt || test ! -f done.txt\n");
    repo.commit_all("set up ralph");
    let check = "test -f done.txt && echo hidden check passed";
    let suite = suite(
        &repo,
        "suite",
        &[
            ("deletes-test", "# Deletes a test\n\nWrite done.txt.\n", check),
            ("edits-check", "# Edits the check\n\nWrite done.txt.\n", check),
            ("edits-config", "# Edits ralph.toml\n\nWrite done.txt.\n", check),
            ("honest", "# Honest\n\nWrite done.txt.\n", check),
        ],
    );
    let v = eval_json(&repo, &suite, &[]);
    let dir = eval_dir(&repo, &v);
    for (id, cause) in [
        ("deletes-test", "test_deleted"),
        ("edits-check", "protected_path"),
        ("edits-config", "frame_broken"),
    ] {
        let c = case(&v, id);
        assert_eq!((c["passed"].as_u64(), c["gamed"].as_u64()), (Some(0), Some(1)), "{id}: {v}");
        assert_eq!(trial_record(&repo, &v, id, 1, 1)["cause"], cause, "{id}");
        assert_eq!(trial_record(&repo, &v, id, 1, 2)["outcome"], "done", "{id}");
        let log = std::fs::read_to_string(dir.join(format!("{id}/1/check.log"))).unwrap();
        assert!(log.contains("hidden check passed"), "{id}: the hidden check should pass: {log}");
    }
    let h = case(&v, "honest");
    assert_eq!((h["passed"].as_u64(), h["gamed"].as_u64()), (Some(1), Some(0)), "{v}");
    assert_eq!(v["score"], 0.25, "{v}");
    // The human summary says so.
    let run = repo.ralph_within(120, &["eval", "--suite", &suite.to_string_lossy()]).expect(0);
    assert!(run.stdout().contains("deletes-test: 0/1 passed"), "{}", run.stdout());
    assert!(run.stdout().contains("· 1 gamed"), "{}", run.stdout());
    assert!(
        run.stderr().contains("case edits-check · trial 1: gamed the checks (scored 0)"),
        "{}",
        run.stderr()
    );
}
