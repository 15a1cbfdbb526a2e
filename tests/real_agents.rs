//! The real-agent suite: ralph drives the real agent CLIs (Claude Code, Codex, pi, Gemini CLI,
//! opencode), installed at pinned versions in tests/real-agents (`npm install --prefix
//! tests/real-agents`), against the scripted model server in tests/common on 127.0.0.1.
//!
//! For each preset: the agent's edit lands and is committed; tokens (and cost, where the CLI
//! reports it) reach `iterations.jsonl`; a 429 is waited out and the same task then completes
//! with no attempt counted; an authentication failure stops the run with a clear message; the
//! promise in a tool's output does not complete the task. With Claude Code, `ralph eval` scores a
//! two-case suite end to end. With Claude Code and Codex, a usage limit of Claude's moves the
//! run to Codex (`[agent] fallback`), and ralph goes back to Claude once the limit lifts.
//!
//! These tests are `#[ignore]`d, so a plain `cargo test` shows them as ignored: `scripts/test`
//! installs the CLIs (`npm install --prefix tests/real-agents`) and runs them, and a CLI that is
//! missing then fails its tests.

// Tests and their support fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::model_server::{Dialect, Mode, ModelServer, unix_now};
use common::*;
use std::path::PathBuf;
use std::time::Duration;

const FINAL: &str = "Done. <learning>the probe taught this</learning>\n<promise>COMPLETE</promise>";

#[derive(Clone, Copy)]
struct Cli {
    preset: &'static str,
    /// Under tests/real-agents/node_modules/.bin.
    bin: &'static str,
    /// Extra `[agent]` keys.
    toml: &'static str,
}

const CLAUDE: Cli = Cli { preset: "claude", bin: "claude", toml: "" };
const CODEX: Cli = Cli { preset: "codex", bin: "codex", toml: "" };
const PI: Cli = Cli {
    preset: "pi",
    bin: "pi",
    toml: "model = \"m\"\nargs = [\"--provider\", \"mock\", \"--offline\"]\n",
};
const GEMINI: Cli = Cli { preset: "gemini", bin: "gemini", toml: "model = \"gemini-2.5-flash\"\n" };
const OPENCODE: Cli = Cli { preset: "opencode", bin: "opencode", toml: "" };

fn bin_path(cli: Cli) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/real-agents/node_modules/.bin").join(cli.bin)
}

/// The CLI's binary; a missing one fails the test (it runs only when asked for).
fn installed(cli: Cli) -> PathBuf {
    let p = bin_path(cli);
    assert!(
        p.exists(),
        "{} is not installed at {}: scripts/test installs it (npm install --prefix tests/real-agents)",
        cli.preset,
        p.display()
    );
    p
}

