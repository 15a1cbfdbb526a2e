//! Fallback agents (`[agent] fallback`, `[agents.NAME]`, a task's `agent:`): a usage limit
//! that lifts later than `fallback_after` moves the next iteration to the next agent, and
//! ralph goes back to the first once its limit lifts; an authentication failure moves on too;
//! only with every agent limited does ralph wait. Driven by two scripted agents, `primary` (the
//! main one) and `backup`, each a small program playing its own scenario.

use crate::common::*;

/// A repository whose main agent is `primary` and whose `[agents.backup]` is `backup`, each
/// playing its scenario; `agent_toml` adds keys to `[agent]` (the fallback chain), `extra`
/// more sections.
fn two_agents(
    primary: &str,
    backup: &str,
    agent_toml: &str,
    extra: &str,
    specs: &[(&str, &str)],
) -> TestRepo {
    let repo = TestRepo::new();
    let bin = repo.outside.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, scenario) in [("primary", primary), ("backup", backup)] {
        let path = repo.outside.join(format!("{name}.toml"));
        std::fs::write(&path, scenario).unwrap();
        // A program of that name, so that the agent is called so.
        let program = bin.join(name);
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\nexec {} scripted-agent {} \"$@\"\n",
                shell_quote(RALPH),
                shell_quote(&path.to_string_lossy())
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let program = |name: &str| toml_str(&bin.join(name).to_string_lossy());
    repo.write(
        "ralph.toml",
        &format!(
            "[checks]\ncommands = [\"true\"]\n\n[agent]\ncommand = [{}]\ntimeout = \"60s\"\nkill_grace = \"300ms\"\n{agent_toml}\n\n[agents.backup]\ncommand = [{}]\ntimeout = \"60s\"\nkill_grace = \"300ms\"\n\n{extra}",
            program("primary"),
            program("backup"),
        ),
    );
    for (name, text) in specs {
        repo.write(&format!("specs/{name}"), text);
    }
    repo.commit_all("set up ralph");
    repo
}

/// A scenario that hits a usage limit saying `words`, on every task.
fn limited(words: &str) -> String {
    format!("[[step]]\nactions = [{{ eprint = {} }}, {{ exit = 1 }}]\n", toml_str(words))
}

/// A scenario that finishes each task it is given: writes `<task>.txt` and promises.
const DOES_ALL: &str = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
[[step]]
task = "030-c"
actions = [{ write = { path = "c.txt", content = "c\n" } }, { promise = true }]
"#;

const TWO: &[(&str, &str)] = &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")];

