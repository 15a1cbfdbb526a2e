//! The agent process: idle and wall-clock timeouts kill the whole group, Ctrl-C leaves a clean
//! tree, prompt delivery modes, PTY mode, streaming logs, secrets masked.

use crate::common::*;
use std::time::Duration;

#[test]
fn a_hung_agent_is_killed_by_the_idle_timeout_grandchild_included() {
    let repo = TestRepo::new();
    let pid_file = repo.outside.join("grandchild.pid");
    repo.set_scenario(&format!(
        r#"
[[step]]
actions = [
  {{ write = {{ path = "half.txt", content = "half\n" }} }},
  {{ grandchild = {{ command = "sleep 1000", pid_file = {} }} }},
  {{ print = "about to hang" }},
  {{ ignore_sigterm = true }},
  {{ hang = true }},
]
"#,
        toml_str(&pid_file.to_string_lossy())
    ));
    // A check that fails on what the hung agent left: its work is not kept.
    repo.write_config(&["test ! -f half.txt"], "idle_timeout = \"1s\"\n[budget]\nmax_attempts = 1\n");
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("setup");
    let head = repo.head();

    let started = std::time::Instant::now();
    repo.ralph(&["run"]).expect(4);
    assert!(started.elapsed() < Duration::from_secs(30));
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "idle_timeout");
    assert_eq!(r["exit_code"], serde_json::Value::Null);
    assert!(r["failure"].as_str().unwrap().contains("printed nothing for 1s"), "{r}");
    let gc: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(wait_for(5, || !alive(gc)), "grandchild {gc} survived the group kill");
    // The work was reverted; the only commit is the block.
    assert!(!repo.exists("half.txt"));
    assert_eq!(repo.git(&["rev-list", "--count", &format!("{head}..HEAD")]).trim(), "1");
    assert!(repo.iter_file(1, "agent.log").contains("about to hang"));
}

#[test]
fn the_wall_clock_timeout_stops_a_chatty_agent() {
    let scenario = r#"
[[step]]
actions = [{ run = "while true; do echo tick; sleep 0.1; done" }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "timeout = \"1s\"\n[budget]\nmax_attempts = 1\n",
        &[("010-a.md", "# A\n")],
    );
    repo.ralph(&["run"]).expect(4);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "timeout");
    assert!(r["failure"].as_str().unwrap().contains("stopped after 1s"), "{r}");
    assert!(repo.iter_file(1, "agent.log").contains("tick"));
}