/// A repository whose ralph.toml drives `cli` against `server`, with one task.
fn setup(cli: Cli, server: &ModelServer, checks: &[&str], extra: &str) -> TestRepo {
    let bin = installed(cli);
    let repo = TestRepo::new();
    let home = &repo.outside;
    let url = server.url();
    match cli.preset {
        "codex" => write(
            home.join(".codex/config.toml"),
            &format!(
                "model = \"m\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\nname = \"mock\"\nbase_url = \"{url}/v1\"\nenv_key = \"MOCK_API_KEY\"\nwire_api = \"responses\"\nsupports_websockets = false\nrequest_max_retries = 0\nstream_max_retries = 0\n\n# Otherwise every run asks github.com for plugins.\n[features]\nplugins = false\nremote_plugin = false\n\n[analytics]\nenabled = false\n"
            ),
        ),
        "pi" => {
            write(
                home.join("pi-agent/models.json"),
                &format!(
                    "{{\"providers\":{{\"mock\":{{\"baseUrl\":\"{url}/v1\",\"api\":\"openai-completions\",\"apiKey\":\"MOCK_API_KEY\",\"models\":[{{\"id\":\"m\"}}]}}}}}}"
                ),
            );
            write(
                home.join("pi-agent/settings.json"),
                "{\"retry\":{\"enabled\":false,\"provider\":{\"maxRetries\":0}}}",
            );
        }
        "gemini" => write(
            home.join(".gemini/settings.json"),
            "{\"security\":{\"auth\":{\"selectedType\":\"gemini-api-key\"}},\"privacy\":{\"usageStatisticsEnabled\":false},\"telemetry\":{\"enabled\":false},\"general\":{\"enableAutoUpdate\":false,\"enableAutoUpdateNotification\":false,\"maxAttempts\":1}}",
        ),
        "opencode" => write(
            home.join(".config/opencode/opencode.json"),
            &format!(
                "{{\"provider\":{{\"mock\":{{\"npm\":\"@ai-sdk/openai-compatible\",\"name\":\"Mock\",\"options\":{{\"baseURL\":\"{url}/v1\",\"apiKey\":\"{{env:MOCK_API_KEY}}\"}},\"models\":{{\"m\":{{\"name\":\"m\"}}}}}}}},\"model\":\"mock/m\",\"small_model\":\"mock/m\",\"autoupdate\":false,\"share\":\"disabled\"}}"
            ),
        ),
        _ => {}
    }
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let checks: Vec<String> = checks.iter().map(|c| toml_str(c)).collect();
    repo.write(
        "ralph.toml",
        &format!(
            "[agent]\npreset = \"{}\"\nbin = {}\n{}timeout = \"3m\"\nidle_timeout = \"2m\"\nretry_wait = \"1s\"\n\n[checks]\ncommands = [{}]\n{extra}",
            cli.preset,
            toml_str(&bin.to_string_lossy()),
            cli.toml,
            checks.join(", ")
        ),
    );
    repo.write("specs/010-hello.md", "# Hello\n\nCreate hello.txt containing hello.\n");
    repo.commit_all("set up ralph");
    repo
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `ralph ARGS` with the environment each CLI needs to reach the server.
fn ralph(repo: &TestRepo, server: &ModelServer, args: &[&str]) -> std::process::Command {
    let url = server.url();
    let home = repo.outside.to_string_lossy().into_owned();
    let mut cmd = repo.cmd(args);
    cmd.env("TMPDIR", format!("{home}/tmp"))
        .env("MOCK_API_KEY", "test-key")
        // Claude.
        .env("ANTHROPIC_BASE_URL", &url)
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("IS_SANDBOX", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        // pi.
        .env("PI_CODING_AGENT_DIR", format!("{home}/pi-agent"))
        // Gemini.
        .env("GEMINI_API_KEY", "test-key")
        .env("GOOGLE_GEMINI_BASE_URL", &url)
        // opencode: it fetches a plugin from the npm registry on every run; the server says 404.
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .env("npm_config_registry", format!("{url}/npm/"));
    cmd
}

fn run(repo: &TestRepo, server: &ModelServer, args: &[&str]) -> Run {
    Run(ralph(repo, server, args).output().unwrap())
}

fn status_attempts(repo: &TestRepo) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap();
    v["tasks"][0]["attempts"].clone()
}

fn edit_lands_and_is_committed(cli: Cli) {
    installed(cli);
    let server = ModelServer::start("echo hello > hello.txt", FINAL);
    let repo = setup(cli, &server, &["grep -q hello hello.txt"], "");
    let out = run(&repo, &server, &["run"]);
    assert_eq!(
        out.code(),
        0,
        "{}\nagent log:\n{}\nserver: {:?}",
        out.stderr(),
        repo.iter_file(1, "agent.log"),
        server.log()
    );
    assert_eq!(repo.read("hello.txt"), "hello\n", "{}", out.stderr());
    assert_eq!(repo.git(&["log", "-1", "--format=%s"]).trim(), "ralph(010-hello): Hello");
    assert_eq!(
        repo.git(&["show", "--name-only", "--format=", "HEAD"]),
        "AGENTS.md\nhello.txt\nspecs/010-hello.md\n"
    );
    assert_eq!(repo.dirt(), "");
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "done", "{r}");
    assert_eq!(r["promise"], true);
    let tokens = &r["tokens"];
    let total: u64 =
        ["input", "output", "cache_read", "cache_write"].iter().map(|k| tokens[k].as_u64().unwrap()).sum();
    assert!(total > 0, "{} reported no tokens: {r}", cli.preset);
    // Whether the CLI reports a cost is a fact of its preset.
    if ralph::agent::preset::find(cli.preset).is_some_and(|p| p.reports_cost) {
        assert!(r["cost_usd"].is_number(), "{} reported no cost: {r}", cli.preset);
    }
    assert!(r["agent_session_id"].is_string(), "{r}");
    assert!(r["final_message"].as_str().unwrap().contains("Done."), "{r}");
    assert!(repo.read("AGENTS.md").contains("- [L1] the probe taught this (010-hello)"));
    assert_eq!(r["learnings_added"], serde_json::json!(["the probe taught this"]));
}