fn agents_of(repo: &TestRepo) -> Vec<(String, String)> {
    repo.records()
        .iter()
        .map(|r| (r["agent"].as_str().unwrap_or("").to_string(), r["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, o)| (a.to_string(), o.to_string())).collect()
}

#[test]
fn a_limit_an_hour_away_moves_the_run_to_the_fallback_which_finishes_the_tasks() {
    let repo = two_agents(
        &limited("You've hit your usage limit. Try again in 1 hours."),
        DOES_ALL,
        "fallback = [\"backup\"]\n",
        "[budget]\nmax_attempts = 1\nmax_consecutive_failures = 1\n",
        TWO,
    );
    let run = repo.ralph_within(60, &["run"]).expect(0);
    let err = run.stderr();
    assert!(err.contains("(falling back to backup)"), "{err}");
    assert!(
        err.contains("primary hit a usage limit that lifts at")
            && err.contains("the next iteration runs on backup"),
        "{err}"
    );
    assert!(err.contains("iteration 2 runs on backup (fallback: primary is limited until"), "{err}");
    assert!(!err.contains("waiting for the usage limit"), "no wait with a fallback at hand: {err}");
    // The primary is not tried again before its limit lifts: both tasks on the fallback.
    assert_eq!(
        agents_of(&repo),
        pairs(&[("primary", "rate_limited"), ("backup", "done"), ("backup", "done")])
    );
    assert_eq!((repo.spec_status("010-a"), repo.spec_status("020-b")), ("done".into(), "done".into()));
    assert_eq!(repo.read("a.txt"), "a\n");
    let status: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(status["tasks"][0]["attempts"], 0, "the limit used no attempt");
    // `ralph status` says which agent is limited, until when.
    assert!(status["run"]["agents_limited"]["primary"].as_str().is_some(), "{}", status["run"]);
    let text = repo.ralph(&["status"]).expect(0).stdout();
    assert!(text.contains("usage limits: primary until"), "{text}");

    // `ralph stats` splits the iterations by agent.
    let stats: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["stats", "--json"]).expect(0).stdout()).unwrap();
    let per: Vec<(String, u64, u64, u64)> = stats["per_agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap().to_string(),
                a["iterations"].as_u64().unwrap(),
                a["done"].as_u64().unwrap(),
                a["rate_limited"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per, vec![("backup".into(), 2, 2, 0), ("primary".into(), 1, 0, 1)]);
    let text = repo.ralph(&["stats"]).expect(0).stdout();
    assert!(text.contains("Agents\n  AGENT"), "{text}");
}

#[test]
fn the_limit_survives_a_restart_of_the_run() {
    let repo = two_agents(
        &limited("Claude AI usage limit reached. Try again in 2 hours."),
        DOES_ALL,
        "fallback = [\"backup\"]\n",
        "",
        TWO,
    );
    // Stopped by the budget after the fallback's first task (a limit counts no iteration).
    repo.ralph_within(60, &["run", "--max-iterations", "1"]).expect(3);
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.latest_run_dir().join("run.json")).unwrap())
            .unwrap();
    assert!(run_json["agents_limited"]["primary"].is_string(), "{run_json}");
    // Resumed: straight to the fallback, the primary not tried again.
    let run = repo.ralph_within(60, &["run"]).expect(0);
    assert!(
        run.stderr().contains("iteration 3 runs on backup (fallback: primary is limited until"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        agents_of(&repo),
        pairs(&[("primary", "rate_limited"), ("backup", "done"), ("backup", "done")])
    );
}

#[test]
fn ralph_goes_back_to_the_first_agent_once_its_limit_lifts() {
    // The primary's limit on 010-a lifts a second later; the fallback takes longer than that
    // on 010-a, so 020-b finds the primary free again.
    let primary = r#"
[[step]]
task = "010-a"
actions = [{ eprint = "Rate limit reached, try again in 1 seconds" }, { exit = 1 }]
[[step]]
task = "020-b"
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let backup = r#"
[[step]]
task = "010-a"
actions = [{ sleep = "1500ms" }, { write = { path = "a.txt", content = "a\n" } }, { promise = true }]
"#;
    let repo = two_agents(primary, backup, "fallback = [\"backup\"]\nfallback_after = \"0s\"\n", "", TWO);
    let run = repo.ralph_within(60, &["run"]).expect(0);
    let err = run.stderr();
    assert!(
        err.contains("iteration 3 runs on primary (back to primary: its usage limit has lifted)"),
        "{err}"
    );
    assert_eq!(
        agents_of(&repo),
        pairs(&[("primary", "rate_limited"), ("backup", "done"), ("primary", "done")])
    );
}

#[test]
fn with_every_agent_limited_ralph_waits_for_the_first_reset() {
    let backup = r#"
[[step]]
task = "010-a"
iteration = 2
actions = [{ eprint = "429 Too Many Requests: try again in 1 seconds" }, { exit = 1 }]
[[step]]
task = "010-a"
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
"#;
    let repo = two_agents(
        &limited("You've hit your usage limit. Try again in 1 hours."),
        backup,
        "fallback = [\"backup\"]\nfallback_after = \"0s\"\n",
        "",
        &[("010-a.md", "# A\n")],
    );
    let run = repo.ralph_within(60, &["run"]).expect(0);
    let err = run.stderr();
    assert!(err.contains("every agent is limited: waiting for backup's usage limit to lift: until"), "{err}");
    assert_eq!(
        agents_of(&repo),
        pairs(&[("primary", "rate_limited"), ("backup", "rate_limited"), ("backup", "done")])
    );
}

#[test]
fn an_authentication_failure_moves_to_the_next_agent_and_is_reported() {
    let repo = two_agents(
        &limited("Invalid API key · Please run /login"),
        DOES_ALL,
        "fallback = [\"backup\"]\n",
        "[budget]\nmax_attempts = 1\n",
        TWO,
    );
    let run = repo.ralph_within(60, &["run"]).expect(0);
    let err = run.stderr();
    assert!(
        err.contains("primary: the agent could not authenticate: Invalid API key · Please run /login; the run goes on without it: the next iteration runs on backup"),
        "{err}"
    );
    // Not tried again for the second task; the failure used no attempt.
    assert_eq!(
        agents_of(&repo),
        pairs(&[("primary", "agent_failed"), ("backup", "done"), ("backup", "done")])
    );
    assert_eq!(repo.records()[0]["cause"], "auth");
    assert_eq!(repo.spec_status("010-a"), "done");

    // With the fallback failing too, nothing is left: the run stops as it would without one.
    let repo = two_agents(
        &limited("Invalid API key · Please run /login"),
        &limited("Failed to authenticate. API Error: 401 authentication_error"),
        "fallback = [\"backup\"]\n",
        "",
        TWO,
    );
    let run = repo.ralph_within(60, &["run"]).expect(5);
    assert!(
        run.stderr().contains("stopped: the agent could not authenticate: Failed to authenticate"),
        "{}",
        run.stderr()
    );
    assert_eq!(agents_of(&repo), pairs(&[("primary", "agent_failed"), ("backup", "agent_failed")]));
}

#[test]
fn a_task_names_its_own_agent_in_its_front_matter() {
    let primary = r#"
[[step]]
task = "010-a"
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
"#;
    // No fallback chain: `agent:` alone picks the backup for 020-b.
    let repo = two_agents(
        primary,
        DOES_ALL,
        "",
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "---\nagent: backup\n---\n# B\n")],
    );
    let run = repo.ralph_within(60, &["run"]).expect(0);
    assert!(run.stderr().contains("iteration 2 runs on backup (020-b's own agent"), "{}", run.stderr());
    assert_eq!(agents_of(&repo), pairs(&[("primary", "done"), ("backup", "done")]));

    // An agent ralph.toml does not know is refused before anything happens.
    repo.write("specs/030-c.md", "---\nstatus: todo\nagent: nobody\n---\n# C\n");
    repo.commit_all("c");
    let head = repo.head();
    let run = repo.ralph(&["run"]).expect(2);
    assert!(
        run.stderr().contains("specs/030-c.md:3: agent `nobody` is not an agent ralph.toml knows"),
        "{}",
        run.stderr()
    );
    assert_eq!(repo.head(), head);
    let doctor = repo.ralph(&["doctor"]).0;
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("agent `nobody`"), "{doctor:?}");
}

