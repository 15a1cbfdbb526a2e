//! A night unattended: budgets that survive a stop or a crash, circuit breakers, `ralph stop`,
//! and crash safety under `kill -9` at every named point of an iteration and at random moments.

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const FOUR: &[(&str, &str)] =
    &[("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n"), ("040-d.md", "# D\n")];

/// Every task writes its own file and promises.
fn four_tasks(extra: &str, sleep: &str) -> TestRepo {
    let mut scenario = String::new();
    for id in ["010-a", "020-b", "030-c", "040-d"] {
        scenario.push_str(&format!(
            "[[step]]\ntask = \"{id}\"\nactions = [{{ print = \"working on {id}\" }}, {{ print = \"Tokens: 1k sent, 1k received.\" }}, {{ sleep = \"{sleep}\" }}, {{ write = {{ path = \"{id}.txt\", content = \"{id}\\n\" }} }}, {{ learning = \"{id} taught something\" }}, {{ promise = true }}]\n"
        ));
    }
    TestRepo::with_loop(&scenario, &["true"], extra, FOUR)
}

/// The first iteration's agent log, once the run has started one.
fn first_log(repo: &TestRepo) -> String {
    let Ok(mut runs) = std::fs::read_dir(repo.path(".ralph/runs")) else { return String::new() };
    runs.next()
        .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("iter-0001/agent.log")).ok())
        .unwrap_or_default()
}

fn status(repo: &TestRepo) -> serde_json::Value {
    serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap()
}

#[test]
fn budgets_survive_a_restart_and_new_run_starts_afresh() {
    let repo = four_tasks("", "0s");
    repo.ralph(&["run", "--max-iterations", "2"]).expect(3);
    let first = repo.latest_run_dir();
    // Resuming: the two iterations are spent already.
    let again = repo.ralph(&["run", "--max-iterations", "2"]).expect(3);
    assert!(again.stderr().contains("resuming run"), "{}", again.stderr());
    assert!(again.stderr().contains("iteration budget (2) is spent"), "{}", again.stderr());
    assert_eq!(repo.latest_run_dir(), first);
    assert_eq!(repo.records().len(), 2);
    let v = status(&repo);
    assert_eq!(v["run"]["spent"]["iterations"], 2);
    assert_eq!(v["run"]["left"]["iterations"], 0);
    assert_eq!(v["run"]["sessions"], 2);
    let text = repo.ralph(&["status"]).expect(0).stdout();
    assert!(text.contains("spent: iterations 2/2"), "{text}");
    // A raised limit lets the same run go on; its records continue the numbering.
    repo.ralph(&["run", "--max-iterations", "3"]).expect(3);
    assert_eq!(repo.records().len(), 3);
    assert_eq!(repo.records()[2]["iteration"], 3);
    // --new-run: fresh budgets in a new run folder.
    repo.ralph(&["run", "--new-run"]).expect(0);
    assert_ne!(repo.latest_run_dir(), first);
    assert_eq!(repo.records().len(), 1);
    // A finished backlog is not resumed: the next run is new.
    repo.write("specs/050-e.md", "# E\n");
    repo.commit_all("more");
    let before = repo.latest_run_dir();
    repo.set_scenario("[[step]]\nactions = [{ promise = true }]\n");
    repo.ralph(&["run"]).expect(0);
    assert_ne!(repo.latest_run_dir(), before);
}

