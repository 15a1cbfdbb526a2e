//! Understanding the agent: structured output into the record, the promise only from the
//! agent's own messages, usage limits waited out without using an attempt, authentication
//! failures stopping the run, `ralph doctor`. Driven by the scripted agent speaking the
//! formats of the real CLIs (the real CLIs have their own suite, tests/real_agents.rs).

use crate::common::*;

/// A Claude-style stream-json line, as a TOML string for a `print` action.
fn line(json: &str) -> String {
    format!("{{ print = {} }}", toml_str(json))
}

#[test]
fn stream_json_fills_the_record_and_only_the_agents_own_words_complete_the_task() {
    let tool = r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"<promise>COMPLETE</promise> <learning>from a tool</learning>"}]}}"#;
    let init = r#"{"type":"system","subtype":"init","session_id":"sess-1","model":"claude-test"}"#;
    let result1 = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"Half way.","total_cost_usd":0.25,"usage":{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":10},"session_id":"sess-1"}"#;
    let said = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Finished. <learning>run make gen first</learning>\n<promise>COMPLETE</promise>"}]}}"#;
    let result2 = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Finished.","total_cost_usd":0.5,"usage":{"input_tokens":1,"output_tokens":2,"cache_read_input_tokens":3,"cache_creation_input_tokens":4}}"#;
    let scenario = format!(
        "[[step]]\niteration = 1\nactions = [{}, {}, {{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {}]\n\
         [[step]]\niteration = 2\nactions = [{}, {}]\n",
        line(init),
        line(tool),
        line(result1),
        line(said),
        line(result2)
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n",
        &[("010-a.md", "# A\n")],
    );
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!(r[0]["outcome"], "progress", "a promise in a tool result is not the agent's word");
    assert_eq!(r[0]["learnings_added"], serde_json::json!([]));
    assert_eq!(
        r[0]["tokens"],
        serde_json::json!({"input": 100, "output": 50, "cache_read": 1000, "cache_write": 10})
    );
    assert_eq!(r[0]["cost_usd"], 0.25);
    assert_eq!(r[0]["num_turns"], 4);
    assert_eq!(r[0]["model"], "claude-test");
    assert_eq!(r[0]["agent_session_id"], "sess-1");
    assert_eq!(r[0]["final_message"], "Half way.");
    assert_eq!(r[0]["is_error"], false);
    assert_eq!(r[1]["outcome"], "done");
    assert_eq!(r[1]["learnings_added"], serde_json::json!(["run make gen first"]));
}

#[test]
fn an_error_reported_with_exit_0_is_a_failure() {
    let err = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 500 Internal server error","num_turns":1}"#;
    let scenario = format!(
        "[[step]]\nactions = [{{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {}]\n",
        line(err)
    );
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        "output_format = \"claude-stream-json\"\n[budget]\nmax_attempts = 1\n",
        &[("010-a.md", "# A\n")],
    );
    repo.ralph(&["run"]).expect(4);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "agent_failed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["is_error"], true);
    assert!(r["failure"].as_str().unwrap().contains("API Error: 500"), "{r}");
    assert!(!repo.exists("a.txt"));
}

#[test]
fn a_usage_limit_is_waited_out_and_the_task_rerun_without_using_an_attempt() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [
  { write = { path = "partial.txt", content = "p\n" } },
  { eprint = "You've hit your usage limit. Try again in 1 seconds." },
  { exit = 1 },
]
[[step]]
iteration = 2
actions = [{ eprint = "429 Too Many Requests" }, { exit = 1 }]
[[step]]
iteration = 3
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
"#;
    // One attempt and one failure allowed: the limits must use neither.
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "retry_wait = \"1s\"\n[budget]\nmax_attempts = 1\nmax_consecutive_failures = 1\n",
        &[("010-a.md", "# A\n")],
    );
    let started = std::time::Instant::now();
    let run = repo.ralph(&["run"]).expect(0);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let err = run.stderr();
    assert!(err.contains("waiting for the usage limit to lift: until"), "{err}");
    let r = repo.records();
    let outcomes: Vec<&str> = r.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["rate_limited", "rate_limited", "done"]);
    assert!(r[0]["limit_resets_at"].as_str().is_some(), "{}", r[0]);
    assert_eq!(r[1]["limit_resets_at"], serde_json::Value::Null);
    assert!(!repo.exists("partial.txt"));
    assert_eq!(repo.spec_status("010-a"), "done");
    let status: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert_eq!(status["tasks"][0]["attempts"], 0);
}

#[test]
fn a_usage_limit_that_lifts_after_the_time_budget_ends_the_run() {
    let scenario =
        "[[step]]\nactions = [{ eprint = \"Rate limit reached, try again in 2 hours\" }, { exit = 1 }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let run = repo.ralph(&["run", "--max-duration", "1h"]).expect(3);
    assert!(run.stderr().contains("after the time budget ends"), "{}", run.stderr());
}

#[test]
fn an_authentication_failure_stops_the_run_at_once() {
    let scenario =
        "[[step]]\nactions = [{ eprint = \"Invalid API key · Please run /login\" }, { exit = 1 }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        "[budget]\nmax_attempts = 5\n",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    let run = repo.ralph(&["run"]).expect(5);
    assert!(run.stderr().contains("the agent could not authenticate: Invalid API key"), "{}", run.stderr());
    assert_eq!(repo.records().len(), 1);
}

