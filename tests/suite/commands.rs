//! `ralph init`, `ralph status`, `ralph logs`, `ralph demo`, `ralph doctor`; output into a closed pipe.

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

#[test]
fn logs_render_an_agents_structured_output_and_the_run_shows_its_tool_calls() {
    // The scripted agent speaks Claude's stream-json here: a tool call, its result, a message.
    let lines = [
        r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}"#.to_string(),
        r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"cargo test --quiet"}}]}}"#.to_string(),
        serde_json::json!({"type":"user","message":{"content":[{"type":"tool_result","content":"test a ... ok\ntest b ... ok\ntest c ... ok\ntest d ... ok\ntest e ... ok\ntest f ... ok","is_error":false}]}}).to_string(),
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"All green.\n<promise>COMPLETE</promise>"}]}}"#.to_string(),
        r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"usage":{"input_tokens":1200,"output_tokens":300},"total_cost_usd":0.25}"#.to_string(),
    ];
    let actions: Vec<String> = lines.iter().map(|l| format!("{{ print = {} }}", toml_str(l))).collect();
    let scenario = format!("[[step]]\nactions = [{}]\n", actions.join(", "));
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n",
        &[("010-a.md", "# A\n")],
    );
    let run = repo.ralph(&["run"]).expect(0);
    // Not a terminal: plain timestamped lines, the agent's tool call among them, tokens and cost.
    let err = run.stderr();
    assert!(err.contains("iteration 1 · 010-a ·   Bash cargo test --quiet"), "{err}");
    assert!(err.contains("→ done in") && err.contains("1.5k tokens · $0.25"), "{err}");
    assert!(!err.contains("\x1b["), "no colour outside a terminal: {err}");

    let shown = repo.ralph(&["logs", "1"]).expect(0).stdout();
    assert_eq!(
        shown,
        "▸ Bash  cargo test --quiet\n  │ test a ... ok\n  │ test b ... ok\n  │ test c ... ok\n  │ test d ... ok\n  │ … 2 more lines\n● All green.\n  <promise>COMPLETE</promise>\n"
    );
    let raw = repo.ralph(&["logs", "1", "--raw"]).expect(0).stdout();
    assert_eq!(raw, lines.join("\n") + "\n");
    // Following a finished run renders the same way.
    let followed = repo.ralph(&["logs", "-f"]).expect(0).stdout();
    assert!(followed.contains("==> iteration 1 <==\n▸ Bash  cargo test --quiet\n"), "{followed}");
}

/// Runs ralph on a terminal (a PTY, 120 columns) and returns everything it drew.
fn on_a_terminal(repo: &TestRepo, args: &[&str], no_color: bool) -> String {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pair = native_pty_system()
        .openpty(PtySize { rows: 30, cols: 120, pixel_width: 0, pixel_height: 0 })
        .unwrap();
    let mut cmd = CommandBuilder::new(RALPH);
    cmd.args(args);
    cmd.cwd(&repo.root);
    cmd.env_clear();
    for (k, v) in [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", repo.outside.to_string_lossy().into_owned()),
        ("TERM", "xterm-256color".into()),
        ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        ("GIT_AUTHOR_NAME", "Test".into()),
        ("GIT_AUTHOR_EMAIL", "test@example.invalid".into()),
        ("GIT_COMMITTER_NAME", "Test".into()),
        ("GIT_COMMITTER_EMAIL", "test@example.invalid".into()),
    ] {
        cmd.env(k, v);
    }
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let reading = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut out);
        out
    });
    let status = child.wait().unwrap();
    drop(pair.master);
    let out = String::from_utf8_lossy(&reading.join().unwrap()).into_owned();
    assert!(status.success(), "{out}");
    out
}

#[test]
fn on_a_terminal_the_run_shows_a_live_display_with_the_agents_activity() {
    let tool = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"cargo test --workspace"}}]}}"#;
    let done = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"<promise>COMPLETE</promise>"}]}}"#;
    let scenario = format!(
        "[[step]]\nactions = [{{ print = {} }}, {{ sleep = \"1500ms\" }}, {{ print = {} }}]\n",
        toml_str(tool),
        toml_str(done)
    );
    let repo = || {
        TestRepo::with_loop(
            &scenario,
            &["true"],
            "output_format = \"claude-stream-json\"\n[budget]\nmax_cost = 5.0\n",
            &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
        )
    };
    let shown = on_a_terminal(&repo(), &["run"], false);
    // The live display: where the loop is, what it has left, and under it the agent's tool call.
    assert!(
        shown.contains("iteration 1 · 010-a · agent · 0 tokens · $0.00 · left: 100 iterations, $5.00"),
        "{shown}"
    );
    assert!(shown.contains("└ Bash cargo test --workspace"), "{shown}");
    // Coloured outcomes on a terminal...
    assert!(shown.contains("\x1b[32mdone\x1b[0m"), "{shown}");
    // ...but not with NO_COLOR (the display itself stays).
    let plain = on_a_terminal(&repo(), &["run"], true);
    assert!(!plain.contains("\x1b[32m") && !plain.contains("\x1b[1m"), "{plain}");
    assert!(plain.contains("└ Bash cargo test --workspace") && plain.contains("→ done in"), "{plain}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n")]);
    // `ralph doctor | head -0`: the reader is gone before the first line.
    for (args, code) in [(&["doctor"][..], 0), (&["status"][..], 0), (&["learnings"][..], 0)] {
        let mut child = repo
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    }
}