#[test]
fn token_and_cost_budgets_stop_the_run_and_task_limits_block() {
    let line = |json: &str| format!("{{ print = {} }}", toml_str(json));
    let result = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok <promise>COMPLETE</promise>","total_cost_usd":1.5,"usage":{"input_tokens":600,"output_tokens":400,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;
    let scenario = format!(
        "[[step]]\nactions = [{{ write = {{ path = \"x.txt\", content = \"x\\n\" }} }}, {}]\n",
        line(result)
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "output_format = \"claude-stream-json\"\n", FOUR);
    let run = repo.ralph(&["run", "--max-tokens", "1500"]).expect(3);
    assert!(run.stderr().contains("token budget (1500) is spent"), "{}", run.stderr());
    assert_eq!(repo.records().len(), 2);
    let run = repo.ralph(&["run", "--new-run", "--max-cost", "1"]).expect(3);
    assert!(run.stderr().contains("cost budget ($1.00) is spent"), "{}", run.stderr());
    assert_eq!(status(&repo)["run"]["spent"]["cost_usd"], 1.5);

    // A task over its own token limit is blocked with the reason, and the loop moves on.
    let no_promise = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"not yet","usage":{"input_tokens":600,"output_tokens":400}}"#;
    let scenario = format!(
        "[[step]]\ntask = \"010-a\"\nactions = [{{ write = {{ path = \"x.txt\", content = \"{{}}\" }} }}, {{ run = \"date +%N > x.txt\" }}, {}]\n[[step]]\nactions = [{}]\n",
        line(no_promise),
        line(result)
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n[budget]\nmax_task_tokens = 2500\n",
        FOUR,
    );
    repo.ralph(&["run"]).expect(4);
    assert_eq!(repo.spec_status("010-a"), "blocked");
    assert!(repo.read("specs/010-a.md").contains("used 3000 tokens, over the task's limit of 2500"));
    assert_eq!(repo.spec_status("040-d"), "done");
}

#[test]
fn circuit_breakers_stop_a_spinning_loop_or_block_the_task() {
    // The agent changes nothing, over and over.
    let repo = TestRepo::with_loop("[[step]]\nactions = [{ print = \"thinking\" }]\n", &["true"], "", FOUR);
    let run = repo.ralph(&["run"]).expect(3);
    assert!(run.stderr().contains("3 iterations in a row changed no file"), "{}", run.stderr());
    assert_eq!(repo.records().len(), 3);

    // The same failure every time, with attempts to spare: stopped after three.
    let scenario = "[[step]]\nactions = [{ run = \"date +%N > x.txt\" }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["echo 'error[E0308]: mismatched types at src/main.rs:12'; exit 1"],
        "[budget]\nmax_attempts = 10\nmax_consecutive_failures = 10\n",
        FOUR,
    );
    // A check failing on the clean tree too would be tolerated under the default gate.
    let text = repo.read("ralph.toml").replace("[checks]\n", "[checks]\ngate = \"all-green\"\n");
    repo.write("ralph.toml", &text);
    repo.commit_all("all green");
    let run = repo.ralph(&["run"]).expect(3);
    assert!(run.stderr().contains("3 iterations in a row failed the same way"), "{}", run.stderr());

    // on_breaker = "block": the task is blocked with the reason and the next one runs.
    let scenario = "[[step]]\ntask = \"010-a\"\nactions = [{ print = \"thinking\" }]\n[[step]]\nactions = [{ run = \"date +%N > $RALPH_TASK.txt\" }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "[budget]\non_breaker = \"block\"\n", FOUR);
    repo.ralph(&["run"]).expect(4);
    assert_eq!(repo.spec_status("010-a"), "blocked");
    assert!(repo.read("specs/010-a.md").contains("changed no file"), "{}", repo.read("specs/010-a.md"));
    for id in ["020-b", "030-c", "040-d"] {
        assert_eq!(repo.spec_status(id), "done");
    }
}

#[test]
fn ralph_stop_ends_the_run_after_the_iteration_and_run_resumes_it() {
    let repo = four_tasks("", "1s");
    let err = repo.ralph(&["stop"]).expect(2);
    assert!(err.stderr().contains("no `ralph run` is running"), "{}", err.stderr());

    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_for(20, || first_log(&repo).contains("working on 010-a")));
    let out = repo.ralph(&["stop"]).expect(0);
    assert!(out.stdout().contains("after the current iteration"), "{}", out.stdout());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let records = repo.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "done", "the iteration in progress was finished, not cut");
    assert_eq!(repo.dirt(), "");
    // `ralph run` resumes the same run and finishes the backlog.
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.records().len(), 4);
    // The stop is kept past the end that replaced it, and counts as a person's intervention.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.latest_run_dir().join("run.json")).unwrap())
            .unwrap();
    assert_eq!((meta["end_reason"].as_str(), meta["stops"].as_u64()), (Some("backlog done"), Some(1)));
    let stats: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["stats", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(stats["interventions"]["stops"], 1, "{}", stats["interventions"]);

    // --now: cut at once, cleanly.
    let repo = four_tasks("", "30s");
    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_for(20, || first_log(&repo).contains("working on 010-a")));
    repo.ralph(&["stop", "--now"]).expect(0);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(repo.records()[0]["outcome"], "interrupted");
    assert_eq!(repo.dirt(), "");
}

