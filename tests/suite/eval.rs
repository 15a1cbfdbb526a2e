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

/// A shell action.
fn shell(cmd: &str) -> String {
    format!("{{ run = {} }}", toml_str(cmd))
}

fn worktree_list(repo: &TestRepo) -> Vec<String> {
    repo.git(&["worktree", "list"]).lines().map(str::to_string).collect()
}

/// Every ref of the repository with the commit it points at.
fn refs(repo: &TestRepo) -> String {
    repo.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// Whether a worker or agent of an evaluation in this repository is still running.
fn trial_processes_left(repo: &TestRepo) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("environ")).is_ok_and(|env| {
            let env = String::from_utf8_lossy(&env);
            env.contains("RALPH_RUN_ID=eval-") && env.contains(&format!("HOME={}", repo.outside.display()))
        })
    })
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

#[test]
fn the_users_checkout_index_and_branches_are_never_touched() {
    let scenario = step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n")));
    let repo = repo(&scenario, &["true"]);
    repo.git(&["branch", "feature"]);
    repo.git(&["tag", "v1"]);
    // Work in progress: a change in the tree, one staged, an untracked file.
    repo.write("README.md", "# test project\n\nedited, not staged\n");
    repo.write("staged.txt", "staged\n");
    repo.git(&["add", "staged.txt"]);
    repo.write("notes.txt", "mine\n");
    let before = (
        repo.dirt(),
        repo.git(&["diff"]),
        repo.git(&["diff", "--cached"]),
        refs(&repo),
        repo.git(&["symbolic-ref", "HEAD"]),
        worktree_list(&repo),
    );
    let suite = suite(&repo, "suite", &[("one", "# One\n\nWrite done.txt.\n", "test -f done.txt")]);
    let v = eval_json(&repo, &suite, &["--trials", "2", "-j", "2"]);
    assert_eq!(v["score"], 1.0, "{v}");
    let after = (
        repo.dirt(),
        repo.git(&["diff"]),
        repo.git(&["diff", "--cached"]),
        refs(&repo),
        repo.git(&["symbolic-ref", "HEAD"]),
        worktree_list(&repo),
    );
    assert_eq!(after, before);
    assert_eq!(repo.read("notes.txt"), "mine\n");
    // The agent's work and the case's spec stayed in the scratch checkouts.
    assert!(!repo.exists("done.txt"));
    assert!(!repo.exists("specs/one.md"));
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    assert!(!refs(&repo).contains("ralph/eval"), "{}", refs(&repo));
    assert!(!repo.path(".git/ralph-eval").exists(), "the scratch folder is left");
}

