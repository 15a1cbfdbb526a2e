//! `[sandbox]`: an agent in bubblewrap changes its worktree and nothing else, sees an empty
//! home and only allowlisted variables, and leaves nothing running; so does every agent ralph
//! starts (a reviewer, a planner, the workers of a parallel run). `[agent] env_allowlist` cuts
//! the environment without a sandbox. The checks run as the user unless `[sandbox] checks`.
//! `ralph init` proposes bwrap where it is installed; `ralph doctor` checks the sandbox runs.
//!
//! The tests that run bubblewrap are ignored by a plain `cargo test` ("needs bwrap");
//! scripts/test installs it and runs them, and they fail where it cannot run. The container
//! kind's test needs an engine that runs containers (podman, which scripts/test installs, or
//! docker with its daemon): scripts/test skips it, and says so, where none does.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A variable that must never reach a sandboxed agent: on no allowlist, and named like no
/// credential, so masking would not hide it either.
const UNLISTED: (&str, &str) = ("UNLISTED_VALUE", "unlisted-9f2c41d7");
/// The fake private key in the fake home.
const KEY: &str = "fake-ed25519-key-material-51ab";

/// Fails the test where bubblewrap is missing or cannot run (never a silent pass).
fn require_bwrap() {
    match std::process::Command::new("bwrap").args(["--ro-bind", "/", "/", "--unshare-pid", "true"]).output()
    {
        Err(e) => {
            panic!("bwrap is not installed ({e}): scripts/test installs it (apt-get install bubblewrap)")
        }
        Ok(o) if !o.status.success() => {
            panic!("bwrap cannot run here: {}", String::from_utf8_lossy(&o.stderr))
        }
        Ok(_) => {}
    }
}

/// A repository whose scripted agent runs in bwrap (its scenario readable inside): `agent` is
/// more `[agent]` TOML, `sandbox` more `[sandbox]` keys (and sections after), one task `010-a`.
fn sandboxed(checks: &[&str], agent: &str, sandbox: &str) -> TestRepo {
    let repo = TestRepo::new();
    let extra = format!(
        "{agent}\n[sandbox]\nkind = \"bwrap\"\nread_only = [{}]\n{sandbox}",
        toml_str(&repo.scenario_path().to_string_lossy())
    );
    repo.write_config(checks, &extra);
    repo.write("specs/010-a.md", "# A\n\nWrite src/ok.txt.\n");
    repo.commit_all("set up ralph");
    repo
}

/// One step for any task: `run` (a shell command, if any) between the legitimate edit and the
/// promise.
fn edit_and_run(run: &str) -> String {
    format!(
        "[[step]]\nactions = [\n  {{ write = {{ path = \"src/ok.txt\", content = \"ok\\n\" }} }},\n  {{ run = {} }},\n  {{ promise = true }},\n]\n",
        toml_str(run)
    )
}

/// Every file under `dir` (links not followed, `skip` left out) with its bytes.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let (path, kind) = (e.path(), e.file_type().unwrap());
            if path == skip {
                continue;
            }
            if kind.is_dir() {
                files.insert(path.clone(), b"<dir>".to_vec());
                todo.push(path);
            } else if kind.is_symlink() {
                files.insert(
                    path.clone(),
                    std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes(),
                );
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The running processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
                && alive(*pid)
        })
        .collect()
}

/// A marker no other test's process carries.
fn marker(name: &str) -> String {
    format!("ralph-sandbox-{name}-{}", std::process::id())
}

/// `ralph ARGS` with the unlisted variable in its environment.
fn run_with_secret(repo: &TestRepo, args: &[&str]) -> Run {
    Run(repo.cmd(args).env(UNLISTED.0, UNLISTED.1).output().unwrap())
}