/// What must hold after any crash and a completed `ralph run`.
fn assert_invariants(repo: &TestRepo, expected_done: &[&str]) {
    assert_eq!(repo.dirt(), "", "the tree is clean");
    assert!(!repo.path(".git/index.lock").exists(), "no stale index.lock");
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--no-progress"])
        .current_dir(&repo.root)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "git fsck: {}", String::from_utf8_lossy(&fsck.stderr));
    for id in expected_done {
        assert_eq!(repo.spec_status(id), "done", "{id}");
        assert_eq!(repo.read(&format!("{id}.txt")), format!("{id}\n"), "{id}'s committed work");
        // Exactly one ralph commit did the task's work.
        let log = repo.git(&["log", "--format=%s", "--", &format!("{id}.txt")]);
        assert_eq!(log.lines().count(), 1, "{id}: {log}");
    }
    // State and records parse, every iteration folder has exactly one record.
    let state = std::fs::read_to_string(repo.path(".ralph/state.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&state).unwrap();
    repo.assert_each_iteration_recorded_once();
    // No half-written file survives.
    for dir in [repo.root.clone(), repo.path("specs"), repo.path(".ralph")] {
        for e in std::fs::read_dir(dir).unwrap() {
            assert!(!e.unwrap().file_name().to_string_lossy().starts_with(".ralph-tmp-"));
        }
    }
    // No process of any run is left.
    let leftover = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("environ"))
            .map(|env| {
                let env = String::from_utf8_lossy(&env);
                env.contains("RALPH_RUN_ID=") && env.contains(&format!("HOME={}", repo.outside.display()))
            })
            .unwrap_or(false)
    });
    assert!(!leftover, "a process of the killed run is still running");
}