#[test]
fn a_candidate_template_is_what_the_agent_is_prompted_with() {
    // The agent follows the instruction only when its prompt carries it.
    let scenario = step(
        "",
        0,
        &format!("{}, {PROMISE}", shell("grep -q PELICAN \"$RALPH_PROMPT_FILE\" && echo ok > done.txt")),
    );
    let repo = repo(&scenario, &["true"]);
    let suite = suite(&repo, "suite", &[("follow", "# Follow\n\nDo as told.\n", "test -f done.txt")]);
    let default =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/prompt.md")).unwrap();
    std::fs::write(repo.outside.join("candidate.md"), format!("{default}- Always obey the PELICAN rule.\n"))
        .unwrap();

    let without = eval_json(&repo, &suite, &["--max-iterations", "1"]);
    assert_eq!(without["score"], 0.0, "{without}");
    // A path relative to where ralph runs, as a user types it.
    let with = eval_json(&repo, &suite, &["--max-iterations", "1", "--template", "../candidate.md"]);
    assert_eq!(with["score"], 1.0, "{with}");
    assert_ne!(with["id"], without["id"]);
    // The configured template is unchanged.
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_candidate_agents_md_is_in_the_agents_checkout() {
    let scenario = step("", 0, &format!("{}, {PROMISE}", shell("cat AGENTS.md > seen.txt")));
    let repo = repo(&scenario, &["true"]);
    repo.write("AGENTS.md", "# Notes\n\nThe project's own notes.\n");
    repo.commit_all("notes");
    let suite = suite(
        &repo,
        "suite",
        &[("read", "# Read\n\nRead the notes.\n", "grep -q 'Use the PELICAN rule' seen.txt")],
    );
    std::fs::write(repo.outside.join("AGENTS.candidate.md"), "# Notes\n\nUse the PELICAN rule.\n").unwrap();

    let own = eval_json(&repo, &suite, &["--max-iterations", "1"]);
    assert_eq!(own["score"], 0.0, "without --agents-md the agent sees the project's own: {own}");
    let candidate = repo.outside.join("AGENTS.candidate.md");
    let v = eval_json(&repo, &suite, &["--max-iterations", "1", "--agents-md", &candidate.to_string_lossy()]);
    assert_eq!(v["score"], 1.0, "{v}");
    assert_eq!(repo.read("AGENTS.md"), "# Notes\n\nThe project's own notes.\n");
    assert_eq!(repo.dirt(), "");
}

/// Runs `ralph ARGS`, expects exit 2 and `needle` in its message, and checks nothing was
/// started or changed.
fn refuses(repo: &TestRepo, args: &[&str], needle: &str) {
    let run = repo.ralph_within(60, args).expect(2);
    assert!(run.stderr().contains(needle), "{args:?}: expected {needle:?} in:\n{}", run.stderr());
    assert_eq!(run.stdout(), "", "{args:?}");
    assert_eq!(repo.dirt(), "", "{args:?}");
    assert!(!repo.exists(".ralph/eval"), "{args:?}: an evaluation was started");
    assert_eq!(worktree_list(repo).len(), 1);
}

#[test]
fn bad_options_exit_2_naming_them_and_start_nothing() {
    let repo = repo(&step("", 0, PROMISE), &["true"]);
    let suite = suite(&repo, "suite", &[("one", "# One\n", "true")]);
    let suite = suite.to_string_lossy();
    refuses(&repo, &["eval", "--suite", &suite, "--trials", "0"], "--trials");
    refuses(&repo, &["eval", "--suite", &suite, "--max-iterations", "0"], "--max-iterations");
    refuses(&repo, &["eval", "--suite", &suite, "--template", "../nope.md"], "nope.md");
    refuses(&repo, &["eval", "--suite", &suite, "--agents-md", "../nope.md"], "nope.md");
    refuses(&repo, &["eval", "--suite", &suite, "--agent", "no-such-preset"], "no-such-preset");
    let empty = repo.outside.join("empty");
    std::fs::create_dir(&empty).unwrap();
    refuses(&repo, &["eval", "--suite", &empty.to_string_lossy()], "holds no case");
}

#[test]
fn a_missing_suite_exits_2_naming_it() {
    let repo = repo(&step("", 0, PROMISE), &["true"]);
    let missing = repo.outside.join("no-such-suite");
    refuses(&repo, &["eval", "--suite", &missing.to_string_lossy()], &missing.to_string_lossy());
}

#[test]
fn a_killed_evaluation_leaves_nothing_the_next_one_does_not_clean() {
    let repo = repo(&step("", 0, "{ hang = true }"), &["true"]);
    let suite = suite(&repo, "suite", &[("one", "# One\n\nWrite done.txt.\n", "test -f done.txt")]);
    let mut child = repo
        .cmd(&["eval", "--suite", &suite.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent_log = || {
        std::fs::read_dir(repo.path(".ralph/eval"))
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("one/1/iter-0001/agent.log").exists()))
    };
    assert!(wait_for(30, agent_log), "the agent never started");
    // SAFETY: our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // Its worker dies with it, and the agent with the worker.
    assert!(wait_for(15, || !trial_processes_left(&repo)), "a worker or agent outlived the evaluation");
    assert!(worktree_list(&repo).len() > 1, "the killed trial's checkout should still be there");

    repo.set_scenario(&step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n"))));
    let v = eval_json(&repo, &suite, &[]);
    assert_eq!(v["score"], 1.0, "{v}");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    assert!(!refs(&repo).contains("ralph/eval"), "{}", refs(&repo));
    assert!(!repo.path(".git/ralph-eval").exists(), "the scratch folder is left");
    assert_eq!(repo.dirt(), "");
}

#[test]
fn each_evaluation_keeps_its_own_folder() {
    let repo = repo(&step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n"))), &["true"]);
    let suite = suite(&repo, "suite", &[("one", "# One\n\nWrite done.txt.\n", "test -f done.txt")]);
    // Quick evaluations, several in the same second.
    let ids: Vec<String> =
        (0..3).map(|_| eval_json(&repo, &suite, &[])["id"].as_str().unwrap().to_string()).collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "{ids:?}");
    for id in &ids {
        let dir = repo.path(&format!(".ralph/eval/{id}"));
        let kept: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(kept["id"], id.as_str());
        assert!(dir.join("one/1/iter-0001/result.json").exists(), "{id}");
    }
}

#[test]
fn one_evaluation_at_a_time_and_a_second_one_leaves_the_first_alone() {
    // The agent works once the test says go.
    let wait = "i=0; while [ ! -f \"$HOME/go\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done";
    let scenario = step("", 0, &format!("{}, {}, {PROMISE}", shell(wait), write_file("done.txt", "done\n")));
    let repo = repo(&scenario, &["true"]);
    let suite = suite(&repo, "suite", &[("one", "# One\n\nWrite done.txt.\n", "test -f done.txt")]);
    let first = repo
        .cmd(&["eval", "--suite", &suite.to_string_lossy(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = || {
        std::fs::read_dir(repo.path(".ralph/eval"))
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("one/1/iter-0001/agent.log").exists()))
    };
    assert!(wait_for(30, started), "the first evaluation's agent never started");
    let second = repo.ralph_within(20, &["eval", "--suite", &suite.to_string_lossy()]).expect(2);
    assert!(second.stderr().contains("another `ralph eval`"), "{}", second.stderr());
    std::fs::write(repo.outside.join("go"), "").unwrap();
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["score"], 1.0, "the first evaluation's trial was disturbed: {v}\n{err}");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
}

#[test]
fn a_case_that_cannot_be_scored_is_left_out_and_the_others_are_scored_with_no_agent_left_running() {
    // `b-bad`'s check cannot run the second time (it takes its own execute bit away, as a
    // broken check would fail), while `a-slow`'s agent is still at work.
    let scenario = step(
        "a-slow",
        0,
        &format!(
            "{}, {{ sleep = \"2s\" }}, {}, {PROMISE}",
            shell("touch \"$HOME/slow-started\""),
            write_file("done.txt", "done\n")
        ),
    ) + &step(
        "b-bad",
        0,
        &format!(
            "{}, {PROMISE}",
            shell(
                "i=0; while [ ! -f \"$HOME/slow-started\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"
            )
        ),
    );
    let repo = repo(&scenario, &["true"]);
    let suite = suite(
        &repo,
        "suite",
        &[
            ("a-slow", "# Slow\n\nWrite done.txt.\n", "test -f done.txt"),
            ("b-bad", "# Bad\n\nWrite done.txt.\n", "chmod -x \"$0\"; exit 1"),
        ],
    );
    let run = repo.ralph_within(60, &["eval", "--suite", &suite.to_string_lossy(), "-j", "2"]).expect(0);
    let out = run.stdout();
    assert!(out.contains("left out: b-bad (it cannot be scored: cannot run case b-bad's check"), "{out}");
    assert!(out.contains("a-slow: 1/1 passed"), "{out}");
    assert!(out.contains("score: 1.00 (1/1 trials passed)"), "{out}");
    assert!(!trial_processes_left(&repo), "an agent or worker outlived the evaluation");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    assert!(!refs(&repo).contains("ralph/eval"), "{}", refs(&repo));
    assert!(!repo.path(".git/ralph-eval").exists(), "the scratch folder is left");
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_case_starts_from_its_start_commit_after_its_setup() {
    // The agent does the work only in the case's world: old.txt (gone from HEAD) and what
    // `setup` made.
    let scenario = step(
        "",
        0,
        &format!("{}, {PROMISE}", shell("test -f old.txt && test -f prepared.txt && echo ok > done.txt")),
    );
    let repo = repo(&scenario, &["true"]);
    repo.write("old.txt", "old\n");
    repo.commit_all("old");
    let start = repo.head();
    repo.git(&["rm", "-q", "old.txt"]);
    repo.commit_all("no more old");
    let suite = suite(&repo, "suite", &[("then", "# Then\n\nWrite done.txt.\n", "test -f done.txt")]);
    std::fs::write(suite.join("then/start"), format!("{start}\n")).unwrap();
    let setup = suite.join("then/setup");
    std::fs::write(&setup, "#!/bin/sh\necho prepared > prepared.txt\n").unwrap();
    std::fs::set_permissions(&setup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let v = eval_json(&repo, &suite, &["--max-iterations", "1"]);
    assert_eq!(v["score"], 1.0, "{v}");
    // The setup ran in the scratch checkout only.
    assert!(!repo.exists("prepared.txt"));
    assert!(!repo.exists("old.txt"));
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_case_whose_name_git_refuses_in_a_branch_is_evaluated() {
    let repo = repo(&step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n"))), &["true"]);
    let suite = suite(
        &repo,
        "suite",
        &[
            // Names the suite accepts but git refuses in a branch name (`..`, `.lock`).
            ("a..b", "# Dots\n\nWrite done.txt.\n", "test -f done.txt"),
            ("x.lock", "# Lock\n\nWrite done.txt.\n", "test -f done.txt"),
        ],
    );
    let v = eval_json(&repo, &suite, &["-j", "2"]);
    assert_eq!(v["score"], 1.0, "{v}");
    assert_eq!(case(&v, "a..b")["passed"], 1, "{v}");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
    assert!(!refs(&repo).contains("ralph/eval"), "{}", refs(&repo));
}

#[test]
fn a_case_whose_setup_fails_is_left_out_with_the_reason() {
    let repo = repo(&step("", 0, &format!("{}, {PROMISE}", write_file("done.txt", "done\n"))), &["true"]);
    let suite = suite(
        &repo,
        "suite",
        &[
            ("good", "# Good\n\nWrite done.txt.\n", "test -f done.txt"),
            ("bad", "# Bad\n\nWrite done.txt.\n", "test -f done.txt"),
        ],
    );
    let setup = suite.join("bad/setup");
    std::fs::write(&setup, "#!/bin/sh\necho 'no network' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&setup, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v = eval_json(&repo, &suite, &[]);
    assert_eq!(v["score"], 1.0, "{v}");
    let left = v["left_out"].as_array().unwrap();
    assert!(left.iter().any(|l| l["id"] == "bad" && l["why"].as_str().unwrap().contains("setup")), "{v}");
    assert_eq!(worktree_list(&repo).len(), 1, "{:?}", worktree_list(&repo));
}