#[test]
fn ctrl_c_kills_the_agent_restores_the_tree_and_exits_130() {
    let scenario = r#"
[[step]]
actions = [
  { write = { path = "README.md", content = "clobbered\n" } },
  { write = { path = "new.txt", content = "new\n" } },
  { print = "working" },
  { hang = true },
]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let head = repo.head();
    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let agent_log = || {
        let runs = repo.path(".ralph/runs");
        std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("iter-0001/agent.log"))
    };
    // The log fills while the agent runs, not at the end.
    let ok = wait_for(20, || {
        agent_log().is_some_and(|p| std::fs::read_to_string(p).unwrap_or_default().contains("working"))
    });
    let ps = std::process::Command::new("ps").args(["-eo", "pid,ppid,pgid,stat,args"]).output().unwrap();
    assert!(
        ok,
        "agent log: {:?}\n{}",
        agent_log().map(|p| (p.clone(), std::fs::read_to_string(p))),
        String::from_utf8_lossy(&ps.stdout)
    );
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(repo.dirt(), "");
    assert_eq!(repo.read("README.md"), "# test project\n");
    assert!(!repo.exists("new.txt"));
    assert_eq!(repo.head(), head);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "interrupted");
    let meta = std::fs::read_to_string(repo.latest_run_dir().join("run.json")).unwrap();
    assert!(meta.contains("\"exit_code\": 130"), "{meta}");
    // Interrupted is not a failed attempt.
    let status = repo.ralph(&["status", "--json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    assert_eq!(v["tasks"][0]["attempts"], 0);
}

#[test]
fn the_prompt_can_go_in_as_an_argument_or_a_file() {
    let scenario = r#"
[[step]]
actions = [{ expect_prompt = "Task 010-a" }, { write = { path = "ok.txt", content = "ok\n" } }, { promise = true }]
"#;
    // arg mode: the scripted agent takes the prompt as its second positional argument.
    let repo =
        TestRepo::with_loop(scenario, &["test -f ok.txt"], "prompt = \"arg\"\n", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    // file mode with a placeholder.
    let repo = TestRepo::new();
    repo.set_scenario(scenario);
    let cfg = format!(
        "[agent]\ncommand = [{}, \"scripted-agent\", {}, \"--prompt-file\", \"{{prompt_file}}\"]\nprompt = \"file\"\n[checks]\ncommands = [\"test -f ok.txt\"]\n",
        toml_str(RALPH),
        toml_str(&repo.scenario_path().to_string_lossy())
    );
    repo.write("ralph.toml", &cfg);
    repo.write("specs/010-a.md", "# A\n");
    repo.commit_all("setup");
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.spec_status("010-a"), "done");
}

#[test]
fn pty_mode_gives_the_agent_a_terminal() {
    let scenario = r#"
[[step]]
actions = [{ run = "if [ -t 1 ]; then echo TTY-YES; else echo TTY-NO; fi" }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &[], "pty = true\nprompt = \"arg\"\n", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    let log = repo.iter_file(1, "agent.log");
    assert!(log.contains("TTY-YES"), "{log}");
    assert_eq!(repo.records()[0]["outcome"], "done");
}

#[test]
fn secrets_from_the_environment_are_masked_everywhere_ralph_writes() {
    let scenario = r#"
[[step]]
actions = [
  { run = "echo token is $MY_SERVICE_TOKEN" },
  { learning = "the token is s3cr3t-t0ken-value" },
  { progress = "half way; the token s3cr3t-t0ken-value works" },
  { write = { path = "leak.txt", content = "s3cr3t-t0ken-value\n" } },
  { exit = 1 },
]
"#;
    let repo =
        TestRepo::with_loop(scenario, &["true"], "[budget]\nmax_attempts = 1\n", &[("010-a.md", "# A\n")]);
    let out = repo.cmd(&["run"]).env("MY_SERVICE_TOKEN", "s3cr3t-t0ken-value").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let run_dir = repo.latest_run_dir();
    let mut seen = String::new();
    for entry in walk(&run_dir) {
        seen.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
    }
    seen.push_str(&repo.read("AGENTS.md"));
    seen.push_str(&repo.read(".ralph/state.json"));
    assert!(seen.contains("the token [MASKED] works"), "the progress note is kept, masked");
    assert!(!seen.contains("s3cr3t-t0ken-value"), "a secret leaked");
    assert!(repo.iter_file(1, "agent.log").contains("token is [MASKED]"));
    // A learning that carries a secret is not admitted; the record says so, masked.
    assert!(!repo.read("AGENTS.md").contains("the token is"));
    let r = &repo.records()[0];
    assert_eq!(r["learnings_rejected"][0]["text"], "the token is [MASKED]");
    assert!(r["learnings_rejected"][0]["reason"].as_str().unwrap().contains("secret"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn hostile_output_is_capped_and_read_to_the_end() {
    let scenario = r#"
[[step]]
actions = [
  { run = "head -c 2000000 /dev/urandom; yes 'a line of noise' | head -c 3000000; head -c 2000000 /dev/zero | tr '\\0' x" },
  { print = "" },
  { write = { path = "x.txt", content = "x\n" } },
  { promise = true },
]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "max_log_size = \"1MB\"\n", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "done", "the promise after 7 MB of garbage was still read: {r}");
    assert_eq!(r["log_capped"], true);
    let log = std::fs::read(repo.latest_run_dir().join("iter-0001/agent.log")).unwrap();
    assert!(log.len() < 1_100_000, "{} bytes", log.len());
    assert!(String::from_utf8_lossy(&log).contains("[ralph: agent.log capped at 1000000 bytes"));
}

#[test]
fn sighup_stops_like_ctrl_c_and_a_second_signal_skips_the_grace_period() {
    let scenario =
        "[[step]]\nactions = [{ ignore_sigterm = true }, { print = \"stubborn\" }, { hang = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "kill_grace = \"60s\"\n", &[("010-a.md", "# A\n")]);
    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let log = || {
        std::fs::read_dir(repo.path(".ralph/runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.unwrap().path().join("iter-0001/agent.log")).ok())
            .unwrap_or_default()
    };
    assert!(wait_for(20, || log().contains("stubborn")));
    let started = std::time::Instant::now();
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the first signal waits out the grace period");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(20), "the second signal did not skip the 60 s grace");
    assert_eq!(repo.records()[0]["outcome"], "interrupted");
    assert_eq!(repo.dirt(), "");
}

/// The descriptors `ls -l /proc/self/fd` listed in `listing`, less the one `ls` opened to read
/// that folder.
fn open_fds(listing: &str) -> Vec<u32> {
    let mut fds: Vec<u32> = listing
        .lines()
        .filter_map(|l| {
            let (name, target) = l.split_once(" -> ")?;
            let fd = name.rsplit(' ').next()?.parse().ok()?;
            let own = target.starts_with("/proc/") && target.ends_with("/fd");
            (!own).then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}

#[test]
fn children_get_no_descriptor_beyond_stdin_stdout_and_stderr() {
    // ralph itself is started with an extra open pipe (fd 9, its stdout's), as a shell or a
    // harness may leave one: neither that nor anything ralph opens reaches the agent, the
    // checks or git's hooks.
    for pty in [false, true] {
        let repo = TestRepo::new();
        let out = |name: &str| repo.outside.join(name).display().to_string();
        repo.set_scenario(&format!(
            "[[step]]\nactions = [{{ run = \"ls -l /proc/self/fd > {}\" }}, {{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {{ promise = true }}]\n",
            out("agent-fds")
        ));
        let pty_toml = if pty { "pty = true\nprompt = \"file\"\n" } else { "" };
        repo.write_config(&[&format!("ls -l /proc/self/fd > {}", out("check-fds"))], pty_toml);
        repo.write("specs/010-a.md", "# A\n");
        repo.commit_all("set up ralph");
        let hook = repo.path(".git/hooks/pre-commit");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(&hook, format!("#!/bin/sh\nls -l /proc/self/fd > {}\n", out("hook-fds"))).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

        let mut cmd = repo.cmd(&["run"]);
        // SAFETY: dup2 is async-signal-safe; the new descriptor has no close-on-exec flag.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::dup2(1, 9) == 9 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        let run = Run(cmd.output().unwrap()).expect(0);
        assert!(run.stderr().contains("backlog done"), "{}", run.stderr());
        for name in ["agent-fds", "check-fds", "hook-fds"] {
            let listing = std::fs::read_to_string(repo.outside.join(name)).unwrap();
            assert_eq!(open_fds(&listing), [0, 1, 2], "pty {pty}, {name}:\n{listing}");
        }
    }
}