#[test]
fn kill_9_at_every_named_point_loses_nothing() {
    let points = [
        "iteration_started",
        "agent_running",
        "agent_exited",
        "checks_running",
        "before_commit",
        "git_commit_running",
        "after_commit",
        "before_record",
        "after_record",
        "write:state.json",
        "write:AGENTS.md",
        "write:010-a.md",
        "write:run.json",
        "write:usage.json",
    ];
    for point in points {
        // Usage is written once the agent reports some: aider's text format reports tokens.
        let extra = if point == "write:usage.json" { "output_format = \"aider-text\"\n" } else { "" };
        let repo = four_tasks(extra, "0s");
        // The agent leaves a grandchild behind, which recovery must end.
        let out = repo.cmd(&["run"]).env("RALPH_FAULT", point).output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: ralph was not killed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = repo.ralph(&["run"]);
        assert_eq!(run.code(), 0, "{point}: {}", run.stderr());
        assert_invariants(&repo, &["010-a", "020-b", "030-c", "040-d"]);
        let records = repo.records();
        assert!(
            records.iter().any(|r| r["outcome"] == "interrupted")
                || point == "after_record"
                || point == "write:run.json",
            "{point}: the killed iteration was not recorded as interrupted: {records:?}"
        );
    }

    // Killed while `git commit` waits on a slow pre-commit hook: the orphaned commit must not
    // land later, inside the next iteration (whose agent is still at work when the hook
    // ends). The hook is slow once; so is the agent after it.
    let repo = TestRepo::with_loop("", &["true"], "", FOUR);
    let once = repo.outside.join("slow-hook").to_string_lossy().into_owned();
    let scenario = format!(
        "[[step]]\ntask = \"010-a\"\nactions = [{{ run = {} }}, {{ write = {{ path = \"010-a.txt\", content = \"010-a\\n\" }} }}, {{ promise = true }}]\n[[step]]\nactions = [{{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }}, {{ promise = true }}]\n",
        toml_str(&format!("if [ -e {once} ] && [ ! -e {once}.agent ]; then touch {once}.agent; sleep 4; fi"))
    );
    repo.set_scenario(&scenario);
    let hook = repo.path(".git/hooks/pre-commit");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, format!("#!/bin/sh\nif [ ! -e {once} ]; then touch {once}; sleep 2; fi\n"))
        .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = repo.cmd(&["run"]).env("RALPH_FAULT", "git_commit_running").output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    let run = repo.ralph(&["run"]);
    assert_eq!(run.code(), 0, "slow hook: {}", run.stderr());
    assert_invariants(&repo, &["010-a", "020-b", "030-c", "040-d"]);
    // The branch's own history of moves: no commit of the killed iteration ever landed.
    let moves = repo.git(&["log", "-g", "--format=%B", "refs/heads/main"]);
    assert!(!moves.contains("Ralph-Iteration: 1\n"), "the killed run's commit landed later:\n{moves}");
    let outcomes: Vec<String> = repo.records().iter().map(|r| r["outcome"].to_string()).collect();
    assert_eq!(
        outcomes,
        ["\"interrupted\"", "\"done\"", "\"done\"", "\"done\"", "\"done\""],
        "the killed run's commit landed in a later iteration"
    );

    // Killed, then the user commits work of their own before the next run: their commit
    // stays, whether ralph had committed the iteration or not.
    for point in ["agent_exited", "after_commit"] {
        let repo = four_tasks("", "0s");
        let out = repo.cmd(&["run"]).env("RALPH_FAULT", point).output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        // A person notices the crash after a while: their commit is dated after ralph's end.
        std::thread::sleep(Duration::from_millis(1100));
        repo.write("notes.txt", "the user's own work\n");
        repo.git(&["add", "notes.txt"]);
        repo.git(&["commit", "-q", "-m", "user's own work"]);
        let user_commit = repo.head();
        let run = repo.ralph(&["run"]);
        assert_eq!(run.code(), 0, "{point}: {}", run.stderr());
        assert!(run.stderr().contains("made on top since are kept"), "{point}: {}", run.stderr());
        assert_invariants(&repo, &["010-a", "020-b", "030-c", "040-d"]);
        assert_eq!(repo.read("notes.txt"), "the user's own work\n", "{point}");
        let history = repo.git(&["rev-list", "HEAD"]);
        assert!(history.contains(&user_commit), "{point}: the user's commit was lost:\n{history}");
    }

    // The user moved the branch (rewrote the commit the iteration started from): history and
    // the tree are left as they are, and the run says why it stops.
    let repo = four_tasks("", "0s");
    let out = repo.cmd(&["run"]).env("RALPH_FAULT", "agent_exited").output().unwrap();
    assert_eq!(out.status.signal(), Some(9));
    repo.git(&["commit", "-q", "--amend", "-m", "set up ralph, reworded"]);
    let moved = repo.head();
    let run = repo.ralph(&["run"]).expect(2);
    assert!(run.stderr().contains("the branch was moved since"), "{}", run.stderr());
    assert_eq!(repo.head(), moved);
    assert_eq!(repo.read("010-a.txt"), "010-a\n", "the tree was left as it is");
    assert_eq!(repo.records()[0]["outcome"], "interrupted");
}

#[test]
fn kill_9_at_random_moments_many_times_loses_nothing() {
    let repo = four_tasks("", "150ms");
    // A check that takes a moment too, so kills land in every phase.
    let text = repo.read("ralph.toml").replace("commands = [\"true\"]", "commands = [\"sleep 0.1\"]");
    repo.write("ralph.toml", &text);
    repo.commit_all("slower check");
    let mut seed: u64 = 0x5eed_1234;
    let mut kills = 0;
    for _ in 0..40 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Mostly within one iteration (agent 150 ms, check 100 ms): most kills land.
        let delay = Duration::from_millis(50 + (seed >> 33) % 350);
        let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            // SAFETY: SIGKILL to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            kills += 1;
        }
        let status = child.wait().unwrap();
        if status.code() == Some(0) {
            break;
        }
    }
    assert!(kills >= 5, "only {kills} kills landed");
    let last = repo.ralph(&["run"]);
    if last.code() != 0 {
        let all: Vec<String> = repo
            .records()
            .iter()
            .map(|r| format!("{} {} {} {}", r["iteration"], r["task"], r["outcome"], r["failure"]))
            .collect();
        panic!("{}\n{}", last.stderr(), all.join("\n"));
    }
    assert_invariants(&repo, &["010-a", "020-b", "030-c", "040-d"]);
}

