//! A hostile agent: links planted in ralph's folder or committed as inputs never take ralph
//! outside the repository (no write through them, no endless read); each is a clear error
//! naming the path.

use crate::common::*;
use std::path::{Path, PathBuf};

/// Files outside the repository, each with its own content, and an empty folder: what a
/// planted link points at. Returns their paths and contents.
fn targets(repo: &TestRepo, names: &[&str]) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    let elsewhere = repo.outside.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let files = names
        .iter()
        .map(|n| {
            let p = repo.outside.join(n);
            let bytes = format!("precious {n}\n").into_bytes();
            std::fs::write(&p, &bytes).unwrap();
            (p, bytes)
        })
        .collect();
    (elsewhere, files)
}

fn untouched(elsewhere: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (p, bytes) in files {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    let inside: Vec<_> = std::fs::read_dir(elsewhere).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(inside.is_empty(), "ralph wrote into {}: {inside:?}", elsewhere.display());
}

/// Two tasks, `010-a` and `020-b`, committed with a `true` check; the scenario is set later
/// (it names files outside the repository, made once the repository is).
fn two_tasks() -> TestRepo {
    TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")])
}

fn scenario(command: &str) -> String {
    format!(
        "[[step]]\niteration = 1\nactions = [\n  {{ run = {} }},\n  {{ write = {{ path = \"src/a.txt\", content = \"a\\n\" }} }},\n  {{ promise = true }},\n]\n",
        toml_str(command)
    )
}

#[test]
fn links_planted_in_ralphs_folder_lead_nowhere_outside() {
    let repo = two_tasks();
    let (elsewhere, files) = targets(&repo, &["prev.txt", "spare.txt", "lock.txt", "records.txt", "run.txt"]);
    let o = repo.outside.display();
    let e = elsewhere.display();
    // The agent's shell: links at ralph's scratch files, its lock, its records, its run's
    // metadata, and the next iteration's folder.
    let plant = format!(
        "cd .ralph && ln -sf {o}/prev.txt state.json.prev && ln -sf {o}/spare.txt state.json.spare \
         && ln -sf {o}/lock.txt lock \
         && cd \"$RALPH_ITER_DIR/..\" && ln -sf {o}/records.txt iterations.jsonl \
         && ln -sf {o}/run.txt run.json && ln -s {e} iter-0002"
    );
    repo.set_scenario(&scenario(&plant));

    let run = repo.ralph_within(120, &["run", "--max-iterations", "3"]);
    untouched(&elsewhere, &files);
    assert_ne!(run.code(), 0, "{}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("iter-0002 is a symbolic link"), "{err}");
    // ralph's own files are its own again: the frame put them back.
    assert!(repo.path(".ralph/state.json").is_file());
    let run_dir = repo.latest_run_dir();
    for name in ["run.json", "iterations.jsonl"] {
        let m = std::fs::symlink_metadata(run_dir.join(name)).unwrap();
        assert!(m.is_file(), "{name} is not a regular file");
    }
    assert_eq!(repo.records().len(), 1, "iteration 1 is recorded");

    // The lock is ralph's file again (the frame made it afresh): the next run takes it.
    assert!(std::fs::symlink_metadata(repo.path(".ralph/lock")).unwrap().is_file());
    repo.set_scenario(
        "[[step]]\nactions = [{ write = { path = \"src/b.txt\", content = \"b\\n\" } }, { promise = true }]\n",
    );
    let run = repo.ralph_within(120, &["run"]);
    assert!(run.stderr().contains("resuming run"), "{}", run.stderr());
    assert!(!run.stderr().contains("lock is a symbolic link"), "{}", run.stderr());
    untouched(&elsewhere, &files);
}

#[test]
fn a_link_in_the_iterations_own_folder_is_an_error_naming_it() {
    let repo = TestRepo::new();
    let (elsewhere, files) = targets(&repo, &["checks.txt"]);
    let plant = format!(
        "ln -s {}/checks.txt \"$RALPH_ITER_DIR/checks.log\" && ln -s {} \"$RALPH_ITER_DIR/frame\"",
        repo.outside.display(),
        elsewhere.display()
    );
    repo.set_scenario(&scenario(&plant));
    repo.write_config(&["true"], "");
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    let head = repo.head();

    let run = repo.ralph_within(120, &["run", "--max-iterations", "1"]);
    untouched(&elsewhere, &files);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    assert!(run.stderr().contains("iter-0001/checks.log is a symbolic link"), "{}", run.stderr());
    assert_eq!(repo.head(), head, "nothing unchecked is committed");
}

#[test]
fn a_linked_ralph_folder_is_refused() {
    let repo = TestRepo::with_loop(&scenario("true"), &["true"], "", &[("010-a.md", "# A\n")]);
    let (elsewhere, files) = targets(&repo, &[]);
    std::os::unix::fs::symlink(&elsewhere, repo.path(".ralph")).unwrap();
    for args in [&["run"][..], &["plan", "more"], &["init", "--force"]] {
        let run = repo.ralph_within(60, args).expect(2);
        assert!(run.stderr().contains(".ralph is a symbolic link"), "{args:?}: {}", run.stderr());
    }
    untouched(&elsewhere, &files);
}

/// A spec committed as a link to `/dev/zero`, or made a FIFO: a clear error naming it, at once,
/// not a read without end.
#[test]
fn a_spec_that_is_not_a_regular_file_is_named_not_read() {
    let repo = TestRepo::with_loop(&scenario("true"), &["true"], "", &[("010-a.md", "# A\n")]);
    std::os::unix::fs::symlink("/dev/zero", repo.path("specs/020-zero.md")).unwrap();
    repo.commit_all("a hostile spec");
    let run = repo.ralph_within(60, &["run"]).expect(2);
    assert!(run.stderr().contains("specs/020-zero.md is a symbolic link"), "{}", run.stderr());

    repo.git(&["rm", "-q", "specs/020-zero.md"]);
    repo.commit_all("gone");
    let fifo =
        std::ffi::CString::new(repo.path("specs/030-fifo.md").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let run = repo.ralph_within(60, &["run"]).expect(2);
    assert!(run.stderr().contains("specs/030-fifo.md is not a regular file"), "{}", run.stderr());
    let run = repo.ralph_within(60, &["status"]);
    assert!(run.stderr().contains("specs/030-fifo.md"), "{}", run.stderr());
    assert!(!repo.exists(".ralph/runs"), "a run was started");
}

/// Everything at once, as issue 14's hostile agent did it: links planted in ralph's folder, the
/// branch rewound, the learnings store edited, `.ralph` committed, a daemon left behind. The
/// iteration is rejected, the run goes on, nothing outside the repository changes and no
/// earlier work is lost.
#[test]
fn a_hostile_agent_changes_nothing_outside_and_loses_no_work() {
    let repo = two_tasks();
    let (elsewhere, files) = targets(&repo, &["prev.txt", "spare.txt"]);
    let o = repo.outside.display();
    let store = FORGED_STORE;
    let hostile = [
        format!("ln -sf {o}/prev.txt .ralph/state.json.prev && ln -sf {o}/spare.txt .ralph/state.json.spare"),
        "git reset -q --hard HEAD~1".to_string(),
        format!("printf '%s' {} > .ralph/learnings.json", shell_quote(store)),
        "git add -f .ralph && git commit -qm sneaky".to_string(),
        format!("setsid sh -c 'echo $$ > {o}/daemon.pid; sleep 1; echo late > late.txt' >/dev/null 2>&1 &"),
        format!("while [ ! -s {o}/daemon.pid ]; do sleep 0.01; done"),
    ];
    let actions: Vec<String> = hostile.iter().map(|c| format!("{{ run = {} }}", toml_str(c))).collect();
    let scenario = after_a_done_task(
        &format!(
            r#"{}, {{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}"#,
            actions.join(", ")
        ),
        r#"task = "020-b"
iteration = 2
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]"#,
    );
    repo.set_scenario(&scenario);

    let run = repo.ralph_within(120, &["run"]);
    let r = repo.records();
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["done", "agent_failed", "done"], "{}", run.stderr());
    run.expect(0);
    let failure = r[1]["failure"].as_str().unwrap();
    for said in ["rewrote the branch's history", ".ralph/learnings.json", ".ralph/ is never committed"] {
        assert!(failure.contains(said), "{said} not in: {failure}");
    }
    assert!(r[1]["escaped_ended"].as_u64().unwrap_or(0) >= 1, "{}", r[1]);
    // Nothing outside changed; the daemon's write never came.
    untouched(&elsewhere, &files);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!repo.exists("late.txt"));
    // No work lost, nothing of ralph's in git, nothing bogus learned.
    assert!(repo.exists("a.txt") && repo.exists("b.txt"));
    assert_eq!((repo.spec_status("010-a"), repo.spec_status("020-b")), ("done".into(), "done".into()));
    assert_eq!(repo.git(&["log", "--all", "--format=", "--name-only", "--", ".ralph"]).trim(), "");
    assert!(!repo.git(&["log", "--format=%s"]).contains("sneaky"));
    assert!(!repo.read("AGENTS.md").contains("no-verify"));
    assert!(!repo.read(".ralph/learnings.json").contains("no-verify"));
    assert_eq!(repo.dirt(), "");
}