#[test]
fn doctor_refuses_what_run_refuses() {
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "---\npriority: soon\n---\n# A\n")]);
    let out = repo.ralph(&["doctor"]).expect(2).stdout();
    assert!(
        out.contains(
            "`ralph run` would refuse to start: specs/010-a.md:2: priority `soon` is not a whole number"
        ),
        "{out}"
    );
    assert!(!out.contains("ready:"), "{out}");
    repo.ralph(&["run"]).expect(2);

    repo.write("specs/010-a.md", "# A\n");
    repo.write("prompt.md", "{{ task.title\n");
    repo.write_config(&["true"], "[prompt]\ntemplate = \"prompt.md\"\n");
    repo.commit_all("a broken template");
    let out = repo.ralph(&["doctor"]).expect(2).stdout();
    assert!(out.contains("`ralph run` would refuse to start: prompt.md"), "{out}");
}

#[test]
fn doctor_runs_the_checks_and_says_what_each_means() {
    let checks = [
        "true",
        "echo 'test tests::a ... FAILED'; echo 'test result: FAILED. 1 passed; 1 failed'; exit 101",
        "echo collection error; exit 2",
        "no-such-check-command --all",
    ];
    let repo = TestRepo::with_loop("", &checks, "", &[("010-a.md", "# A\n")]);
    let out = Run(repo.cmd(&["doctor"]).env("TMPDIR", &repo.outside).output().unwrap()).expect(2).stdout();
    assert!(out.contains("ok       `true` passes"), "{out}");
    assert!(
        out.contains("fails (exit 101): 1 test(s) already fail (tests::a); they may go on failing"),
        "{out}"
    );
    assert!(
        out.contains(
            "`echo collection error; exit 2` fails (exit 2) and names no failing test: such a check is never tolerated as a known failure: it must pass before ralph commits anything"
        ),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM  `no-such-check-command --all` cannot run (exit 127: command not found)"),
        "{out}"
    );
    // The checks' output is kept outside the repository for a look.
    let log = out.split("their output: ").nth(1).and_then(|l| l.lines().next()).unwrap();
    assert!(log.starts_with(&*repo.outside.to_string_lossy()), "{out}");
    assert!(std::fs::read_to_string(log).unwrap().contains("collection error"));
    assert!(!out.contains("ready:"), "{out}");

    // Checks that run, even failing, leave a run able to start.
    repo.write_config(&[checks[0], checks[2]], "");
    repo.commit_all("runnable checks");
    let out = Run(repo.cmd(&["doctor"]).env("TMPDIR", &repo.outside).output().unwrap()).expect(0).stdout();
    assert!(out.contains("ready: `ralph run` can start."), "{out}");
}

#[test]
fn the_agents_terminal_control_sequences_never_reach_the_terminal() {
    // OSC 52 writes the clipboard, OSC 0 sets the window title, CSI 2J clears the screen.
    let osc52 = "\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}";
    let hostile = format!("before{osc52}\u{1b}]0;pwned\u{1b}\\\u{1b}[2J\u{1b}[32mgreen\u{1b}[0m after");
    let clean = |s: &str| !s.contains("ZWNobyBwd25lZA") && !s.contains("pwned") && !s.contains("\u{1b}]");

    // A plain-text agent: its log holds the bytes as printed.
    let scenario =
        format!("[[step]]\nactions = [{{ print = {} }}, {{ promise = true }}]\n", toml_str(&hostile));
    let repo = TestRepo::with_loop(&scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    // Into a file or a pipe, --raw gives the bytes as they are...
    let raw = repo.ralph(&["logs", "1", "--raw"]).expect(0).stdout();
    assert!(raw.contains(osc52), "{raw:?}");
    // ...on a terminal, never the sequences; colours stay.
    let shown = on_a_terminal(&repo, &["logs", "1", "--raw"], false);
    assert!(clean(&shown) && shown.contains("before") && shown.contains("\u{1b}[32mgreen"), "{shown:?}");
    assert!(!shown.contains("\u{1b}[2J"), "{shown:?}");
    let shown = repo.ralph(&["logs", "1"]).expect(0).stdout();
    assert!(clean(&shown) && shown.contains("before") && shown.contains(" after"), "{shown:?}");

    // A structured agent: the rendered view (wherever it goes) and the live display.
    let lines = [
        serde_json::json!({"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command": format!("echo {hostile}")}}]}}).to_string(),
        serde_json::json!({"type":"assistant","message":{"content":[{"type":"text","text": format!("{hostile}\n<promise>COMPLETE</promise>")}]}}).to_string(),
    ];
    let actions: Vec<String> = lines.iter().map(|l| format!("{{ print = {} }}", toml_str(l))).collect();
    let scenario = format!("[[step]]\nactions = [{}, {{ sleep = \"1500ms\" }}]\n", actions.join(", "));
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n",
        &[("010-a.md", "# A\n")],
    );
    let live = on_a_terminal(&repo, &["run"], false);
    assert!(clean(&live) && live.contains("Bash echo before"), "{live:?}");
    let shown = repo.ralph(&["logs", "1"]).expect(0).stdout();
    assert!(clean(&shown) && shown.contains("● before"), "{shown:?}");
}
