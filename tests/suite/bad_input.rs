//! Bad input: one clear message naming the file (and line), exit 2, nothing changed.

use crate::common::*;

const OK_SCENARIO: &str = "[[step]]\nactions = [{ promise = true }]\n";

/// Runs `ralph run`, expects exit 2 and a message containing `needle`, and checks that
/// nothing in the repository changed.
fn refuses(repo: &TestRepo, needle: &str) -> String {
    let head = repo.head();
    let dirt = repo.dirt();
    let run = repo.ralph(&["run"]).expect(2);
    let err = run.stderr();
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(repo.head(), head);
    assert_eq!(repo.dirt(), dirt);
    assert!(!repo.exists(".ralph/runs"), "a run was started");
    err
}

#[test]
fn a_malformed_ralph_toml_names_file_and_line() {
    let repo = TestRepo::with_loop(OK_SCENARIO, &["true"], "", &[("010-a.md", "# A\n")]);
    let text = repo.read("ralph.toml").replace("timeout = \"60s\"", "timeout = \"sixty\"");
    repo.write("ralph.toml", &text);
    repo.commit_all("break it");
    let err = refuses(&repo, "ralph.toml:7:");
    assert!(err.contains("invalid duration"), "{err}");

    repo.write("ralph.toml", "[agent\ncommand = []\n");
    repo.commit_all("break it more");
    refuses(&repo, "ralph.toml:1:");

    repo.write("ralph.toml", "[agent]\ncommand = [\"x\"]\n[budget]\nmax_iteratons = 3\n");
    repo.commit_all("typo");
    let err = refuses(&repo, "ralph.toml:4:");
    assert!(err.contains("unknown field `max_iteratons`"), "{err}");
}

#[test]
fn a_missing_ralph_toml_hints_at_init() {
    let repo = TestRepo::new();
    let err = refuses(&repo, "ralph.toml not found");
    assert!(err.contains("hint: run `ralph init`"), "{err}");
}

#[test]
fn a_spec_with_broken_front_matter_names_file_and_line() {
    let repo = TestRepo::with_loop(
        OK_SCENARIO,
        &["true"],
        "",
        &[("010-a.md", "---\nstatus: todo\npriority: soon\n---\n# A\n")],
    );
    let err = refuses(&repo, "specs/010-a.md:3: priority `soon` is not a whole number");
    assert_eq!(err.lines().count(), 1, "{err}");

    repo.write("specs/010-a.md", "---\nstatus: todo\n# A\n");
    repo.commit_all("unclosed");
    refuses(&repo, "specs/010-a.md:1: front matter starts with `---` but has no closing");

    repo.write("specs/010-a.md", "---\ndepends_on: [nope]\n---\n");
    repo.commit_all("dangling");
    refuses(&repo, "specs/010-a.md:2: depends_on names `nope`");
}

#[test]
fn outside_a_git_repository() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["run"][..], &["init"], &["status"]] {
        let mut cmd = std::process::Command::new(RALPH);
        cmd.args(args).current_dir(dir.path());
        hermetic(&mut cmd, dir.path());
        cmd.env("GIT_CEILING_DIRECTORIES", dir.path().parent().unwrap());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a git repository"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{args:?} wrote files");
    }
}

#[test]
fn a_missing_agent_binary() {
    let repo = TestRepo::with_loop(OK_SCENARIO, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.write("ralph.toml", "[agent]\ncommand = [\"no-such-agent-binary\", \"-p\"]\n");
    repo.commit_all("bad agent");
    let err = refuses(&repo, "ralph.toml: [agent] command: `no-such-agent-binary` was not found on PATH");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn a_dirty_tree_is_refused_unless_allowed() {
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"agent.txt\", content = \"a\\n\" } }, { exit = 1 }]\n";
    let repo =
        TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[("010-a.md", "# A\n")]);
    repo.write("README.md", "my uncommitted edit\n");
    repo.write("notes.txt", "untracked notes\n");
    let err = refuses(&repo, "uncommitted changes");
    assert!(err.contains("README.md") && err.contains("--allow-dirty"), "{err}");

    // With --allow-dirty a red iteration puts the user's changes back, not the last commit.
    repo.ralph(&["run", "--allow-dirty"]).expect(4);
    assert_eq!(repo.read("README.md"), "my uncommitted edit\n");
    assert_eq!(repo.read("notes.txt"), "untracked notes\n");
    assert!(!repo.exists("agent.txt"));
}

#[test]
fn a_broken_prompt_template_names_file_and_line() {
    let repo = TestRepo::with_loop(
        OK_SCENARIO,
        &["true"],
        "[prompt]\ntemplate = \"PROMPT.md\"\n",
        &[("010-a.md", "# A\n")],
    );
    repo.write("PROMPT.md", "Task {{ task.id }}\n{% for x in %}\n");
    repo.commit_all("template");
    refuses(&repo, "PROMPT.md:2:");
}

#[test]
fn a_second_run_refuses_and_names_the_first() {
    let scenario = "[[step]]\nactions = [{ print = \"started\" }, { hang = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let mut first = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_for(20, || repo.path(".ralph/lock").exists()
        && std::fs::read_to_string(repo.path(".ralph/lock")).unwrap_or_default() == first.id().to_string()));
    let second = repo.ralph(&["run"]).expect(2);
    assert!(second.stderr().contains(&format!("pid {}", first.id())), "{}", second.stderr());
    // `ralph status` sees the live run.
    let status = repo.ralph(&["status"]).expect(0);
    assert!(status.stdout().contains(&format!("running (pid {})", first.id())), "{}", status.stdout());
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert_eq!(first.wait().unwrap().code(), Some(130));
    assert_eq!(repo.dirt(), "");
}