#[test]
fn a_stopped_agents_green_work_is_kept() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ write = { path = "part1.txt", content = "1\n" } }, { print = "then I hang" }, { hang = true }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "then I hang" }, { write = { path = "part2.txt", content = "2\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["test -f part1.txt"],
        "idle_timeout = \"1s\"\n[budget]\nmax_attempts = 1\n",
        FOUR[..1].as_ref(),
    );
    let run = repo.ralph(&["run"]).expect(0);
    assert!(run.stderr().contains("running the checks on what it left"), "{}", run.stderr());
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "idle_timeout");
    assert!(r[0]["commit"].is_string(), "green work was kept: {}", r[0]);
    assert_eq!(r[1]["outcome"], "done");
    assert_eq!(repo.read("part1.txt"), "1\n");
    assert_eq!(repo.git(&["log", "-2", "--format=%s"]), "ralph(010-a): A\nralph(010-a): progress on A\n");
}

#[test]
fn the_context_budget_ends_the_agent_and_the_next_iteration_starts_fresh() {
    let big = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"reading everything"}],"usage":{"input_tokens":900,"cache_read_input_tokens":150000,"cache_creation_input_tokens":0,"output_tokens":10}}}"#;
    let scenario = format!(
        "[[step]]\niteration = 1\nactions = [{{ write = {{ path = \"part1.txt\", content = \"1\\n\" }} }}, {{ print = {} }}, {{ hang = true }}]\n\
         [[step]]\niteration = 2\nactions = [{{ expect_prompt = \"context reached 150900 tokens\" }}, {{ print = {} }}]\n",
        toml_str(big),
        toml_str(
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done <promise>COMPLETE</promise>"}"#
        )
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["test -f part1.txt"],
        "output_format = \"claude-stream-json\"\n[budget]\ncontext_tokens = 100000\n",
        FOUR[..1].as_ref(),
    );
    let started = std::time::Instant::now();
    repo.ralph(&["run"]).expect(0);
    assert!(started.elapsed() < Duration::from_secs(20), "the agent was not ended at the context budget");
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "progress");
    assert!(r[0]["commit"].is_string());
    assert!(r[0]["progress"].as_str().unwrap().contains("context reached 150900 tokens"), "{}", r[0]);
    assert_eq!(r[1]["outcome"], "done");
}

/// A small tmpfs, unmounted when dropped; `None` where mounting is not allowed (not root).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_clearly_and_loses_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&outside.path().join("disk"), "4m") else {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must be able to mount a tmpfs");
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let root = disk.0.join("repo");
    std::fs::create_dir(&root).unwrap();
    let git = |args: &[&str]| {
        let mut c = std::process::Command::new("git");
        c.args(args).current_dir(&root);
        hermetic(&mut c, outside.path());
        assert!(c.status().unwrap().success());
    };
    git(&["init", "-q"]);
    std::fs::create_dir(root.join("specs")).unwrap();
    std::fs::write(root.join("specs/010-a.md"), "# A\n").unwrap();
    std::fs::write(root.join("keep.txt"), "committed work\n").unwrap();
    let scenario = outside.path().join("s.toml");
    std::fs::write(
        &scenario,
        "[[step]]\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }, { run = \"yes 'a flood that fills the disk' | head -c 8000000\" }, { promise = true }]\n",
    )
    .unwrap();
    std::fs::write(
        root.join("ralph.toml"),
        format!(
            "[agent]\ncommand = [{}, \"scripted-agent\", {}]\n",
            toml_str(RALPH),
            toml_str(&scenario.to_string_lossy())
        ),
    )
    .unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    let mut cmd = std::process::Command::new(RALPH);
    cmd.arg("run").current_dir(&root);
    hermetic(&mut cmd, outside.path());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("hint: free some space"), "{err}");
    assert_eq!(std::fs::read_to_string(root.join("keep.txt")).unwrap(), "committed work\n");
    // Space freed: the next run recovers the cut iteration and finishes.
    for e in std::fs::read_dir(root.join(".ralph/runs")).unwrap() {
        let _ = std::fs::remove_file(e.unwrap().path().join("iter-0001/agent.log"));
    }
    std::fs::write(
        &scenario,
        "[[step]]\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }, { promise = true }]\n",
    )
    .unwrap();
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "a\n");
}