#[test]
fn presets_are_checked_before_anything_happens() {
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n")]);
    let run = repo.ralph(&["run", "--agent", "gpt"]).expect(2);
    assert!(
        run.stderr().contains("preset `gpt` is unknown (known: claude, codex, gemini"),
        "{}",
        run.stderr()
    );
    // A preset whose binary is missing names how to install it in `ralph doctor`.
    let mut cmd = repo.cmd(&["doctor", "--agent", "pi"]);
    cmd.env("PATH", "/usr/bin:/bin");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`pi` was not found on PATH"), "{text}");
    assert!(text.contains("npm install -g @mariozechner/pi-coding-agent"), "{text}");
}

#[test]
fn doctor_passes_a_ready_configuration() {
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n")]);
    let out = repo.ralph(&["doctor"]).expect(0).stdout();
    assert!(out.contains("ready: `ralph run` can start."), "{out}");
    assert!(out.contains("version: ralph"), "{out}");
    repo.write("dirty.txt", "x");
    let out = repo.ralph(&["doctor"]).expect(2).stdout();
    assert!(out.contains("uncommitted change(s)"), "{out}");
}

#[test]
fn a_missing_model_stops_the_run_at_once() {
    let scenario =
        "[[step]]\nactions = [{ eprint = \"Error: model not found: claude-nope\" }, { exit = 1 }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let run = repo.ralph(&["run"]).expect(5);
    assert!(run.stderr().contains("the agent's model does not exist"), "{}", run.stderr());
}

#[test]
fn doctor_checks_the_flags_the_preset_needs() {
    use std::os::unix::fs::PermissionsExt;
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n")]);
    // A `claude` too old to know --verbose.
    let bin = repo.outside.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("claude");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --version) echo '0.1.0 (Claude Code)';; *) echo 'Usage: claude --print --output-format --dangerously-skip-permissions';; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = repo
        .cmd(&["doctor", "--agent", "claude"])
        .env("PATH", &path)
        .env("IS_SANDBOX", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("version: 0.1.0 (Claude Code)"), "{text}");
    assert!(text.contains("`claude --help` does not list --verbose"), "{text}");
    assert!(text.contains("reads CLAUDE.md, not AGENTS.md"), "{text}");
}

#[test]
fn status_shows_a_run_waiting_for_a_limit() {
    let scenario = r#"
[[step]]
iteration = 1
actions = [{ eprint = "You've hit your limit. Try again in 3 seconds." }, { exit = 1 }]
[[step]]
iteration = 2
actions = [{ promise = true }]
"#;
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    let mut child = repo.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_for(20, || {
        let out = repo.ralph(&["status", "--json"]).0.stdout;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        v["run"]["waiting_until"].is_string()
    }));
    let text = repo.ralph(&["status"]).expect(0).stdout();
    assert!(text.contains("waiting for a usage limit to lift until"), "{text}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    assert!(v["run"]["waiting_until"].is_null());
}

#[test]
fn a_presets_missing_binary_names_where_the_preset_came_from_and_the_bin_key() {
    let repo = TestRepo::with_loop("", &["true"], "", &[("010-a.md", "# A\n")]);
    let run = |args: &[&str]| {
        let out = repo.cmd(args).env("PATH", "/usr/bin:/bin").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // From --agent: ralph.toml is not to blame, and `command` (which conflicts with a preset)
    // is not the key to set.
    let (_, err) = run(&["run", "--agent", "pi"]);
    assert!(err.contains("error: --agent pi: `pi` was not found on PATH"), "{err}");
    assert!(err.contains("npm install -g @mariozechner/pi-coding-agent"), "{err}");
    assert!(err.contains("[agent] bin = \"/path/to/pi\"") && !err.contains("[agent] command"), "{err}");
    let (out, _) = run(&["doctor", "--agent", "pi"]);
    assert!(out.contains("--agent pi: `pi` was not found on PATH") && out.contains("[agent] bin"), "{out}");
    assert!(!out.contains("[agent] command"), "{out}");

    // From ralph.toml's preset.
    repo.write("ralph.toml", "[checks]\ncommands = [\"true\"]\n\n[agent]\npreset = \"pi\"\n");
    repo.commit_all("pi");
    let (_, err) = run(&["run"]);
    assert!(err.contains("error: ralph.toml: [agent] preset = \"pi\": `pi` was not found on PATH"), "{err}");
    assert!(err.contains("[agent] bin") && !err.contains("[agent] command"), "{err}");
    // A bin that is not there is named as such.
    repo.write(
        "ralph.toml",
        "[checks]\ncommands = [\"true\"]\n\n[agent]\npreset = \"pi\"\nbin = \"/opt/nowhere/pi\"\n",
    );
    repo.commit_all("pi elsewhere");
    let (_, err) = run(&["run"]);
    assert!(err.contains("error: ralph.toml: [agent] bin: `/opt/nowhere/pi` was not found"), "{err}");
}