fn rate_limit_is_waited_out_without_an_attempt(cli: Cli) {
    installed(cli);
    let server = ModelServer::start("echo hello > hello.txt", FINAL);
    // One attempt allowed: the limit must not use it.
    let repo = setup(
        cli,
        &server,
        &["grep -q hello hello.txt"],
        "[budget]\nmax_attempts = 1\nmax_consecutive_failures = 1\n",
    );
    server.set_mode(Mode::RateLimited(u32::MAX));
    let child = ralph(&repo, &server, &["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Lift the limit once ralph has recorded it: ralph waits at least a second before retrying.
    let records = || {
        std::fs::read_dir(repo.path(".ralph/runs"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| std::fs::read_to_string(e.unwrap().path().join("iterations.jsonl")).unwrap_or_default())
            .unwrap_or_default()
    };
    let limited = wait_for(240, || records().contains("\"outcome\":\"rate_limited\""));
    server.set_mode(Mode::Ok);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(limited, "{} never reported the limit: {err}\n{:?}", cli.preset, server.log());
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("waiting for the usage limit to lift"), "{err}");
    let r = repo.records();
    assert_eq!(r.first().unwrap()["outcome"], "rate_limited");
    assert_eq!(r.last().unwrap()["outcome"], "done");
    assert_eq!(repo.read("hello.txt"), "hello\n");
    assert_eq!(status_attempts(&repo), 0);
}

fn auth_failure_stops_the_run(cli: Cli) {
    installed(cli);
    let server = ModelServer::start("echo hello > hello.txt", FINAL);
    let repo = setup(cli, &server, &["true"], "");
    server.set_mode(Mode::Unauthorized);
    let out = run(&repo, &server, &["run"]).expect(5);
    assert!(out.stderr().contains("the agent could not authenticate"), "{}", out.stderr());
    assert_eq!(repo.records().len(), 1);
    assert_eq!(repo.records()[0]["outcome"], "agent_failed");
    assert_eq!(repo.dirt(), "");
}

fn promise_in_tool_output_does_not_count(cli: Cli) {
    installed(cli);
    let server = ModelServer::start(
        "echo '<promise>COMPLETE</promise>' > note.txt && cat note.txt",
        "Still working on it.",
    );
    let repo = setup(cli, &server, &["test -f note.txt"], "");
    run(&repo, &server, &["run", "--max-iterations", "1"]).expect(3);
    let r = &repo.records()[0];
    assert_eq!(r["outcome"], "progress", "{r}");
    assert_eq!(r["promise"], false);
    assert_eq!(repo.spec_status("010-hello"), "todo");
    // The agent did run the tool: its output is in the log, it just is not the agent's word.
    assert!(repo.iter_file(1, "agent.log").contains("<promise>COMPLETE</promise>"));
}

macro_rules! suite {
    ($($name:ident => $cli:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            #[ignore = "needs the agent CLIs: scripts/test installs them"]
            fn edit_lands_and_is_committed() {
                super::edit_lands_and_is_committed($cli);
            }
            #[test]
            #[ignore = "needs the agent CLIs: scripts/test installs them"]
            fn rate_limit_is_waited_out_without_an_attempt() {
                super::rate_limit_is_waited_out_without_an_attempt($cli);
            }
            #[test]
            #[ignore = "needs the agent CLIs: scripts/test installs them"]
            fn auth_failure_stops_the_run() {
                super::auth_failure_stops_the_run($cli);
            }
            #[test]
            #[ignore = "needs the agent CLIs: scripts/test installs them"]
            fn promise_in_tool_output_does_not_count() {
                super::promise_in_tool_output_does_not_count($cli);
            }
        }
    )*};
}

suite! {
    claude => CLAUDE,
    codex => CODEX,
    pi => PI,
    gemini => GEMINI,
    opencode => OPENCODE,
}

/// `ralph eval` end to end with a real CLI: each trial's agent works in a scratch worktree and
/// reports its tokens; the hidden checks decide the score; the user's checkout is untouched.
fn eval_scores_a_suite(cli: Cli) {
    installed(cli);
    let server = ModelServer::start("echo hello > hello.txt", FINAL);
    let repo = setup(cli, &server, &["true"], "");
    let suite = repo.outside.join("suite");
    for (id, spec, check) in [
        ("hello", "# Hello\n\nCreate hello.txt containing hello.\n", "grep -q hello hello.txt"),
        // The agent does not do this one: it only ever writes hello.txt.
        ("other", "# Other\n\nCreate other.txt containing other.\n", "grep -q other other.txt"),
    ] {
        write(suite.join(id).join("spec.md"), spec);
        let path = suite.join(id).join("check");
        write(path.clone(), &format!("#!/bin/sh\n{check}\n"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let head = repo.head();
    let out = run(
        &repo,
        &server,
        &["eval", "--suite", &suite.to_string_lossy(), "--max-iterations", "1", "--json"],
    );
    assert_eq!(out.code(), 0, "{}\nserver: {:?}", out.stderr(), server.log());
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let dir = repo.path(&format!(".ralph/eval/{}", v["id"].as_str().unwrap()));
    let agent_log = |case: &str| {
        std::fs::read_to_string(dir.join(case).join("1/iter-0001/agent.log")).unwrap_or_default()
    };
    assert_eq!(v["score"], 0.5, "{v}\nhello's agent log:\n{}", agent_log("hello"));
    let case = |id: &str| v["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone();
    assert_eq!(case("hello")["passed"], 1, "{v}");
    assert_eq!(case("other")["passed"], 0, "{v}");
    for id in ["hello", "other"] {
        let c = case(id);
        assert!(c["tokens"].as_u64().unwrap() > 0, "{} reported no tokens for {id}: {v}", cli.preset);
        assert_eq!(c["iterations"], 1.0, "{v}");
        assert_eq!(c["gamed"], 0, "{v}");
    }
    // The agent's work stayed in the scratch checkouts.
    assert!(!repo.exists("hello.txt"));
    assert_eq!(repo.head(), head);
    assert_eq!(repo.dirt(), "");
    assert_eq!(repo.git(&["worktree", "list"]).lines().count(), 1);
}

#[test]
#[ignore = "needs the agent CLIs: scripts/test installs them"]
fn claude_eval_scores_a_suite() {
    eval_scores_a_suite(CLAUDE);
}

/// Claude Code as the main agent with Codex as its fallback, both against `server`: the one
/// task's check wants hello.txt.
fn setup_fallback(server: &ModelServer, fallback_after: &str, specs: &[&str]) -> TestRepo {
    let (claude, codex) = (installed(CLAUDE), installed(CODEX));
    // Codex's configuration, as `setup` writes it.
    let repo = setup(CODEX, server, &["grep -q hello hello.txt"], "");
    let bin = |p: PathBuf| toml_str(&p.to_string_lossy());
    repo.write(
        "ralph.toml",
        &format!(
            "[agent]\npreset = \"claude\"\nbin = {}\ntimeout = \"3m\"\nidle_timeout = \"2m\"\nretry_wait = \"1s\"\nfallback = [\"codex\"]\nfallback_after = \"{fallback_after}\"\n\n[agents.codex]\nbin = {}\ntimeout = \"3m\"\nidle_timeout = \"2m\"\n\n[checks]\ncommands = [\"grep -q hello hello.txt\"]\n",
            bin(claude),
            bin(codex)
        ),
    );
    for (i, title) in specs.iter().enumerate() {
        repo.write(
            &format!("specs/0{}0-{}.md", i + 2, title.to_lowercase()),
            &format!("# {title}\n\nCreate hello.txt containing hello.\n"),
        );
    }
    repo.commit_all("claude, falling back to codex");
    repo
}

/// The agent and outcome of each record.
fn agents_and_outcomes(repo: &TestRepo) -> Vec<(String, String)> {
    repo.records()
        .iter()
        .map(|r| (r["agent"].as_str().unwrap_or("").to_string(), r["outcome"].as_str().unwrap().to_string()))
        .collect()
}

mod fallback {
    use super::*;

    /// Claude answers 429 with a reset an hour away: the next iteration runs on Codex, which
    /// does the task; the records name both; no attempt is used.
    #[test]
    #[ignore = "needs the agent CLIs: scripts/test installs them"]
    fn claude_limited_for_an_hour_falls_back_to_codex() {
        let server = ModelServer::start("echo hello > hello.txt", FINAL);
        let repo = setup_fallback(&server, "5m", &[]);
        server.set_mode(Mode::LimitedUntil { dialect: Dialect::Anthropic, reset: unix_now() + 3600 });
        let out = run(&repo, &server, &["run"]);
        let err = out.stderr();
        assert_eq!(out.code(), 0, "{err}\nserver: {:?}", server.log());
        assert!(err.contains("claude hit a usage limit that lifts at"), "{err}");
        assert!(err.contains("iteration 2 runs on codex (fallback: claude is limited until"), "{err}");
        let r = repo.records();
        assert_eq!(
            agents_and_outcomes(&repo),
            [("claude".to_string(), "rate_limited".to_string()), ("codex".into(), "done".into())]
        );
        // The reset Claude reported, an hour away, is the one ralph keeps.
        let reset: jiff::Timestamp = r[0]["limit_resets_at"].as_str().unwrap().parse().unwrap();
        let ended: jiff::Timestamp = r[0]["ended_at"].as_str().unwrap().parse().unwrap();
        let away = ended.duration_until(reset).as_secs();
        assert!((3500..=3700).contains(&away), "the reset is {away}s away: {}", r[0]);
        assert_eq!(r[1]["outcome"], "done", "{}", r[1]);
        assert!(r[1]["tokens"]["input"].as_u64().unwrap() > 0, "{}", r[1]);
        assert_eq!(repo.read("hello.txt"), "hello\n");
        assert_eq!(repo.spec_status("010-hello"), "done");
        assert_eq!(status_attempts(&repo), 0);
        // Claude was asked once: not again while its limit holds.
        let claude_calls = server.log().iter().filter(|l| l.contains("/v1/messages")).count();
        assert_eq!(claude_calls, 1, "{:?}", server.log());
    }

    /// Claude's limit lifts a few seconds after it is hit, later than `fallback_after`: Codex
    /// takes the first task (its tool call outlasts the limit), and the second runs on Claude
    /// again.
    #[test]
    #[ignore = "needs the agent CLIs: scripts/test installs them"]
    fn claude_runs_again_once_its_short_limit_lifts() {
        let server = ModelServer::start("sleep 6 && echo hello > hello.txt", FINAL);
        let repo = setup_fallback(&server, "1s", &["Again"]);
        server.set_mode(Mode::LimitedUntil { dialect: Dialect::Anthropic, reset: unix_now() + 5 });
        let out = run(&repo, &server, &["run"]);
        let err = out.stderr();
        assert_eq!(out.code(), 0, "{err}\nserver: {:?}", server.log());
        assert!(err.contains("back to claude: its usage limit has lifted"), "{err}");
        assert_eq!(
            agents_and_outcomes(&repo),
            [
                ("claude".to_string(), "rate_limited".to_string()),
                ("codex".into(), "done".into()),
                ("claude".into(), "done".into())
            ]
        );
        assert_eq!(
            (repo.spec_status("010-hello"), repo.spec_status("020-again")),
            ("done".into(), "done".into())
        );
        let stats: serde_json::Value =
            serde_json::from_str(&repo.ralph(&["stats", "--json"]).expect(0).stdout()).unwrap();
        let agents: Vec<&str> =
            stats["per_agent"].as_array().unwrap().iter().map(|a| a["agent"].as_str().unwrap()).collect();
        assert_eq!(agents, ["claude", "codex"], "{stats}");
    }
}

/// With `[sandbox] kind = "bwrap"`: the CLI starts inside the sandbox, finds its configuration
/// where ralph bound it into the otherwise empty home (Claude's `~/.claude`, pi's
/// `PI_CODING_AGENT_DIR`), reaches the model server on 127.0.0.1 and edits the worktree; the
/// edit is committed. What its tool writes to the home stays in the sandbox's.
fn edit_lands_from_inside_bwrap(cli: Cli) {
    installed(cli);
    let bwrap = std::process::Command::new("bwrap").args(["--ro-bind", "/", "/", "true"]).output();
    assert!(
        bwrap.is_ok_and(|o| o.status.success()),
        "bwrap is missing or cannot run here: scripts/test installs it (apt-get install bubblewrap)"
    );
    let server = ModelServer::start("echo hello > hello.txt; echo probe > \"$HOME/probe.txt\"", FINAL);
    let repo = setup(
        cli,
        &server,
        &["grep -q hello hello.txt"],
        "\n[sandbox]\nkind = \"bwrap\"\nenv = [\"MOCK_API_KEY\"]\n",
    );
    // Claude's own folder and file exist before the run: the sandbox binds them read-write.
    let claude_dir = repo.outside.join(".claude");
    std::fs::create_dir_all(&claude_dir).unwrap();
    let claude_json = repo.outside.join(".claude.json");
    std::fs::write(&claude_json, "{}").unwrap();
    // As root, Claude wants IS_SANDBOX=1: ralph sets it for an agent it sandboxes, so the
    // test's environment does not.
    let out = Run(ralph(&repo, &server, &["run"]).env_remove("IS_SANDBOX").output().unwrap());
    let log = repo.iter_file(1, "agent.log");
    assert_eq!(out.code(), 0, "{}\nagent log:\n{log}\nserver: {:?}", out.stderr(), server.log());
    assert_eq!(repo.read("hello.txt"), "hello\n");
    assert_eq!(repo.git(&["log", "-1", "--format=%s"]).trim(), "ralph(010-hello): Hello");
    assert!(repo.git(&["show", "--name-only", "--format=", "HEAD"]).contains("hello.txt"));
    assert_eq!(repo.records()[0]["outcome"], "done");
    // What it learned came out in its words, as outside.
    assert!(repo.read("AGENTS.md").contains("the probe taught this"));
    // The tool ran, in the sandbox's home.
    assert!(!server.log().is_empty());
    assert!(!repo.outside.join("probe.txt").exists(), "the agent's tool wrote the real home");
    if cli.preset == "claude" {
        let kept = std::fs::read_dir(&claude_dir).unwrap().count();
        assert!(kept > 0, "Claude wrote nothing into its bound ~/.claude");
        let json = std::fs::read_to_string(&claude_json).unwrap();
        assert_ne!(json, "{}", "Claude did not write its bound ~/.claude.json");
    }
}

mod sandbox {
    use super::*;

    #[test]
    #[ignore = "needs the agent CLIs and bwrap: scripts/test installs them"]
    fn claude_edits_from_inside_bwrap() {
        super::edit_lands_from_inside_bwrap(CLAUDE);
    }

    #[test]
    #[ignore = "needs the agent CLIs and bwrap: scripts/test installs them"]
    fn pi_edits_from_inside_bwrap() {
        super::edit_lands_from_inside_bwrap(PI);
    }

    #[test]
    #[ignore = "needs the agent CLIs and bwrap: scripts/test installs them"]
    fn codex_edits_from_inside_bwrap() {
        super::edit_lands_from_inside_bwrap(CODEX);
    }
}

/// For debugging a CLI by hand: `cargo test --test real_agents serve_by_hand -- --ignored
/// --nocapture` prints the server's URL and keeps it up for ten minutes (`scripts/test` skips
/// it).
#[test]
#[ignore = "a tool for debugging by hand, not a test"]
fn serve_by_hand() {
    let server = ModelServer::start("echo hello > hello.txt", FINAL);
    eprintln!("model server at {}", server.url());
    std::thread::sleep(Duration::from_secs(600));
}