/// The hostile agent, in one iteration: it writes outside the repository and into
/// `.git/hooks`, deletes `.ralph/`, reads a key under the home, prints a variable that is on no
/// allowlist, leaves a daemon, and makes a legitimate edit that passes the checks. The edit is
/// committed; nothing else of it is left anywhere.
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn a_hostile_agent_in_bwrap_changes_its_worktree_and_nothing_else() {
    require_bwrap();
    let repo = sandboxed(&["test -f src/ok.txt"], "", "");
    let o = repo.outside.display();
    std::fs::create_dir_all(repo.outside.join(".ssh")).unwrap();
    std::fs::write(repo.outside.join(".ssh/id_ed25519"), format!("{KEY}\n")).unwrap();
    let daemon = marker("daemon");
    let hostile = [
        format!("echo escaped > {o}/escaped.txt"),
        "echo escaped > \"$HOME/escaped-home.txt\"".to_string(),
        format!("mkdir {o}/made-outside"),
        "echo '#!/bin/sh' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit".to_string(),
        "echo '[core]' >> .git/config".to_string(),
        "rm -rf .ralph".to_string(),
        "cat \"$HOME/.ssh/id_ed25519\"".to_string(),
        format!("cat {o}/.ssh/id_ed25519"),
        format!("echo \"unlisted=${}\"", UNLISTED.0),
        "env".to_string(),
        format!("setsid sh -c 'sleep 300; :' {daemon} >/dev/null 2>&1 &"),
        "git status --short --untracked-files=all; git diff --stat HEAD".to_string(),
        "echo hostile-done".to_string(),
    ];
    repo.set_scenario(&edit_and_run(&hostile.join("\n")));
    let outside_before = snapshot(&repo.outside, &repo.root);
    let hooks_before = snapshot(&repo.path(".git/hooks"), Path::new("/"));
    let config_before = repo.read(".git/config");

    let run = run_with_secret(&repo, &["run"]);
    let log = repo.iter_file(1, "agent.log");
    assert_eq!(run.code(), 0, "{}\nagent log:\n{log}", run.stderr());

    // The legitimate edit is committed.
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "done", "{r}");
    assert!(repo.git(&["show", "--name-only", "--format=", "HEAD"]).contains("src/ok.txt"));
    assert_eq!(repo.spec_status("010-a"), "done");
    // The agent ran to its end, git worked inside, the refused writes were the kernel's.
    assert!(log.contains("hostile-done"), "{log}");
    assert!(log.contains("?? src/ok.txt"), "git status did not work inside:\n{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    // Nothing outside the worktree changed; .git and .ralph are intact.
    assert_eq!(snapshot(&repo.outside, &repo.root), outside_before, "something changed outside");
    assert_eq!(snapshot(&repo.path(".git/hooks"), Path::new("/")), hooks_before, ".git/hooks changed");
    assert_eq!(repo.read(".git/config"), config_before);
    assert!(repo.path(".ralph/state.json").is_file());
    assert!(repo.latest_run_dir().join("iter-0001/prompt.md").is_file());
    repo.assert_each_iteration_recorded_once();
    // The key and the secret appear in no output: ralph's, its files, the history.
    for needle in [KEY, UNLISTED.1] {
        assert!(!run.stdout().contains(needle) && !run.stderr().contains(needle), "{needle} printed");
        assert_eq!(files_holding(&repo.root, needle), Vec::<PathBuf>::new(), "{needle} written");
        assert!(!repo.git(&["log", "--all", "-p"]).contains(needle), "{needle} committed");
    }
    assert!(log.contains("unlisted=\n") || log.contains("unlisted=\r\n"), "{log}");
    // Nothing of the iteration is alive.
    assert!(
        wait_for(5, || processes_with(&daemon).is_empty()),
        "the daemon survived: {:?}",
        processes_with(&daemon)
    );
}