#[test]
fn a_detached_head_or_a_git_operation_in_progress_is_refused() {
    let repo = TestRepo::with_loop(OK_SCENARIO, &["true"], "", &[("010-a.md", "# A\n")]);
    // A rebase stopped at `edit`: HEAD is detached on the commit being edited.
    repo.git(&["-c", "sequence.editor=sed -i s/^pick/edit/", "rebase", "-q", "-i", "HEAD~1"]);
    let err = refuses(&repo, "a rebase is in progress in this repository: ralph would commit into it");
    assert!(err.contains("git rebase --continue") && err.contains("git rebase --abort"), "{err}");
    let out = repo.ralph(&["doctor"]).expect(2).stdout();
    assert!(out.contains("a rebase is in progress"), "{out}");
    repo.git(&["rebase", "--abort"]);

    // A merge stopped on a conflict.
    repo.git(&["checkout", "-q", "-b", "other"]);
    repo.write("README.md", "theirs\n");
    repo.commit_all("theirs");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("README.md", "ours\n");
    repo.commit_all("ours");
    let mut merge = std::process::Command::new("git");
    merge.args(["merge", "-q", "other"]).current_dir(&repo.root);
    hermetic(&mut merge, &repo.outside);
    assert!(!merge.output().unwrap().status.success());
    let err = refuses(&repo, "a merge is in progress");
    assert!(err.contains("git merge --abort"), "{err}");
    repo.git(&["merge", "--abort"]);

    // A detached HEAD with no [git] branch to switch to.
    repo.git(&["checkout", "-q", "--detach", "HEAD"]);
    let err = refuses(&repo, "HEAD is detached (at ");
    assert!(err.contains("git switch") && err.contains("[git] branch"), "{err}");
    // With [git] branch, ralph switches to it and works there.
    repo.git(&["checkout", "-q", "main"]);
    repo.write_config(&["true"], "\n[git]\nbranch = \"main\"\n");
    repo.git(&["commit", "-q", "-am", "work on main"]);
    repo.git(&["checkout", "-q", "--detach", "HEAD"]);
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.git(&["branch", "--show-current"]).trim(), "main");
}

#[test]
fn a_cost_limit_that_is_not_a_cost_is_refused() {
    let repo = TestRepo::with_loop(OK_SCENARIO, &["true"], "", &[("010-a.md", "# A\n")]);
    for (value, says) in [("nan", "not NaN"), ("inf", "not inf"), ("-1.5", "cannot be negative")] {
        repo.write_config(&["true"], &format!("[budget]\nmax_cost = {value}\n"));
        repo.commit_all(&format!("max_cost = {value}"));
        let err = refuses(&repo, "ralph.toml:11:");
        assert!(err.contains("cost limit") && err.contains(says), "{value}: {err}");
    }
    repo.write_config(&["true"], "");
    repo.commit_all("no cost limit");
    for flag in ["--max-cost=-1", "--max-cost=NaN"] {
        let err = repo.ralph(&["run", flag]).expect(2).stderr();
        assert!(err.contains("cost limit"), "{flag}: {err}");
    }
    assert!(!repo.exists(".ralph/runs"));
}

#[test]
fn a_prompt_template_outside_the_repository_is_refused() {
    let repo = TestRepo::with_loop(OK_SCENARIO, &["true"], "", &[("010-a.md", "# A\n")]);
    let secret = repo.outside.join("secret.md");
    std::fs::write(&secret, "not for the agent {{ task.id }}\n").unwrap();
    for path in [secret.to_string_lossy().into_owned(), "../secret.md".to_string()] {
        repo.write_config(&["true"], &format!("[prompt]\ntemplate = {}\n", toml_str(&path)));
        repo.commit_all("template outside");
        let err = refuses(&repo, "ralph.toml:11:");
        assert!(err.contains("must be a path inside the repository"), "{path}: {err}");
    }
    // Through a link that looks like a file of the repository.
    std::os::unix::fs::symlink(&secret, repo.path("prompt.md")).unwrap();
    repo.write_config(&["true"], "[prompt]\nplan_template = \"prompt.md\"\n");
    repo.commit_all("template through a link");
    let err = refuses(&repo, "ralph.toml:11:");
    assert!(err.contains("[prompt] plan_template `prompt.md` leads outside the repository"), "{err}");
}
