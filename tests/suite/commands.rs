//! `ralph init`, `ralph status`, `ralph logs`, `ralph demo`.

use crate::common::*;

#[test]
fn init_creates_what_is_missing_and_keeps_what_exists() {
    let repo = TestRepo::new();
    repo.write("Cargo.toml", "[package]\nname = \"x\"\n");
    let out = repo.ralph(&["init"]).expect(0);
    assert!(out.stdout().contains("created   ralph.toml"), "{}", out.stdout());
    assert!(repo.read("ralph.toml").contains("commands = [\"cargo test\"]"));
    assert!(repo.exists("specs/010-document-checks.md"));
    assert!(repo.read("AGENTS.md").starts_with("# AGENTS.md"));
    assert_eq!(repo.read(".ralph/.gitignore"), "*\n");
    assert!(!repo.dirt().contains(".ralph"));
    // The result is a valid backlog and configuration.
    repo.ralph(&["status"]).expect(0);

    repo.write("AGENTS.md", "mine\n");
    repo.write("ralph.toml", "[agent]\ncommand = [\"mine\"]\n");
    let out = repo.ralph(&["init"]).expect(0);
    assert!(out.stdout().contains("kept      ralph.toml"));
    assert_eq!(repo.read("AGENTS.md"), "mine\n");
    assert_eq!(repo.read("ralph.toml"), "[agent]\ncommand = [\"mine\"]\n");
    repo.ralph(&["init", "--force"]).expect(0);
    assert!(repo.read("ralph.toml").contains("[budget]"));
}

#[test]
fn status_lists_tasks_and_the_last_run() {
    let scenario = "[[step]]\ntask = \"010-a\"\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[
            ("010-a.md", "# First task\n"),
            (
                "020-b.md",
                "---\npriority: 5\ndepends_on: [010-a]\nstatus: blocked\nblocked_reason: \"needs a human\"\n---\n# B\n",
            ),
        ],
    );
    let out = repo.ralph(&["status"]).expect(0);
    assert!(out.stdout().contains("No run yet."), "{}", out.stdout());
    repo.ralph(&["run"]).expect(4);
    let out = repo.ralph(&["status"]).expect(0).stdout();
    assert!(out.contains("Backlog: 2 task(s): 1 done, 0 todo, 1 blocked"), "{out}");
    assert!(out.contains("010-a") && out.contains("First task"), "{out}");
    assert!(out.contains("└ needs a human"), "{out}");
    assert!(out.contains("finished, exit 4"), "{out}");
    assert!(out.contains("1 iteration(s)"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(json["tasks"][0]["id"], "010-a");
    assert_eq!(json["tasks"][0]["status"], "done");
    assert_eq!(json["tasks"][0]["attempts"], 0);
    assert_eq!(json["tasks"][0]["iterations"], 1);
    assert_eq!(json["tasks"][1]["depends_on"], serde_json::json!(["010-a"]));
    assert_eq!(json["run"]["state"], "finished");
    assert_eq!(json["run"]["exit_code"], 4);
    assert_eq!(json["run"]["outcomes"]["done"], 1);
}

#[test]
fn logs_prints_iterations_and_follows_a_live_run() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ print = "first says hi" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ print = "second starts" }, { sleep = "1s" }, { print = "second ends" }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    let err = repo.ralph(&["logs"]).expect(2);
    assert!(err.stderr().contains("no runs yet"));

    let mut run = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_for(20, || repo.path(".ralph/runs").exists()));
    let follow = repo.ralph(&["logs", "-f"]).expect(0).stdout();
    assert_eq!(run.wait().unwrap().code(), Some(0));
    // -f went from iteration to iteration and ended with the run.
    assert!(follow.contains("second ends"), "{follow}");
    assert!(follow.contains("==> iteration 2 <=="), "{follow}");

    assert!(repo.ralph(&["logs", "1"]).expect(0).stdout().contains("first says hi"));
    assert!(repo.ralph(&["logs"]).expect(0).stdout().contains("second ends"));
    assert!(repo.ralph(&["logs", "1", "--prompt"]).expect(0).stdout().starts_with("# Task 010-a: A"));
    assert!(repo.ralph(&["logs", "2", "--checks"]).expect(0).stdout().contains("$ true"));
    let missing = repo.ralph(&["logs", "9"]).expect(2);
    assert!(
        missing.stderr().contains("has no iteration 9 (it has iterations 1 to 2)"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn demo_runs_the_whole_loop_with_the_scripted_agent() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let mut cmd = std::process::Command::new(RALPH);
    cmd.args(["demo", "--dir"]).arg(&demo);
    hermetic(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("backlog done"), "{err}");
    assert!(err.contains("checks_failed"), "{err}");
    let log =
        std::process::Command::new("git").args(["log", "--format=%s"]).current_dir(&demo).output().unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("ralph(030-summary): Summary"), "{log}");
    assert!(log.contains("learnings from iteration 2"), "{log}");
    // A second demo into the same folder refuses rather than clobbering it.
    let mut again = std::process::Command::new(RALPH);
    again.args(["demo", "--dir"]).arg(&demo);
    hermetic(&mut again, dir.path());
    assert_eq!(again.output().unwrap().status.code(), Some(2));
}