#[test]
fn usage_and_time_of_an_iteration_cut_by_kill_9_count_after_resume() {
    // The first time, the agent reports its spending, works for a while and is killed; the
    // next time it finishes cheaply.
    let repo = TestRepo::with_loop("", &["true"], "output_format = \"aider-text\"\n", &FOUR[..2]);
    let mark = repo.outside.join("spent-once");
    let first = format!(
        "if [ ! -e {0} ]; then touch {0}; echo 'Tokens: 2k sent, 1k received. Cost: $0.80 message, $0.80 session.'; for i in 1 2 3 4 5 6; do sleep 0.5; echo tick $i; done; sleep 60; fi",
        mark.display()
    );
    repo.set_scenario(&format!(
        "[[step]]\nactions = [{{ run = {} }}, {{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }}, {{ print = \"Tokens: 1k sent, 1k received. Cost: $0.30 message, $0.30 session.\" }}, {{ promise = true }}]\n",
        toml_str(&first)
    ));
    let mut child =
        repo.cmd(&["run", "--max-cost", "1"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_for(30, || first_log(&repo).contains("tick 6")));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();

    // Without the cut iteration's $0.80 the two tasks ($0.30 each) would fit in $1.
    let run = repo.ralph(&["run", "--max-cost", "1"]).expect(3);
    assert!(run.stderr().contains("cost budget ($1.00) is spent"), "{}", run.stderr());
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "interrupted", "{r:?}");
    assert_eq!(r[0]["cause"], "crashed", "{}", r[0]);
    assert_eq!(r[0]["cost_usd"], 0.8, "{}", r[0]);
    assert_eq!(r[0]["tokens"]["input"], 2000, "{}", r[0]);
    assert_eq!(r[0]["tokens"]["output"], 1000, "{}", r[0]);
    let cut = r[0]["duration_ms"].as_u64().unwrap();
    assert!(cut >= 2500, "the cut iteration ran about 3 s: {}", r[0]);
    assert_eq!(r.len(), 2, "{r:?}");
    let spent = &status(&repo)["run"]["spent"];
    assert!((spent["cost_usd"].as_f64().unwrap() - 1.1).abs() < 1e-9, "{spent}");
    // The killed session's time counts toward the time budget too.
    assert!(spent["elapsed_ms"].as_u64().unwrap() >= cut, "{spent}");
}

#[test]
fn a_killed_iterations_tokens_count_toward_its_tasks_limit() {
    // The first time, task A's agent reports 3,000 tokens and is killed; the task's limit is
    // 2,500, so after the resume A is blocked without another try, and B runs.
    let repo = TestRepo::with_loop(
        "",
        &["true"],
        "output_format = \"aider-text\"\n\n[budget]\nmax_task_tokens = 2500\n",
        &FOUR[..2],
    );
    let mark = repo.outside.join("spent-once");
    let first = format!(
        "if [ ! -e {0} ]; then touch {0}; echo 'Tokens: 2k sent, 1k received. Cost: $0.80 message, $0.80 session.'; for i in 1 2 3 4 5; do sleep 0.5; echo tick $i; done; sleep 60; fi",
        mark.display()
    );
    repo.set_scenario(&format!(
        "[[step]]\nactions = [{{ run = {} }}, {{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }}, {{ print = \"Tokens: 1k sent, 1k received. Cost: $0.30 message, $0.30 session.\" }}, {{ promise = true }}]\n",
        toml_str(&first)
    ));
    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    // The streamed usage is saved (at most every 2 s while output flows) before the kill.
    let usage = || std::fs::read_to_string(repo.latest_run_dir().join("iter-0001/usage.json"));
    assert!(wait_for(30, || first_log(&repo).contains("tick 5") && usage().is_ok_and(|u| u.contains("2000"))));
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();

    let run = repo.ralph(&["run"]).expect(4);
    assert!(run.stderr().contains("used 3000 tokens, over the task's limit of 2500"), "{}", run.stderr());
    assert_eq!(repo.spec_status("010-a"), "blocked");
    assert_eq!(repo.spec_status("020-b"), "done");
    assert!(!repo.exists("010-a.txt"), "A ran again past its limit");
    let r = repo.records();
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["outcome"], "interrupted", "{r:?}");
    assert_eq!((r[1]["task"].as_str(), r[1]["outcome"].as_str()), (Some("020-b"), Some("done")), "{r:?}");
}