#[test]
fn a_fallback_whose_program_is_missing_is_refused_before_anything_happens() {
    let repo = two_agents(DOES_ALL, DOES_ALL, "fallback = [\"backup\", \"pi\"]\n", "", TWO);
    let out = repo.cmd(&["run"]).env("PATH", "/usr/bin:/bin").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the pi preset (in [agent] fallback, or a task's `agent:`): `pi` was not found on PATH"),
        "{err}"
    );
    assert!(err.contains("[agents.pi] bin = \"/path/to/pi\""), "{err}");
    assert!(!repo.exists(".ralph/runs"));
    // `ralph doctor` says the same, and does not call the setup ready.
    let out = repo.cmd(&["doctor"]).env("PATH", "/usr/bin:/bin").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("fallback: backup, pi (after a usage limit longer than 5m)"), "{text}");
    assert!(text.contains("backup: found"), "{text}");
    assert!(text.contains("`pi` was not found on PATH"), "{text}");
}

#[test]
fn parallel_workers_fall_back_too() {
    let repo = two_agents(
        &limited("You've hit your usage limit. Try again in 1 hours."),
        DOES_ALL,
        "fallback = [\"backup\"]\n",
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n")],
    );
    let run = repo.ralph_within(90, &["run", "-j", "2"]).expect(0);
    let err = run.stderr();
    assert!(err.contains("primary hit a usage limit that lifts in"), "{err}");
    for id in ["010-a", "020-b", "030-c"] {
        assert_eq!(repo.spec_status(id), "done", "{id}: {err}");
    }
    let records = agents_of(&repo);
    let done: Vec<&(String, String)> = records.iter().filter(|(_, o)| o == "done").collect();
    assert_eq!(done.len(), 3, "{records:?}");
    assert!(done.iter().all(|(a, _)| a == "backup"), "{records:?}");
    // Workers that started before the limit was known may hit it too; none after.
    assert!(records.iter().filter(|(a, _)| a == "primary").all(|(_, o)| o == "rate_limited"), "{records:?}");
}

/// `[[notify]] on = ["agent_fallback"]`: the move to the fallback is sent once, naming both
/// agents and why.
#[test]
fn the_move_to_a_fallback_is_notified_with_both_agents_and_the_reason() {
    let out = tempfile::tempdir().unwrap();
    let sent = out.path().join("sent.jsonl");
    let script = format!(
        "cat >> {}; echo >> {}",
        shell_quote(&sent.to_string_lossy()),
        shell_quote(&sent.to_string_lossy())
    );
    let extra = format!(
        "[[notify]]\non = [\"agent_fallback\", \"run_end\"]\ncommand = [\"sh\", \"-c\", {}]\n",
        toml_str(&script)
    );
    let repo = two_agents(
        &limited("You've hit your usage limit. Try again in 1 hours."),
        DOES_ALL,
        "fallback = [\"backup\"]\n",
        &extra,
        TWO,
    );
    repo.ralph_within(60, &["run"]).expect(0);
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&sent)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let moves: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "agent_fallback").collect();
    assert_eq!(moves.len(), 1, "{events:?}");
    assert_eq!(
        (moves[0]["previous_agent"].as_str(), moves[0]["agent"].as_str()),
        (Some("primary"), Some("backup"))
    );
    assert!(moves[0]["reason"].as_str().unwrap().contains("usage limit"), "{}", moves[0]);
    assert_eq!(moves[0]["task"], "010-a");
    assert!(events.iter().any(|e| e["event"] == "run_end"), "{events:?}");
}
