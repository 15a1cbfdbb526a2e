//! ralph commits as `git commit` does for the user: hooks run and can refuse; agent commits
//! are folded into ralph's; `[git] branch` is used; `.ralph/` is never committed.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;

fn hook(repo: &TestRepo, name: &str, body: &str) {
    let path = repo.path(&format!(".git/hooks/{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_users_hooks_run_and_a_refusing_hook_turns_the_iteration_red() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ write = { path = "code.txt", content = "FORBIDDEN\n" } }, { promise = true }]
[[step]]
iteration = 2
actions = [{ expect_prompt = "no FORBIDDEN please" }, { write = { path = "code.txt", content = "fine\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let msg_log = repo.outside.join("commit-msg.log");
    hook(
        &repo,
        "pre-commit",
        "if git diff --cached | grep -q FORBIDDEN; then echo 'no FORBIDDEN please' >&2; exit 1; fi",
    );
    hook(&repo, "commit-msg", &format!("cat \"$1\" >> '{}'", msg_log.display()));
    repo.ralph(&["run"]).expect(0);
    let records = repo.records();
    assert_eq!(records[0]["outcome"], "checks_failed");
    assert!(records[0]["failure"].as_str().unwrap().contains("no FORBIDDEN please"));
    assert_eq!(records[1]["outcome"], "done");
    assert_eq!(repo.read("code.txt"), "fine\n");
    // The commit-msg hook saw ralph's message, trailers included.
    let seen = std::fs::read_to_string(&msg_log).unwrap();
    assert!(seen.contains("Ralph-Task: 010-a"), "{seen}");
    assert_eq!(repo.dirt(), "");
}

#[test]
fn commits_the_agent_made_itself_are_folded_into_ralphs_commit() {
    let scenario = r#"
[[step]]
actions = [
  { write = { path = "a.txt", content = "a\n" } },
  { run = "git add a.txt && git commit -q -m 'agent commit'" },
  { write = { path = "b.txt", content = "b\n" } },
  { promise = true },
]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let head = repo.head();
    repo.ralph(&["run"]).expect(0);
    let subjects = repo.git(&["log", "--format=%s", &format!("{head}..HEAD")]);
    assert_eq!(subjects, "ralph(010-a): A\n");
    let files = repo.git(&["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(files, "a.txt\nb.txt\nspecs/010-a.md\n");
}

#[test]
fn a_red_iteration_also_undoes_the_agents_own_commits() {
    let scenario = r#"
[[step]]
actions = [
  { write = { path = "a.txt", content = "a\n" } },
  { run = "git add a.txt && git commit -q -m 'agent commit'" },
  { exit = 2 },
]
"#;
    let repo =
        TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[("010-a.md", "# A\n")]);
    let head = repo.head();
    repo.ralph(&["run"]).expect(4);
    assert!(!repo.exists("a.txt"));
    let subjects = repo.git(&["log", "--format=%s", &format!("{head}..HEAD")]);
    assert_eq!(subjects, "ralph(010-a): blocked (1 failed attempts)\n");
    assert!(repo.iter_file(1, "rejected.patch").contains("+a"));
}

#[test]
fn the_configured_branch_is_created_and_other_branches_are_left_alone() {
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"x.txt\", content = \"x\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[git]\nbranch = \"ralph/work\"\n",
        &[("010-a.md", "# A\n")],
    );
    let main = repo.head();
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.git(&["symbolic-ref", "--short", "HEAD"]).trim(), "ralph/work");
    assert_eq!(repo.git(&["rev-parse", "main"]).trim(), main);
    assert_eq!(repo.git(&["log", "-1", "--format=%s", "ralph/work"]).trim(), "ralph(010-a): A");
}

#[test]
fn ralph_dir_is_never_committed_even_if_the_user_unignores_it() {
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"x.txt\", content = \"x\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.write(".gitignore", "!.ralph/\n");
    repo.commit_all("unignore");
    repo.ralph(&["run"]).expect(0);
    assert!(!repo.git(&["ls-files"]).contains(".ralph"));
    assert!(repo.exists(".ralph/runs"));
}

#[test]
fn a_user_gitignore_that_lists_ralph_dir_works() {
    // Many users add `.ralph/` to their own .gitignore; git then warns about the exclude
    // pathspec ralph passes, which must not fail the iteration.
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"x.txt\", content = \"x\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.write(".gitignore", ".ralph/\n");
    repo.commit_all("ignore .ralph");
    repo.write("notes.txt", "uncommitted\n");
    repo.ralph(&["run", "--allow-dirty"]).expect(0);
    assert_eq!(repo.records()[0]["outcome"], "done");
    assert!(repo.git(&["ls-files"]).contains("x.txt"));
    assert!(!repo.git(&["ls-files"]).contains(".ralph"));
}

#[test]
fn signing_and_a_custom_hooks_path_are_honoured() {
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"x.txt\", content = \"x\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    // A stand-in for gpg: git hands it the payload and expects a signature and a status line.
    let gpg = repo.outside.join("fake-gpg");
    let signed_log = repo.outside.join("signed.log");
    std::fs::write(
        &gpg,
        format!(
            "#!/bin/sh\ncat > /dev/null\necho signed >> '{}'\necho '[GNUPG:] SIG_CREATED D 1 8 00 0 0 0' >&2\nprintf -- '-----BEGIN PGP SIGNATURE-----\\n\\nZmFrZQ==\\n-----END PGP SIGNATURE-----\\n'\n",
            signed_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&gpg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hooks = repo.outside.join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let hook_log = repo.outside.join("hook.log");
    std::fs::write(hooks.join("pre-commit"), format!("#!/bin/sh\necho ran >> '{}'\n", hook_log.display()))
        .unwrap();
    std::fs::set_permissions(hooks.join("pre-commit"), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.git(&["config", "commit.gpgsign", "true"]);
    repo.git(&["config", "user.signingkey", "TESTKEY"]);
    repo.git(&["config", "gpg.program", &gpg.to_string_lossy()]);
    repo.git(&["config", "core.hooksPath", &hooks.to_string_lossy()]);

    repo.ralph(&["run"]).expect(0);
    let raw = repo.git(&["cat-file", "commit", "HEAD"]);
    assert!(raw.contains("gpgsig -----BEGIN PGP SIGNATURE-----"), "{raw}");
    assert!(std::fs::read_to_string(&hook_log).unwrap().contains("ran"));
}

#[test]
fn an_agent_that_switches_branches_is_rejected_and_the_branch_put_back() {
    let scenario = r#"
[[step]]
actions = [
  { run = "git checkout -q -b agent-branch" },
  { write = { path = "x.txt", content = "x\n" } },
  { promise = true },
]
"#;
    let repo =
        TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(4);
    assert_eq!(repo.git(&["symbolic-ref", "--short", "HEAD"]).trim(), "main");
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "agent_failed");
    assert!(r["failure"].as_str().unwrap().contains("switched from branch `main` to `agent-branch`"), "{r}");
    assert!(!repo.exists("x.txt"));
    assert_eq!(repo.dirt(), "");
}

#[test]
fn an_agent_that_breaks_the_frame_is_rejected_and_everything_put_back() {
    let scenario = r##"
[[step]]
iteration = 1
actions = [
  { write = { path = "work.txt", content = "w\n" } },
  { append = { path = "ralph.toml", content = "\n[budget]\nmax_iterations = 1000\n" } },
  { write = { path = ".git/hooks/pre-commit", content = "#!/bin/sh\nexit 0\n" } },
  { run = "git branch -D keep-me && git config user.name Agent && rm .ralph/runs/*/run.json .ralph/.gitignore" },
  { promise = true },
]
[[step]]
iteration = 2
actions = [{ expect_prompt = "must not touch" }, { write = { path = "work.txt", content = "w\n" } }, { promise = true }]
"##;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.git(&["branch", "keep-me"]);
    let keep = repo.git(&["rev-parse", "keep-me"]);
    let toml = repo.read("ralph.toml");
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "agent_failed");
    let failure = r[0]["failure"].as_str().unwrap();
    for name in [
        "ralph.toml",
        ".ralph/.gitignore",
        "/run.json",
        ".git/hooks/pre-commit",
        "refs/heads/keep-me",
        ".git/config",
    ] {
        assert!(failure.contains(name), "{name} not named in: {failure}");
    }
    assert_eq!(repo.read("ralph.toml"), toml);
    assert_eq!(repo.git(&["rev-parse", "keep-me"]), keep);
    assert!(!repo.exists(".git/hooks/pre-commit"));
    assert!(!repo.git(&["config", "--list", "--local"]).contains("user.name=Agent"));
    assert_eq!(r[1]["outcome"], "done");
    assert_eq!(repo.read(".ralph/.gitignore"), "*\n");
}

/// The frame keeps what it read from one iteration to the next while a watch on the files'
/// folders reports no change: a break after clean iterations, once everything is kept, is
/// caught as the first one is, a rewrite in place that keeps the size included.
#[test]
fn a_frame_broken_after_clean_iterations_is_still_caught() {
    let scenario = r##"
[[step]]
task = "010-a"
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
iteration = 1
actions = [
  { write = { path = "b.txt", content = "b\n" } },
  { run = "printf '#' | dd of=ralph.toml bs=1 count=1 conv=notrunc 2>/dev/null && git tag -f v1 HEAD && printf '#!/bin/sh\n' > .git/hooks/post-commit" },
  { promise = true },
]
[[step]]
task = "020-b"
iteration = 2
actions = [{ expect_prompt = "must not touch" }, { write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"##;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")]);
    repo.git(&["tag", "v1"]);
    let v1 = repo.git(&["rev-parse", "v1"]);
    let toml = repo.read("ralph.toml");
    assert_ne!(toml.as_bytes()[0], b'#', "the rewrite must change the file");
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "done", "{}", r[0]);
    assert_eq!(r[1]["outcome"], "agent_failed");
    let failure = r[1]["failure"].as_str().unwrap();
    for name in ["ralph.toml", "refs/tags/v1", ".git/hooks/post-commit"] {
        assert!(failure.contains(name), "{name} not named in: {failure}");
    }
    assert_eq!(r[2]["outcome"], "done");
    assert_eq!(repo.read("ralph.toml"), toml);
    assert_eq!(repo.git(&["rev-parse", "v1"]), v1);
    assert!(!repo.exists(".git/hooks/post-commit"));
}

/// ralph skips the `git status` before an agent when nothing changed since its own commit. A
/// write right after that commit (a post-commit hook here, a user's editor at night) must still
/// be seen, snapshotted, and survive the revert of the next iteration.
#[test]
fn an_edit_right_after_ralphs_commit_survives_the_next_revert() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "work.txt", content = "w\n" } }, { promise = true }]
[[step]]
task = "020-b"
iteration = 1
actions = [{ write = { path = "bad.txt", content = "b\n" } }, { promise = true }]
[[step]]
task = "020-b"
iteration = 2
actions = [{ write = { path = "good.txt", content = "g\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["test ! -f bad.txt"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    repo.write("README.md", "# test project\n");
    // Once, after ralph's first commit: a new file and an edit of a tracked one.
    let once = repo.outside.join("hook-ran");
    hook(
        &repo,
        "post-commit",
        &format!(
            "[ -f '{0}' ] && exit 0; touch '{0}'; echo 'my note' > notes.txt; echo 'edited by hand' >> README.md",
            once.display()
        ),
    );
    repo.ralph(&["run"]).expect(0);
    let outcomes: Vec<String> =
        repo.records().iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["done", "checks_failed", "done"]);
    assert_eq!(repo.read("notes.txt"), "my note\n");
    assert_eq!(repo.read("README.md"), "# test project\nedited by hand\n");
    assert!(!repo.exists("bad.txt"));
}

/// The checks may change files (a formatter): what they leave is committed with the work, in
/// every iteration, including after ralph's watch knew the tree was clean.
#[test]
fn what_the_checks_change_is_committed_with_the_work() {
    let scenario = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["mkdir -p gen && ls *.txt > gen/listing && echo formatted >> README.md"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    let files = |i: usize| -> Vec<&str> {
        r[i]["files_changed"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect()
    };
    assert_eq!(files(1), ["README.md", "b.txt", "gen/listing", "specs/020-b.md"]);
    assert_eq!(repo.git(&["show", "HEAD:gen/listing"]), "a.txt\nb.txt\n");
    assert_eq!(repo.dirt(), "");
}

/// Two tasks: the first agent breaks the frame one way, its retry and the second task work.
fn frame_break(action: &str, told: &str) -> TestRepo {
    let scenario = after_a_done_task(
        &format!(r#"{{ write = {{ path = "b.txt", content = "b\n" }} }}, {action}, {{ promise = true }}"#),
        &format!(
            r#"task = "020-b"
iteration = 2
actions = [{{ expect_prompt = {} }}, {{ write = {{ path = "b.txt", content = "b\n" }} }}, {{ promise = true }}]"#,
            toml_str(told)
        ),
    );
    TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")])
}

#[test]
fn ralphs_own_folder_and_replacement_refs_are_part_of_the_frame() {
    let store = FORGED_STORE;
    let cases = [
        (
            format!("{{ write = {{ path = \".ralph/learnings.json\", content = {} }} }}", toml_str(store)),
            ".ralph/learnings.json",
        ),
        (r#"{ run = "git replace HEAD HEAD~1" }"#.to_string(), "refs/replace/"),
    ];
    for (action, named) in cases {
        let repo = frame_break(&action, "must not touch");
        repo.ralph(&["run"]).expect(0);
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["done", "agent_failed", "done"], "{action}");
        let failure = r[1]["failure"].as_str().unwrap();
        assert!(failure.contains("must not touch") && failure.contains(named), "{action}: {failure}");
        assert!(!repo.read("AGENTS.md").contains("no-verify"), "{action}");
        assert!(!repo.read(".ralph/learnings.json").contains("no-verify"), "{action}");
        assert_eq!(repo.git(&["for-each-ref", "refs/replace"]), "", "{action}");
        assert_eq!(repo.dirt(), "", "{action}");
    }
}

#[test]
fn an_agent_that_commits_ralphs_folder_is_rejected_and_the_folder_stays_out_of_git() {
    for action in
        [r#"{ run = "git add -f .ralph && git commit -qm sneaky" }"#, r#"{ run = "git add -f .ralph" }"#]
    {
        let repo = frame_break(action, ".ralph/ is never committed");
        repo.ralph(&["run"]).expect(0);
        let r = repo.records();
        let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["done", "agent_failed", "done"], "{action}");
        assert!(
            r[1]["failure"].as_str().unwrap().contains(".ralph/ is never committed"),
            "{action}: {}",
            r[1]
        );
        assert_eq!(
            repo.git(&["log", "--all", "--format=", "--name-only", "--", ".ralph"]).trim(),
            "",
            "{action}"
        );
        assert_eq!(repo.git(&["ls-files", "--", ".ralph"]), "", "{action}");
        // ralph's files are still there: the run's state, its records.
        assert!(repo.exists(".ralph/state.json") && repo.latest_run_dir().join("iterations.jsonl").exists());
        assert_eq!(repo.dirt(), "", "{action}");
        assert!(!repo.git(&["log", "--format=%s"]).contains("sneaky"), "{action}");
    }
}

#[test]
fn an_agent_that_removes_ralphs_folder_is_rejected_and_the_run_goes_on() {
    let repo = frame_break(r#"{ run = "rm -rf .ralph" }"#, "must not touch");
    let run = repo.ralph(&["run"]);
    let r = repo.records();
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["done", "agent_failed", "done"], "{}", run.stderr());
    run.expect(0);
    assert!(r[1]["failure"].as_str().unwrap().contains("must not touch"), "{}", r[1]);
    assert_eq!(repo.dirt(), "");
    assert!(repo.exists("a.txt") && repo.exists("b.txt"));
    // The next run starts on a clean tree.
    repo.ralph(&["run"]).expect(0);
}