/// A sandboxed agent stopped at its timeout gets SIGTERM and its grace period, as one outside
/// does: bubblewrap, which leads the agent's process group, is spared that SIGTERM (it would die
/// of it and, with `--die-with-parent`, take the agent with it at once).
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn a_sandboxed_agent_stopped_at_its_timeout_gets_its_grace_period() {
    require_bwrap();
    let repo = TestRepo::new();
    let agent = "trap 'echo got-term; sleep 0.3; echo saved-on-term; exit 0' TERM; echo waiting; while :; do sleep 0.1; done";
    repo.write(
        "ralph.toml",
        &format!(
            "[agent]\ncommand = [\"sh\", \"-c\", {}]\ntimeout = \"2s\"\nkill_grace = \"20s\"\n\n[checks]\ncommands = [\"true\"]\n\n[sandbox]\nkind = \"bwrap\"\n",
            toml_str(agent)
        ),
    );
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    let run = repo.ralph_within(60, &["run", "--max-iterations", "1"]);
    let log = repo.iter_file(1, "agent.log");
    let saved = log.find("got-term").and_then(|t| log[t..].find("saved-on-term"));
    assert!(saved.is_some(), "{}\nagent log:\n{log}", run.stderr());
    assert_eq!(repo.records()[0]["outcome"], "timeout", "{}", run.stderr());
}

/// `[agent] env_allowlist = true` without a sandbox: the agent gets the basics, its own
/// `[agent.env]`, ralph's variables and `[sandbox] env`, nothing else; the checks still get
/// the whole environment (they are the user's).
#[test]
fn the_env_allowlist_keeps_unlisted_variables_from_an_unsandboxed_agent() {
    let repo = TestRepo::new();
    repo.set_scenario(&edit_and_run("env; echo env-done"));
    let checks = [&*format!("test \"${}\" = {}", UNLISTED.0, UNLISTED.1), "test -f src/ok.txt"];
    repo.write_config(
        &checks,
        "env_allowlist = true\n[agent.env]\nMINE = \"set-by-agent-env\"\n\n[sandbox]\nenv = [\"EXTRA_*\"]\n",
    );
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    let run = Run(repo
        .cmd(&["run"])
        .env(UNLISTED.0, UNLISTED.1)
        .env("EXTRA_ONE", "extra-visible")
        .env("ANTHROPIC_BASE_URL", "http://anthropic.invalid")
        .output()
        .unwrap());
    let log = repo.iter_file(1, "agent.log");
    assert_eq!(run.code(), 0, "{}\n{log}", run.stderr());
    assert!(log.contains("env-done"), "{log}");
    for seen in ["EXTRA_ONE=extra-visible", "MINE=set-by-agent-env", "RALPH_TASK=010-a", "PATH=", "HOME="] {
        assert!(log.lines().any(|l| l.starts_with(seen)), "{seen} missing:\n{log}");
    }
    // Not its own preset's variable (a custom command has none), and not the unlisted one.
    for unseen in [UNLISTED.1, "anthropic.invalid", "GIT_AUTHOR_NAME"] {
        assert!(!log.contains(unseen), "{unseen} reached the agent:\n{log}");
    }
    // The checks saw the unlisted variable: they passed on it.
    assert_eq!(repo.records()[0]["outcome"], "done", "{}", repo.iter_file(1, "checks.log"));
}

/// `network = false`: the agent cannot reach a listener on 127.0.0.1, which it reaches with
/// the network shared (the default).
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn network_false_cuts_the_agent_off_even_from_localhost() {
    require_bwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect =
        format!("bash -c 'echo hello > /dev/tcp/127.0.0.1/{port}' && echo connected || echo refused");
    for network in [true, false] {
        let repo = sandboxed(&["test -f src/ok.txt"], "", &format!("network = {network}\n"));
        repo.set_scenario(&edit_and_run(&connect));
        let run = repo.ralph(&["run"]);
        let log = repo.iter_file(1, "agent.log");
        assert_eq!(run.code(), 0, "{}\n{log}", run.stderr());
        let accepted = listener.accept().is_ok();
        assert_eq!(accepted, network, "network = {network}: accepted {accepted}\n{log}");
        assert!(log.contains(if network { "connected" } else { "refused" }), "{log}");
    }
}