#[test]
fn processes_that_escape_the_agents_group_are_ended_before_they_write() {
    // A daemon of its own session, and one with a cleared environment too (no RALPH_RUN_ID
    // for recovery to find it by): each would write into the tree after the agent exits.
    // The agent exits only once both have left its group (their pid files are written after
    // setsid), so neither is ended with the group by chance.
    let pids = tempfile::tempdir().unwrap();
    let (a, b) = (pids.path().join("a.pid"), pids.path().join("b.pid"));
    let scenario = format!(
        r#"
[[step]]
actions = [
  {{ run = "setsid sh -c 'echo $$ > {a}; sleep 2; echo late > escaped.txt' >/dev/null 2>&1 &" }},
  {{ run = "env -i setsid sh -c 'echo $$ > {b}; sleep 2; echo late > escaped-env.txt' >/dev/null 2>&1 &" }},
  {{ run = "while [ ! -s {a} ] || [ ! -s {b} ]; do sleep 0.01; done" }},
  {{ write = {{ path = "work.txt", content = "work\n" }} }},
  {{ promise = true }},
]
"#,
        a = a.display(),
        b = b.display()
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &FOUR[..1]);
    let run = repo.ralph(&["run"]).expect(0);
    assert!(run.stderr().contains("escaped the agent's or the checks' process group"), "{}", run.stderr());
    let r = repo.records();
    assert!(r[0]["escaped_ended"].as_u64().unwrap_or(0) >= 2, "{}", r[0]);
    // Past the daemons' sleep: had they lived, they would have written by now.
    std::thread::sleep(Duration::from_millis(2500));
    for f in ["escaped.txt", "escaped-env.txt"] {
        assert!(!repo.exists(f), "{f} was written after the run");
    }
    let committed = repo.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert!(!committed.contains("escaped"), "{committed}");
    assert_eq!(repo.dirt(), "");
    let survivors = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("> escaped"))
            && std::fs::read_link(e.path().join("cwd")).is_ok_and(|d| d == repo.root)
    });
    assert!(!survivors, "an escaped process survived the run");
}

#[test]
fn a_killed_iterations_rejected_patch_has_no_secret() {
    let scenario = r#"
[[step]]
actions = [{ run = "echo token is $MY_SERVICE_TOKEN > leak.txt" }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &FOUR[..1]);
    let secret = "s3cr3t-t0ken-value";
    let out = repo
        .cmd(&["run"])
        .env("MY_SERVICE_TOKEN", secret)
        .env("RALPH_FAULT", "agent_exited")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    repo.set_scenario(
        "[[step]]\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }, { promise = true }]\n",
    );
    repo.cmd(&["run"]).env("MY_SERVICE_TOKEN", secret).output().unwrap();
    let patch = repo.iter_file(1, "rejected.patch");
    assert!(patch.contains("leak.txt"), "{patch}");
    assert!(!patch.contains(secret), "{patch}");
    assert!(!repo.exists("leak.txt"));
}