/// Links planted at ralph's own files, `learnings.json`, `state.json` and the run's lock: the
/// frame removes each link (never touching its target), puts ralph's file back, rejects the
/// iteration naming them, and the run finishes the backlog; the next run starts normally.
#[test]
fn links_planted_at_ralphs_own_files_are_removed_and_the_run_goes_on() {
    let repo = two_tasks();
    let (elsewhere, files) = targets(&repo, &["learnings.txt", "state.txt", "lock.txt"]);
    let o = repo.outside.display();
    let plant = format!(
        "ln -sf {o}/learnings.txt .ralph/learnings.json && ln -sf {o}/state.txt .ralph/state.json \
         && ln -sf {o}/lock.txt .ralph/lock"
    );
    let scenario = format!(
        r#"
[[step]]
task = "010-a"
actions = [{{ write = {{ path = "a.txt", content = "a\n" }} }}, {{ learning = "a taught something" }}, {{ promise = true }}]
[[step]]
task = "020-b"
iteration = 1
actions = [{{ run = {} }}, {{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
[[step]]
task = "020-b"
actions = [{{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
[[step]]
task = "030-c"
iteration = 1
actions = [{{ run = {} }}, {{ write = {{ path = "c.txt", content = "c\n" }} }}, {{ promise = true }}]
[[step]]
task = "030-c"
actions = [{{ write = {{ path = "c.txt", content = "c\n" }} }}, {{ promise = true }}]
"#,
        toml_str(&plant),
        toml_str(
            "rm .ralph/learnings.json .ralph/state.json && mkfifo .ralph/learnings.json && mkdir -p .ralph/state.json/in"
        )
    );
    repo.set_scenario(&scenario);

    let run = repo.ralph_within(120, &["run"]);
    untouched(&elsewhere, &files);
    let r = repo.records();
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["done", "agent_failed", "done"], "{}", run.stderr());
    run.expect(0);
    let failure = r[1]["failure"].as_str().unwrap();
    for name in [".ralph/learnings.json", ".ralph/state.json", ".ralph/lock"] {
        assert!(failure.contains(name), "{name} not in: {failure}");
        let m = std::fs::symlink_metadata(repo.path(name)).unwrap();
        assert!(m.is_file(), "{name} is not a regular file again");
    }
    assert!(repo.read(".ralph/learnings.json").contains("a taught something"));
    assert_eq!((repo.spec_status("010-a"), repo.spec_status("020-b")), ("done".into(), "done".into()));
    assert_eq!(repo.dirt(), "");

    // The next run takes the lock as usual. A FIFO and a folder in place of ralph's files are
    // put right the same way.
    repo.write("specs/030-c.md", "# C\n");
    repo.commit_all("one more");
    let run = repo.ralph_within(120, &["run"]);
    let r = repo.records();
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["agent_failed", "done"], "{}", run.stderr());
    run.expect(0);
    let failure = r[0]["failure"].as_str().unwrap();
    for name in [".ralph/learnings.json", ".ralph/state.json"] {
        assert!(failure.contains(name), "{name} not in: {failure}");
        assert!(std::fs::symlink_metadata(repo.path(name)).unwrap().is_file(), "{name}");
    }
    assert_eq!(repo.spec_status("030-c"), "done");
    untouched(&elsewhere, &files);
}

/// At the start of a run, before any agent, a link at the lock or the state is an error naming
/// it, with the way out.
#[test]
fn a_link_at_the_lock_or_the_state_before_a_run_is_named_with_a_hint() {
    for name in ["lock", "state.json"] {
        let repo = TestRepo::with_loop(&scenario("true"), &["true"], "", &[("010-a.md", "# A\n")]);
        let (elsewhere, files) = targets(&repo, &["target.txt"]);
        std::fs::create_dir_all(repo.path(".ralph")).unwrap();
        std::os::unix::fs::symlink(repo.outside.join("target.txt"), repo.path(&format!(".ralph/{name}")))
            .unwrap();
        let run = repo.ralph_within(60, &["run"]).expect(2);
        let err = run.stderr();
        assert!(err.contains(&format!(".ralph/{name} is a symbolic link")), "{err}");
        assert!(err.contains(&format!("rm .ralph/{name}")), "{err}");
        untouched(&elsewhere, &files);
    }
}

/// Tasks taken out of the backlog by the agent (a spec deleted, another renamed away) would
/// leave the backlog "done" without them ever running: rejected like a status change.
#[test]
fn another_tasks_spec_removed_or_renamed_is_rejected() {
    let scenario = r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{ run = "rm specs/020-b.md && git mv specs/030-c.md notes-c.md" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n")],
    );
    let run = repo.ralph_within(120, &["run"]);
    let r = repo.records();
    let tasks: Vec<&str> = r.iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["010-a", "010-a", "020-b", "030-c"], "{}", run.stderr());
    run.expect(0);
    assert_eq!(r[0]["outcome"], "checks_failed");
    let failure = r[0]["failure"].as_str().unwrap();
    assert!(failure.contains("it removed specs/020-b.md"), "{failure}");
    assert!(failure.contains("it removed specs/030-c.md"), "{failure}");
    assert!(repo.exists("specs/020-b.md") && !repo.exists("notes-c.md"));
    assert_eq!(repo.spec_status("030-c"), "done");
}

/// The specs folder swapped for a link to a copy outside: ralph would write the task's status
/// through it, outside the repository, and commit the backlog away. Also when the link is
/// hidden from git by an ignore rule.
#[test]
fn the_backlogs_folder_replaced_by_a_link_is_rejected_and_nothing_written_outside() {
    for hide in ["", " && echo specs >> .gitignore"] {
        let repo = TestRepo::new();
        let (elsewhere, _) = targets(&repo, &[]);
        let swap =
            format!("cp specs/* {e}/ && rm -rf specs && ln -s {e} specs{hide}", e = elsewhere.display());
        repo.set_scenario(&scenario(&swap));
        repo.write_config(&["true"], "[budget]\nmax_attempts = 1\n");
        repo.write("specs/010-a.md", "# A\n");
        repo.commit_all("set up ralph");
        let head = repo.head();

        repo.ralph_within(120, &["run", "--max-iterations", "1"]);
        let r = repo.records();
        assert_eq!(r[0]["outcome"], "checks_failed", "{hide}: {}", r[0]);
        let failure = r[0]["failure"].as_str().unwrap();
        assert!(failure.contains("replaced the backlog's folder specs"), "{failure}");
        assert_eq!(std::fs::read_to_string(elsewhere.join("010-a.md")).unwrap(), "# A\n", "{hide}");
        assert!(repo.path("specs").is_dir() && !repo.path("specs").is_symlink(), "{hide}");
        // ralph blocked the task in the repository's spec, and committed nothing else.
        assert_eq!(repo.spec_status("010-a"), "blocked", "{hide}");
        assert_eq!(repo.git(&["diff", "--name-only", &head, "HEAD"]).trim(), "specs/010-a.md");
    }
}

/// The checks run code the agent wrote (here a test script): what it does while they run (a
/// rewound branch, another task's spec deleted, a hook installed, the learnings store edited)
/// is held to the agent's frame and gates, not committed unjudged.
#[test]
fn what_the_checks_do_is_judged_like_the_agents_work() {
    let store = FORGED_STORE;
    let evil = format!(
        "git reset -q --hard HEAD~1\nrm -f specs/030-c.md\nprintf '#!/bin/sh\\nexit 0\\n' > .git/hooks/pre-commit\nchmod +x .git/hooks/pre-commit\nprintf '%s' {} > .ralph/learnings.json\n",
        shell_quote(store)
    );
    let scenario = after_a_done_task(
        &format!(
            r#"{{ write = {{ path = "tests/evil.sh", content = {} }} }}, {{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}"#,
            toml_str(&evil)
        ),
        r#"actions = [{ write = { path = "x.txt", content = "x\n" } }, { promise = true }]"#,
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["for t in tests/*.sh; do [ -f \"$t\" ] || continue; sh \"$t\" || exit 1; done"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n")],
    );
    let run = repo.ralph_within(120, &["run"]);
    let r = repo.records();
    let outcomes: Vec<(&str, &str)> =
        r.iter().map(|r| (r["task"].as_str().unwrap(), r["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        [("010-a", "done"), ("020-b", "checks_failed"), ("020-b", "done"), ("030-c", "done")],
        "{}",
        run.stderr()
    );
    run.expect(0);
    let failure = r[1]["failure"].as_str().unwrap();
    for said in [
        "after the checks ran",
        "rewrote the branch's history",
        ".git/hooks/pre-commit",
        ".ralph/learnings.json",
    ] {
        assert!(failure.contains(said), "{said} not in: {failure}");
    }
    assert!(repo.exists("a.txt") && !repo.exists("tests/evil.sh"));
    assert!(!repo.path(".git/hooks/pre-commit").exists());
    assert!(!repo.read(".ralph/learnings.json").contains("no-verify"));
    assert!(!repo.read("AGENTS.md").contains("no-verify"));
    let log = repo.git(&["log", "--format=%s"]);
    assert_eq!(log.lines().filter(|l| l.starts_with("ralph(")).count(), 3, "{log}");
    assert_eq!(repo.dirt(), "");
}

/// ralph's folder replaced while the agent works (by a file, by a link to a folder elsewhere):
/// undone like its removal, the iteration rejected, the run goes on with a clean tree.
#[test]
fn ralphs_folder_replaced_by_a_file_or_a_link_is_made_again() {
    for replace in ["rm -rf .ralph && echo x > .ralph", "mv .ralph ../moved && ln -s ../moved .ralph"] {
        let scenario = format!(
            r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{{ run = {} }}, {{ write = {{ path = "a.txt", content = "a\n" }} }}, {{ promise = true }}]
[[step]]
actions = [{{ write = {{ path = "a.txt", content = "a\n" }} }}, {{ promise = true }}]
"#,
            toml_str(replace)
        );
        let repo =
            TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
        let run = repo.ralph_within(120, &["run"]);
        assert!(std::fs::symlink_metadata(repo.path(".ralph")).unwrap().is_dir(), "{replace}");
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["agent_failed", "done", "done"], "{replace}: {}", run.stderr());
        run.expect(0);
        assert!(r[0]["failure"].as_str().unwrap().contains("replaced ralph's folder"), "{}", r[0]);
        assert_eq!(repo.dirt(), "", "{replace}");
        assert_eq!((repo.spec_status("010-a"), repo.spec_status("020-b")), ("done".into(), "done".into()));
    }
}

/// Files hidden from `git add` (`git update-index --assume-unchanged` or `--skip-worktree`)
/// would have ralph commit something other than what its checks ran on: garbage staged under a
/// good file, or the agent's real change left out. Rejected, the flags cleared, the tree put
/// back; a flag the user set before the run is theirs and stays.
#[test]
fn files_hidden_from_git_by_the_agent_are_rejected_and_shown_again() {
    for hide in ["--assume-unchanged", "--skip-worktree"] {
        let scenario = format!(
            r#"
[[step]]
task = "010-a"
actions = [{{ write = {{ path = "a.txt", content = "good\n" }} }}, {{ promise = true }}]
[[step]]
task = "020-b"
iteration = 1
actions = [{{ run = "echo GARBAGE > a.txt && git add a.txt && echo good > a.txt && git update-index {hide} a.txt && echo changed > local.txt && git update-index {hide} local.txt" }}, {{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
[[step]]
actions = [{{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]
"#
        );
        let repo = TestRepo::with_loop(
            &scenario,
            &["grep -q good a.txt || test ! -e a.txt"],
            "",
            &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
        );
        // The user's own hidden file, set before the run: left alone.
        repo.write("local.txt", "mine\n");
        repo.write("user.txt", "u\n");
        repo.commit_all("local files");
        repo.git(&["update-index", "--assume-unchanged", "user.txt"]);

        let run = repo.ralph_within(120, &["run"]);
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["done", "agent_failed", "done"], "{hide}: {}", run.stderr());
        run.expect(0);
        let failure = r[1]["failure"].as_str().unwrap();
        assert!(failure.contains("a.txt") && failure.contains("local.txt"), "{hide}: {failure}");
        for rev in ["HEAD", "HEAD~1"] {
            assert_eq!(repo.git(&["show", &format!("{rev}:a.txt")]), "good\n", "{hide} {rev}");
            assert_eq!(repo.git(&["show", &format!("{rev}:local.txt")]), "mine\n", "{hide} {rev}");
        }
        assert_eq!(repo.read("local.txt"), "mine\n", "{hide}");
        let flagged = repo.git(&["ls-files", "-v"]);
        assert!(flagged.lines().any(|l| l == "h user.txt"), "{flagged}");
        assert!(
            flagged.lines().any(|l| l == "H a.txt") && flagged.lines().any(|l| l == "H local.txt"),
            "{flagged}"
        );
    }
}

/// An agent that writes a secret from its environment into AGENTS.md: the file ralph commits
/// (and every later agent reads) has it masked. Its other files are the user's code.
#[test]
fn a_secret_the_agent_writes_into_agents_md_is_masked() {
    let scenario = scenario("echo \"deploy with $MY_API_TOKEN\" >> AGENTS.md");
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let out = repo.cmd(&["run"]).env("MY_API_TOKEN", "supersecret-123456").output().unwrap();
    Run(out).expect(0);
    let committed = repo.git(&["show", "HEAD:AGENTS.md"]);
    assert!(committed.contains("deploy with [MASKED]"), "{committed}");
    assert!(!repo.git(&["log", "-p", "--", "AGENTS.md"]).contains("supersecret"));
    assert!(!repo.read("AGENTS.md").contains("supersecret"));
}

/// AGENTS.md made unreadable for ralph (larger than it reads, a link to a device): the
/// iteration is rejected, where ralph stopped at its commit with the work staged, at every run.
#[test]
fn an_agents_md_ralph_cannot_read_is_rejected_not_a_crash() {
    for spoil in ["head -c 1100000 /dev/zero | tr '\\0' x > AGENTS.md", "ln -sf /dev/zero AGENTS.md"] {
        let repo = TestRepo::new();
        let scenario = format!(
            "[[step]]\ntask = \"010-a\"\niteration = 1\nactions = [{{ run = {} }}, {{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {{ promise = true }}]\n[[step]]\nactions = [{{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {{ promise = true }}]\n",
            toml_str(spoil)
        );
        repo.set_scenario(&scenario);
        repo.write_config(&["true"], "");
        repo.write("specs/010-a.md", "# A\n");
        repo.commit_all("set up ralph");
        let run = repo.ralph_within(120, &["run"]);
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["checks_failed", "done"], "{spoil}: {}", run.stderr());
        run.expect(0);
        assert!(r[0]["failure"].as_str().unwrap().contains("AGENTS.md cannot be read"), "{}", r[0]);
        assert!(!repo.exists("AGENTS.md") || repo.read("AGENTS.md").len() < 1000, "{spoil}");
        assert_eq!(repo.dirt(), "");
    }
}

/// A secret from the environment that the agent writes into a protected file (ralph.toml,
/// which the frame puts back and keeps a copy of) and into its work: nothing under `.ralph/`
/// holds it unmasked, neither the frame's copy, nor the rejected diff, nor the logs.
#[test]
fn a_secret_the_agent_writes_into_files_never_lands_under_ralphs_folder() {
    const SECRET: &str = "sk-live-0123456789abcdef";
    let scenario = after_a_done_task(
        r##"{ run = "echo \"# $MY_API_KEY\" >> ralph.toml && echo \"key=$MY_API_KEY\" > b.txt && echo \"said $MY_API_KEY\"" }, { promise = true }"##,
        r#"actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]"#,
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    let run = repo.cmd(&["run"]).env("MY_API_KEY", SECRET).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let r = repo.records();
    assert_eq!(r[1]["outcome"], "agent_failed", "{}", r[1]);
    assert!(repo.iter_file(2, "frame/ralph.toml").contains("# "), "the frame kept the changed ralph.toml");
    assert!(repo.iter_file(2, "rejected.patch").contains("key="));
    assert_eq!(files_holding(&repo.path(".ralph"), SECRET), Vec::<PathBuf>::new());
}