/// A reviewer and a planner are agents too: each runs in the sandbox. The checks run as the
/// user's own commands, outside it, unless `[sandbox] checks = true`.
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn reviewers_and_planners_are_sandboxed_and_checks_only_when_asked() {
    require_bwrap();
    let check =
        |repo: &TestRepo| format!("echo x > {}/check-wrote.txt; test -f src/ok.txt", repo.outside.display());
    let repo = TestRepo::new();
    let o = repo.outside.display().to_string();
    let reviewer = format!(
        "\n[review]\ncommand = [{}, \"scripted-agent\", {}]\n",
        toml_str(RALPH),
        toml_str(&repo.scenario_path().to_string_lossy())
    );
    repo.write_config(
        &[&check(&repo)],
        &format!(
            "\n[sandbox]\nkind = \"bwrap\"\nread_only = [{}]\n{reviewer}",
            toml_str(&repo.scenario_path().to_string_lossy())
        ),
    );
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    // The planner's step first: the agent's matches any task.
    repo.set_scenario(&format!(
        "[[step]]\ntask = \"plan\"\nactions = [{{ run = {} }}, {{ write = {{ path = \"specs/020-b.md\", content = \"# B\\n\" }} }}]\n[[step]]\nreview = true\nactions = [{{ run = {} }}, {{ print = \"APPROVED\" }}]\n{}",
        toml_str(&format!("echo x > {o}/plan-wrote.txt")),
        toml_str(&format!("echo x > {o}/review-wrote.txt")),
        edit_and_run(&format!("echo x > {o}/agent-wrote.txt")),
    ));
    let run = repo.ralph(&["run"]);
    assert_eq!(run.code(), 0, "{}\n{}", run.stderr(), repo.iter_file(1, "review.log"));
    assert_eq!(repo.records()[0]["outcome"], "done");
    for (who, file) in [("agent", "agent-wrote.txt"), ("reviewer", "review-wrote.txt")] {
        assert!(!repo.outside.join(file).exists(), "the {who} wrote outside its sandbox");
    }
    assert!(repo.outside.join("check-wrote.txt").exists(), "the checks did not run as the user");

    let plan = repo.ralph(&["plan", "add B"]);
    assert_eq!(plan.code(), 0, "{}", plan.stderr());
    assert!(repo.exists("specs/020-b.md"), "the planner's edit is kept");
    assert!(!repo.outside.join("plan-wrote.txt").exists(), "the planner wrote outside its sandbox");

    // checks = true: the same check now runs inside, its write outside goes nowhere.
    std::fs::remove_file(repo.outside.join("check-wrote.txt")).unwrap();
    let text = repo.read("ralph.toml").replace("[sandbox]\n", "[sandbox]\nchecks = true\n");
    repo.write("ralph.toml", &text);
    // 020-b, the planned task, writes src/ok.txt afresh.
    std::fs::remove_file(repo.path("src/ok.txt")).unwrap();
    repo.commit_all("checks inside");
    let run = repo.ralph(&["run"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(repo.records()[0]["outcome"], "done", "{}", repo.iter_file(1, "checks.log"));
    assert!(!repo.outside.join("check-wrote.txt").exists(), "the checks ran outside the sandbox");
}

/// `ralph run -j 2`: each worker's agent runs sandboxed in its slot, a linked worktree under
/// `.git/ralph-slots/` whose `.git` is a file: git works inside, git's folders are read-only,
/// the prompt is readable, nothing outside changes.
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn a_parallel_runs_agents_are_sandboxed_in_their_slots() {
    require_bwrap();
    let repo = sandboxed(&["true"], "", "");
    repo.write("specs/020-b.md", "# B\n");
    repo.commit_all("two tasks");
    let o = repo.outside.display();
    let step = |task: &str, file: &str| {
        let run = format!(
            "git status --short; echo x > \"$(git rev-parse --git-common-dir)/hooks/slot-hook\"; echo x > \"$(git rev-parse --git-dir)/slot-file\"; echo x > {o}/slot-wrote.txt; head -n 1 \"$RALPH_PROMPT_FILE\"; echo slot-done"
        );
        format!(
            "[[step]]\ntask = \"{task}\"\nactions = [{{ write = {{ path = \"{file}\", content = \"x\\n\" }} }}, {{ run = {} }}, {{ promise = true }}]\n",
            toml_str(&run)
        )
    };
    repo.set_scenario(&(step("010-a", "a.txt") + &step("020-b", "b.txt")));
    let git_before = snapshot(&repo.path(".git/hooks"), Path::new("/"));
    let run = repo.ralph_within(120, &["run", "-j", "2"]);
    let logs: String = (1..=2).map(|n| repo.iter_file(n, "agent.log")).collect();
    assert_eq!(run.code(), 0, "{}\n{logs}", run.stderr());
    assert_eq!((repo.spec_status("010-a"), repo.spec_status("020-b")), ("done".into(), "done".into()));
    assert!(repo.exists("a.txt") && repo.exists("b.txt"));
    assert_eq!(logs.lines().filter(|l| *l == "slot-done").count(), 2, "{logs}");
    assert!(
        logs.contains("?? a.txt") && logs.contains("?? b.txt"),
        "git status did not work in a slot:\n{logs}"
    );
    assert!(
        logs.contains("# Task 010-a") && logs.contains("# Task 020-b"),
        "the prompt was not readable:\n{logs}"
    );
    assert_eq!(snapshot(&repo.path(".git/hooks"), Path::new("/")), git_before);
    assert!(files_holding(&repo.path(".git"), "x\n").iter().all(|p| !p.ends_with("slot-file")));
    assert!(!repo.outside.join("slot-wrote.txt").exists());
}

/// `ralph eval`: each trial's agent runs sandboxed in its scratch worktree; the hidden check
/// outside the repository is out of its sight, and still decides.
#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn an_eval_trials_agent_is_sandboxed_and_cannot_read_the_hidden_check() {
    require_bwrap();
    let repo = sandboxed(&["true"], "", "");
    let suite = repo.outside.join("suite");
    std::fs::create_dir_all(suite.join("hello")).unwrap();
    std::fs::write(suite.join("hello/spec.md"), "# Hello\n\nWrite hello.txt.\n").unwrap();
    fake_bin(&suite.join("hello"), "check", "test -f hello.txt");
    let o = repo.outside.display();
    repo.set_scenario(&format!(
        "[[step]]\nactions = [{{ write = {{ path = \"hello.txt\", content = \"hi\\n\" }} }}, {{ run = {} }}, {{ promise = true }}]\n",
        toml_str(&format!("echo x > {o}/eval-wrote.txt; cat {o}/suite/hello/check; echo trial-done"))
    ));
    let suite_arg = suite.to_string_lossy().into_owned();
    let run = repo.ralph_within(120, &["eval", "--suite", &suite_arg, "--json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let log = std::fs::read_to_string(
        repo.path(&format!(".ralph/eval/{}/hello/1/iter-0001/agent.log", v["id"].as_str().unwrap())),
    )
    .unwrap();
    assert_eq!(v["score"], 1.0, "{v}\n{log}");
    assert!(log.contains("trial-done") && log.contains("No such file or directory"), "{log}");
    assert!(!log.contains("test -f hello.txt\n"), "the agent read the hidden check:\n{log}");
    assert!(!repo.outside.join("eval-wrote.txt").exists());
}

/// A fake program in a folder of its own: `bin/NAME` running `script`.
fn fake_bin(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A folder holding links to the real `git` and `sh`: a PATH without bwrap.
fn path_without_bwrap(dir: &Path) -> PathBuf {
    let bin = dir.join("plain-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var("PATH").unwrap();
    for tool in ["git", "sh"] {
        let real = std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file()).unwrap();
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn init_proposes_bwrap_only_where_it_is_installed_and_runs() {
    let repo = TestRepo::new();
    let plain = path_without_bwrap(&repo.outside);
    let with = repo.outside.join("with-bwrap");
    fake_bin(&with, "bwrap", "exit 0");
    let path_with = format!("{}:{}", with.display(), plain.display());
    let out = Run(repo.cmd(&["init"]).env("PATH", &path_with).output().unwrap()).expect(0);
    let toml = repo.read("ralph.toml");
    assert!(toml.contains("\n[sandbox]\n") && toml.contains("\nkind = \"bwrap\""), "{toml}");
    assert!(out.stdout().contains("the agent runs sandboxed"), "{}", out.stdout());

    Run(repo.cmd(&["init", "--force"]).env("PATH", &plain).output().unwrap()).expect(0);
    let toml = repo.read("ralph.toml");
    assert!(toml.contains("# kind = \"bwrap\"") && !toml.contains("\nkind = \"bwrap\""), "{toml}");
    assert!(!toml.contains("\n[sandbox]"), "{toml}");

    // Installed but unable to make a sandbox (user namespaces off): not proposed, and said.
    let broken = repo.outside.join("broken-bwrap");
    fake_bin(&broken, "bwrap", "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1");
    let path = format!("{}:{}", broken.display(), plain.display());
    let out = Run(repo.cmd(&["init", "--force"]).env("PATH", &path).output().unwrap()).expect(0);
    let toml = repo.read("ralph.toml");
    assert!(!toml.contains("\nkind = \"bwrap\""), "{toml}");
    assert!(out.stdout().contains("cannot make a sandbox here"), "{}", out.stdout());
}

#[test]
fn doctor_says_why_a_sandbox_cannot_run() {
    let repo = TestRepo::with_loop(
        &edit_and_run("true"),
        &["true"],
        "\n[sandbox]\nkind = \"bwrap\"\n",
        &[("010-a.md", "# A\n")],
    );
    let plain = path_without_bwrap(&repo.outside);
    let out = Run(repo.cmd(&["doctor"]).env("PATH", &plain).output().unwrap()).expect(2).stdout();
    assert!(out.contains("sandbox: bwrap"), "{out}");
    assert!(out.contains("PROBLEM  set up the sandbox: `bwrap` was not found on PATH"), "{out}");
    assert!(out.contains("hint: install bubblewrap"), "{out}");
    // `ralph run` refuses to start the same way, before anything changes.
    let run = Run(repo.cmd(&["run"]).env("PATH", &plain).output().unwrap()).expect(2);
    assert!(run.stderr().contains("`bwrap` was not found on PATH"), "{}", run.stderr());
    assert!(!repo.exists(".ralph/runs"));

    let broken = repo.outside.join("broken-bwrap");
    fake_bin(&broken, "bwrap", "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1");
    let path = format!("{}:{}", broken.display(), plain.display());
    let out = Run(repo.cmd(&["doctor"]).env("PATH", &path).output().unwrap()).expect(2).stdout();
    assert!(
        out.contains(
            "PROBLEM  bwrap cannot run a command here (exit 1): bwrap: setting up uid map: Permission denied"
        ),
        "{out}"
    );
    assert!(out.contains("hint: bwrap needs unprivileged user namespaces"), "{out}");
}

#[test]
#[ignore = "needs bwrap: scripts/test installs it"]
fn doctor_runs_a_command_and_the_agent_inside_bwrap() {
    require_bwrap();
    let repo = sandboxed(&["true"], "", "");
    repo.set_scenario(&edit_and_run("true"));
    let out = repo.ralph(&["doctor"]).expect(0).stdout();
    for line in [
        "sandbox: bwrap",
        "ok       bwrap runs a command inside",
        &format!("ok       the agent starts inside: `{RALPH} --version` answers ralph "),
        "note     your home is empty inside the sandbox",
        "note     the network is shared",
        "note     the checks run outside the sandbox, as you",
    ] {
        assert!(out.contains(line), "{line} not in:\n{out}");
    }
}

/// The container kind, where an engine runs: the same hostile writes go nowhere, the edit is
/// committed. The image (`RALPH_TEST_IMAGE`, default one imported from this machine's own `sh`
/// and the libraries it and ralph need: no registry is reached) runs ralph's own binary, bound
/// read-only, as the scripted agent.
#[test]
#[ignore = "needs a container engine that runs containers (podman, or docker with its daemon): scripts/test runs it only where one does"]
fn a_container_sandbox_runs_the_agent_on_its_worktree_only() {
    let engine = ["podman", "docker"]
        .into_iter()
        .find(|e| std::process::Command::new(e).arg("info").output().is_ok_and(|o| o.status.success()))
        .expect("no container engine runs here (podman, or docker with its daemon)");
    let repo = TestRepo::new();
    let (image, _imported) = match std::env::var("RALPH_TEST_IMAGE") {
        Ok(image) => (image, None),
        Err(_) => {
            let image = tiny_image(engine, &repo.outside);
            (image.clone(), Some(Imported(engine, image)))
        }
    };
    // Podman as this machine can run it (runc; limits within the hard ones), told through
    // CONTAINERS_CONF, which the sandbox passes to the engine as the user asks.
    let conf = repo.outside.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let o = repo.outside.display();
    repo.write_config(
        &["test -f src/ok.txt"],
        &format!(
            "\n[sandbox]\nkind = \"container\"\nengine = \"{engine}\"\nimage = {}\nread_only = [{}, {}]\nenv = [\"CONTAINERS_CONF\"]\n",
            toml_str(&image),
            toml_str(&repo.scenario_path().to_string_lossy()),
            toml_str(RALPH)
        ),
    );
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("set up ralph");
    repo.set_scenario(&edit_and_run(&format!(
        "echo x > {o}/escaped.txt; echo x > .git/hooks/pre-commit; echo \"unlisted=${}\"; echo container-done",
        UNLISTED.0
    )));
    let run =
        Run(repo.cmd(&["run"]).env(UNLISTED.0, UNLISTED.1).env("CONTAINERS_CONF", &conf).output().unwrap());
    let log = repo.iter_file(1, "agent.log");
    assert_eq!(run.code(), 0, "{}\n{log}", run.stderr());
    assert!(log.contains("container-done"), "{log}");
    assert!(repo.git(&["show", "--name-only", "--format=", "HEAD"]).contains("src/ok.txt"));
    assert!(!repo.outside.join("escaped.txt").exists() && !repo.exists(".git/hooks/pre-commit"));
    assert!(!log.contains(UNLISTED.1), "{log}");
}

/// An image of this machine's `sh` and the shared libraries it and ralph's binary load, imported
/// into `engine` from a tarball (no registry needed); its name.
fn tiny_image(engine: &str, scratch: &Path) -> String {
    let root = scratch.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/sh", root.join("bin/sh")).unwrap();
    for program in ["/bin/sh", RALPH] {
        let out = std::process::Command::new("ldd").arg(program).output().unwrap();
        for lib in String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
    }
    let tar = scratch.join("rootfs.tar");
    let ok = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(std::process::Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
    let name = format!("localhost/ralph-test-tiny:{}", std::process::id());
    ok(std::process::Command::new(engine).arg("import").arg(&tar).arg(&name));
    name
}

/// An image the test imported, removed when the test ends however it ends.
struct Imported(&'static str, String);

impl Drop for Imported {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.0).args(["rmi", "-f", &self.1]).output();
    }
}