/// An agent that rewrites its iteration's started.json (where the iteration began) to the first
/// commit, then kills ralph: recovery must not reset the branch down there, over ralph's
/// commits of earlier iterations and the user's own.
#[test]
fn a_rewritten_started_json_does_not_make_recovery_reset_below_ralphs_commits() {
    let forge = "R=$(git rev-list --max-parents=0 HEAD); sed -i \"s/\\\"head_before\\\":\\\"[0-9a-f]*\\\"/\\\"head_before\\\":\\\"$R\\\"/\" \"$RALPH_ITER_DIR/started.json\"; RALPH=$(awk '{print $4}' /proc/$PPID/stat); kill -9 $RALPH; sleep 5";
    let scenario = after_a_done_task(
        &format!(
            r#"{{ write = {{ path = "b.txt", content = "half\n" }} }}, {{ run = {} }}"#,
            toml_str(forge)
        ),
        r#"actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]"#,
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.write("user.txt", "mine\n");
    repo.commit_all("user work");
    let out = repo.cmd(&["run"]).output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    let head = repo.head();

    let run = repo.ralph(&["run"]);
    let log = repo.git(&["log", "--format=%s"]);
    assert!(log.contains("user work") && log.contains("ralph(010-a)"), "{log}\n{}", run.stderr());
    assert!(repo.git(&["merge-base", "--is-ancestor", &head, "HEAD"]).is_empty());
    assert!(repo.exists("a.txt") && repo.exists("user.txt") && repo.exists("ralph.toml"));
    let r = repo.records();
    assert_eq!(r[1]["outcome"], "interrupted");
    assert!(r[1]["failure"].as_str().unwrap().contains("started.json"), "{}", r[1]);
}

/// git's automatic maintenance after ralph's commit (here a slow one: its pre-auto-gc hook
/// sleeps) is git's own work, not an escaped process: it runs to its end, and no process is
/// counted as escaped.
#[test]
fn gits_automatic_maintenance_is_not_ended_as_an_escaped_process() {
    let repo = TestRepo::with_loop("", &["true"], "", &FOUR[..2]);
    repo.set_scenario(
        "[[step]]\nactions = [{ run = \"echo $RALPH_TASK > $RALPH_TASK.txt\" }, { promise = true }]\n",
    );
    // gc --auto counts the loose objects in `objects/17/`: two there pass a threshold of 1.
    repo.git(&["config", "gc.auto", "1"]);
    let mut planted = 0;
    for i in 0.. {
        let text = format!("filler {i}\n");
        let header = format!("blob {}\0", text.len());
        if sha1_hex(&[header.as_bytes(), text.as_bytes()].concat()).starts_with("17") {
            std::fs::write(repo.outside.join("filler"), &text).unwrap();
            repo.git(&["hash-object", "-w", repo.outside.join("filler").to_str().unwrap()]);
            planted += 1;
            if planted == 3 {
                break;
            }
        }
    }
    let ran = repo.outside.join("gc-ran");
    let hook = repo.path(".git/hooks/pre-auto-gc");
    std::fs::write(&hook, format!("#!/bin/sh\nsleep 1\ntouch '{}'\n", ran.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = repo.ralph(&["run"]).expect(0);
    assert!(!run.stderr().contains("escaped"), "{}", run.stderr());
    for r in repo.records() {
        assert!(r["escaped_ended"].as_u64().unwrap_or(0) == 0, "{r}");
    }
    assert!(ran.exists(), "the maintenance was cut short");
}

/// SHA-1 of `data` as hex (enough of one for a test to aim objects at a folder).
fn sha1_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// ralph killed while an agent that wrote a secret's value into a file works: the next run
/// recovers, and no file under `.ralph/` holds the value unmasked (the rejected diff included).
#[test]
fn a_secret_in_a_killed_iterations_work_is_masked_after_recovery() {
    const SECRET: &str = "sk-live-0123456789abcdef";
    let repo = TestRepo::with_loop(
        "[[step]]\nactions = [{ run = \"echo key=$MY_API_KEY > $RALPH_TASK.txt\" }, { promise = true }]\n",
        &["true"],
        "",
        &FOUR[..1],
    );
    let out =
        repo.cmd(&["run"]).env("MY_API_KEY", SECRET).env("RALPH_FAULT", "agent_exited").output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(repo.read("010-a.txt").contains(SECRET), "the agent's work holds the secret");
    let run = repo.cmd(&["run"]).env("MY_API_KEY", SECRET).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(repo.iter_file(1, "rejected.patch").contains("key="), "the diff was kept");
    assert_eq!(files_holding(&repo.path(".ralph"), SECRET), Vec::<std::path::PathBuf>::new());
}
