//! `[[notify]]`: what a person away from the terminal receives. A webhook on 127.0.0.1 gets
//! the documented JSON for a blocked task, a spent budget and the run's end; a command gets
//! it on stdin and in `RALPH_EVENT_*`; a notifier that hangs or fails never changes the run's
//! result nor holds the loop back for more than its timeout, once, at the end; a parallel
//! run's events come from its coordinator.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the test server answers.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Status500,
    /// Reads the request and never answers.
    Hang,
}

/// One request the server received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on 127.0.0.1 that records what it is sent. Its threads block on the
/// listener until the test process ends; each connection is read once.
struct Server {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted (a hanging answer records its request too).
    connections: Arc<Mutex<u32>>,
}

impl Server {
    fn start(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let connections: Arc<Mutex<u32>> = Arc::default();
        let (g, c) = (got.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                *c.lock().unwrap() += 1;
                let g = g.clone();
                std::thread::spawn(move || serve(stream, answer, &g));
            }
        });
        Server { url, got, connections }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.received().iter().map(Received::json).collect()
    }

    fn event(&self, name: &str) -> serde_json::Value {
        let all = self.events();
        all.iter()
            .find(|e| e["event"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} event among {all:#?}"))
    }
}

fn serve(stream: TcpStream, answer: Answer, got: &Mutex<Vec<Received>>) {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    got.lock().unwrap().push(Received { path, headers, body });
    let mut stream = stream;
    match answer {
        Answer::Ok => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
        Answer::Status500 => {
            let _ = stream.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom",
            );
        }
        // Holds the connection open without a word until the client gives up.
        Answer::Hang => {
            let mut sink = [0u8; 64];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

const BLOCK_DONE_LEFT: &str = r#"
[[step]]
task = "010-flaky"
actions = [{ print = "tried" }]
[[step]]
task = "020-good"
actions = [{ write = { path = "ok.txt", content = "ok\n" } }, { promise = true }]
"#;

/// Three tasks: the first fails its checks once and is blocked (`max_attempts = 1`), the
/// second is done, the third is left when `--max-iterations 2` is spent.
fn block_done_left(notify: &str) -> TestRepo {
    TestRepo::with_loop(
        BLOCK_DONE_LEFT,
        &["test -f ok.txt"],
        &format!("\n[budget]\nmax_attempts = 1\n\n{notify}"),
        &[
            ("010-flaky.md", "# Flaky\n\nNever passes.\n"),
            ("020-good.md", "# Good\n\nWrite ok.txt.\n"),
            ("030-later.md", "# Later\n"),
        ],
    )
}

#[test]
fn a_webhook_receives_the_documented_json_for_a_blocked_task_a_spent_budget_and_the_run_end() {
    let server = Server::start(Answer::Ok);
    let repo = block_done_left(&format!(
        "[[notify]]\non = [\"run_end\", \"task_blocked\", \"budget_spent\", \"task_done\"]\nwebhook = {}\ntimeout = \"5s\"\n",
        toml_str(&server.url)
    ));
    let run = repo.ralph_within(120, &["run", "--max-iterations", "2"]).expect(3);
    let summary = run.stderr().lines().last().unwrap_or("").to_string();
    assert!(summary.starts_with("ralph: stopped: the iteration budget (2) is spent"), "{}", run.stderr());

    let received = server.received();
    assert_eq!(received.len(), 4, "{received:#?}");
    for r in &received {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let run_id = repo.records()[0]["run_id"].as_str().unwrap().to_string();
    let root = repo.root.display().to_string();
    for e in server.events() {
        assert_eq!(e["run_id"], run_id.as_str(), "{e}");
        assert_eq!(e["repo"], root.as_str(), "{e}");
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["text"].as_str().unwrap().starts_with("[repo] "), "{e}");
        // Every documented field is there, null or not.
        for k in [
            "event",
            "run_id",
            "repo",
            "timestamp",
            "task",
            "title",
            "iteration",
            "outcome",
            "cause",
            "reason",
            "commit",
            "worker",
            "counts",
            "summary",
            "report",
            "exit_code",
            "streak",
            "agent",
            "previous_agent",
            "text",
        ] {
            assert!(e.get(k).is_some(), "{k} missing: {e}");
        }
    }

    let blocked = server.event("task_blocked");
    assert_eq!(blocked["task"], "010-flaky");
    assert_eq!(blocked["title"], "Flaky");
    assert_eq!(blocked["iteration"], 1);
    assert_eq!(blocked["outcome"], "checks_failed");
    assert_eq!(blocked["cause"], "checks_failed");
    assert!(blocked["reason"].as_str().unwrap().contains("1 failed attempts"), "{blocked}");
    assert_eq!(blocked["counts"], serde_json::json!({"checks_failed": 1}));

    let done = server.event("task_done");
    assert_eq!((done["task"].as_str(), done["iteration"].as_u64()), (Some("020-good"), Some(2)));
    assert_eq!(done["commit"], repo.head().as_str());

    let spent = server.event("budget_spent");
    assert_eq!(spent["reason"], "stopped: the iteration budget (2) is spent");

    let end = server.event("run_end");
    assert_eq!(end["exit_code"], 3);
    assert_eq!(end["summary"], summary.as_str());
    assert_eq!(end["counts"], serde_json::json!({"done": 1, "checks_failed": 1}));
    let report = std::path::PathBuf::from(end["report"].as_str().unwrap());
    assert_eq!(report, repo.latest_run_dir().join("report.html"));
    assert!(std::fs::read_to_string(&report).unwrap().contains("020-good"));
    // Each delivery is a line of notify.log.
    let log = std::fs::read_to_string(repo.latest_run_dir().join("notify.log")).unwrap();
    assert_eq!(log.matches("delivered (HTTP 200)").count(), 4, "{log}");
}

#[test]
fn a_notifier_that_hangs_or_fails_changes_nothing_and_holds_the_run_back_one_timeout_at_most() {
    let scenario: String = ["010-a", "020-b", "030-c"]
        .iter()
        .map(|t| format!("[[step]]\ntask = \"{t}\"\nactions = [{{ write = {{ path = \"{t}.txt\", content = \"x\\n\" }} }}, {{ promise = true }}]\n"))
        .collect();
    let specs = [("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n")];
    // The same run without notifiers: what the result must be, and how long it takes here.
    let plain = TestRepo::with_loop(&scenario, &["true"], "", &specs);
    let t0 = Instant::now();
    plain.ralph_within(120, &["run"]).expect(0);
    let plain_took = t0.elapsed();

    let hang = Server::start(Answer::Hang);
    let fail = Server::start(Answer::Status500);
    let all = "on = [\"run_end\", \"task_done\", \"task_blocked\", \"budget_spent\", \"rate_limited\", \"checks_red_streak\"]";
    let notify = format!(
        "[[notify]]\n{all}\nwebhook = {}\ntimeout = \"1s\"\n\n[[notify]]\n{all}\nwebhook = {}\ntimeout = \"1s\"\nretries = 0\n",
        toml_str(&hang.url),
        toml_str(&fail.url)
    );
    let repo = TestRepo::with_loop(&scenario, &["true"], &notify, &specs);
    let t0 = Instant::now();
    let run = repo.ralph_within(120, &["run"]).expect(0);
    let took = t0.elapsed();

    // The result is the plain run's.
    let outcomes = |r: &TestRepo| r.records().iter().map(|r| r["outcome"].to_string()).collect::<Vec<_>>();
    assert_eq!(outcomes(&repo), outcomes(&plain));
    assert_eq!(outcomes(&repo), ["\"done\"", "\"done\"", "\"done\""]);
    for t in ["010-a", "020-b", "030-c"] {
        assert_eq!(repo.spec_status(t), "done");
    }
    // Three task_done deliveries to the hanging server would take 3 × (1s + 1s + 1s and the
    // backoff) if the loop waited for them: it waits for none, and at the end for one timeout
    // (1s). The bound is generous: the plain run's time, 1s, and 4s for a slow machine.
    assert!(took < plain_took + Duration::from_secs(5), "took {took:?}, {plain_took:?} without notifiers");
    assert!(*hang.connections.lock().unwrap() >= 1, "the hanging server was never called");
    // The failures are said, and the run went on.
    let err = run.stderr();
    assert!(err.contains("notify: task_done could not be sent to webhook"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("still under way after 1s given up"), "{err}");
    assert!(err.lines().last().unwrap().starts_with("ralph: backlog done"), "{err}");
    assert_eq!(
        fail.events().iter().filter(|e| e["event"] == "task_done").count(),
        3,
        "no retry with retries = 0"
    );
}

#[test]
fn a_command_notifier_gets_the_event_json_on_stdin_and_in_ralph_event_variables() {
    let repo = TestRepo::new();
    let out = repo.outside.join("events");
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "cat > {o}/$RALPH_EVENT.json; env | grep '^RALPH_EVENT' | sort > {o}/$RALPH_EVENT.env",
        o = shell_quote(&out.to_string_lossy())
    );
    repo.set_scenario(
        "[[step]]\ntask = \"010-one\"\nactions = [{ write = { path = \"one.txt\", content = \"1\\n\" } }, { promise = true }]\n",
    );
    repo.write_config(
        &["true"],
        &format!(
            "\n[[notify]]\non = [\"task_done\", \"run_end\"]\ncommand = [\"sh\", \"-c\", {}]\n",
            toml_str(&script)
        ),
    );
    repo.write("specs/010-one.md", "# One\n");
    repo.commit_all("set up");
    repo.ralph_within(120, &["run"]).expect(0);

    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("task_done.json")).unwrap()).unwrap();
    assert_eq!((done["event"].as_str(), done["task"].as_str()), (Some("task_done"), Some("010-one")));
    assert_eq!(done["commit"], repo.head().as_str());
    let env = std::fs::read_to_string(out.join("task_done.env")).unwrap();
    for want in [
        "RALPH_EVENT=task_done".to_string(),
        "RALPH_EVENT_TASK=010-one".into(),
        "RALPH_EVENT_ITERATION=1".into(),
        "RALPH_EVENT_OUTCOME=done".into(),
        format!("RALPH_EVENT_COMMIT={}", repo.head()),
        format!("RALPH_EVENT_REPO={}", repo.root.display()),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in\n{env}");
    }
    let end: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_end.json")).unwrap()).unwrap();
    assert_eq!(end["exit_code"], 0);
    assert!(
        end["summary"].as_str().unwrap().starts_with("ralph: backlog done — 1 iteration(s): 1 done"),
        "{end}"
    );
    let env = std::fs::read_to_string(out.join("run_end.env")).unwrap();
    assert!(env.lines().any(|l| l == "RALPH_EVENT_EXIT_CODE=0"), "{env}");
    assert!(env.lines().any(|l| l == "RALPH_EVENT_COUNTS={\"done\":1}"), "{env}");
}

#[test]
fn a_slow_command_notifier_outlives_the_next_iterations_sweep_of_escaped_processes() {
    let repo = TestRepo::new();
    let out = repo.outside.join("events");
    std::fs::create_dir(&out).unwrap();
    // Still asleep when the next iteration's agent ends and ralph ends whatever escaped it.
    let script = format!("sleep 1.5; cat > {}/$RALPH_EVENT_TASK.json", shell_quote(&out.to_string_lossy()));
    repo.set_scenario(
        "[[step]]\ntask = \"010-a\"\nactions = [{ write = { path = \"a.txt\", content = \"1\\n\" } }, { promise = true }]\n[[step]]\ntask = \"020-b\"\nactions = [{ sleep = \"300ms\" }, { write = { path = \"b.txt\", content = \"1\\n\" } }, { promise = true }]\n",
    );
    repo.write_config(
        &["true"],
        &format!("\n[[notify]]\non = [\"task_done\"]\ncommand = [\"sh\", \"-c\", {}]\n", toml_str(&script)),
    );
    repo.write("specs/010-a.md", "# A\n");
    repo.write("specs/020-b.md", "# B\n");
    repo.commit_all("set up");
    repo.ralph_within(120, &["run"]).expect(0);
    for t in ["010-a", "020-b"] {
        let ev: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("{t}.json"))).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{t}'s task_done was not delivered whole: {e}"));
        assert_eq!(ev["task"], t);
    }
    // Not an escapee of the agent's: nothing was ended.
    for r in repo.records() {
        assert!(r.get("escaped_ended").is_none(), "{r}");
    }
}

#[test]
fn a_notifier_whose_environment_variable_is_missing_stops_the_run_before_it_starts() {
    let repo = TestRepo::with_loop(
        "",
        &["true"],
        "\n[[notify]]\nslack = { url_env = \"RALPH_TEST_SLACK_URL_UNSET\" }\n",
        &[("010-a.md", "# A\n")],
    );
    let err = repo.ralph(&["run"]).expect(2).stderr();
    assert!(err.contains("ralph.toml:"), "{err}");
    assert!(err.contains("the environment variable RALPH_TEST_SLACK_URL_UNSET is not set"), "{err}");
    assert!(!repo.exists(".ralph/runs"), "nothing ran");
    // `ralph doctor` says so too.
    let doctor = repo.ralph(&["doctor"]).expect(2).stdout();
    assert!(doctor.contains("the environment variable RALPH_TEST_SLACK_URL_UNSET is not set"), "{doctor}");

    // A malformed entry names the file and the line.
    repo.write_config(
        &["true"],
        "\n[[notify]]\non = [\"run_end\"]\nwebhook = \"https://a\"\ncommand = [\"x\"]\n",
    );
    let err = repo.ralph(&["run"]).expect(2).stderr();
    assert!(err.contains("ralph.toml:"), "{err}");
    assert!(err.contains("[[notify]] #1: sets webhook and command"), "{err}");
}

#[test]
fn a_slack_url_from_the_environment_is_masked_in_what_ralph_writes() {
    let server = Server::start(Answer::Ok);
    let secret_url = format!("{}?token=s3cr3t-webhook-value", server.url);
    let repo = TestRepo::with_loop(
        "[[step]]\ntask = \"010-a\"\nactions = [{ run = \"echo leaked: $RALPH_TEST_SLACK_URL\" }, { promise = true }]\n",
        &["true"],
        "\n[[notify]]\non = [\"task_done\"]\nslack = { url_env = \"RALPH_TEST_SLACK_URL\" }\n",
        &[("010-a.md", "# A\n")],
    );
    let out = repo.cmd(&["run"]).env("RALPH_TEST_SLACK_URL", &secret_url).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Delivered to the URL, shaped for Slack.
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook?token=s3cr3t-webhook-value");
    assert!(got[0].json()["text"].as_str().unwrap().contains("task 010-a (A) done"), "{:?}", got[0]);
    // The agent never saw the variable, and nothing under .ralph/ holds the value.
    let log = repo.iter_file(1, "agent.log");
    assert!(log.contains("leaked:"), "{log}");
    assert!(!log.contains(&server.url) && !log.contains("[MASKED]"), "the agent saw the URL: {log}");
    assert!(files_holding(&repo.path(".ralph"), "s3cr3t-webhook-value").is_empty());
}

#[test]
fn a_parallel_run_notifies_from_its_coordinator() {
    let server = Server::start(Answer::Ok);
    let scenario: String = ["010-a", "020-b"]
        .iter()
        .map(|t| format!("[[step]]\ntask = \"{t}\"\nactions = [{{ write = {{ path = \"{t}.txt\", content = \"x\\n\" }} }}, {{ promise = true }}]\n"))
        .collect();
    let repo = TestRepo::with_loop(
        &scenario,
        &["true"],
        &format!("\n[[notify]]\non = [\"task_done\", \"run_end\"]\nwebhook = {}\n", toml_str(&server.url)),
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    );
    repo.ralph_within(180, &["run", "-j", "2"]).expect(0);
    let events = server.events();
    let mut done: Vec<&str> =
        events.iter().filter(|e| e["event"] == "task_done").map(|e| e["task"].as_str().unwrap()).collect();
    done.sort_unstable();
    assert_eq!(done, ["010-a", "020-b"], "{events:#?}");
    for e in events.iter().filter(|e| e["event"] == "task_done") {
        assert!(e["worker"].is_string(), "the worker slot is named: {e}");
        // The commit is the landed one, on main.
        let sha = e["commit"].as_str().unwrap();
        repo.git(&["merge-base", "--is-ancestor", sha, "main"]);
    }
    assert_eq!(events.iter().filter(|e| e["event"] == "run_end").count(), 1);
}

#[test]
fn a_remote_worker_notifies_what_it_lands_and_its_end() {
    let server = Server::start(Answer::Ok);
    let seed = TestRepo::new();
    let agent = seed.outside.join("agent.sh");
    std::fs::write(&agent, "#!/bin/sh\necho \"work of $RALPH_TASK\" > \"out-$RALPH_TASK.txt\"\necho '<promise>COMPLETE</promise>'\n")
        .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    seed.write(
        "ralph.toml",
        &format!(
            "[agent]\ncommand = [{}]\nprompt = \"file\"\n\n[checks]\ncommands = [\"true\"]\n\n[git]\nbranch = \"main\"\n\n[[notify]]\non = [\"task_done\", \"run_end\"]\nwebhook = {}\n",
            toml_str(&agent.to_string_lossy()),
            toml_str(&server.url)
        ),
    );
    seed.write(".gitignore", ".ralph/\n");
    seed.write("specs/t1.md", "# Task 1\n");
    seed.commit_all("backlog");
    let bare = seed.outside.join("origin.git");
    let clone = seed.outside.join("w1");
    for args in [
        vec!["clone", "-q", "--bare", seed.root.to_str().unwrap(), bare.to_str().unwrap()],
        vec!["clone", "-q", bare.to_str().unwrap(), clone.to_str().unwrap()],
    ] {
        let mut cmd = std::process::Command::new("git");
        cmd.args(&args).current_dir(&seed.outside);
        hermetic(&mut cmd, &seed.outside);
        assert!(cmd.status().unwrap().success());
    }
    let mut cmd = std::process::Command::new(RALPH);
    cmd.args(["worker", "--until-empty"]).current_dir(&clone).stdin(std::process::Stdio::null());
    hermetic(&mut cmd, &seed.outside);
    cmd.env("RALPH_WORKER_ID", "w1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let done = server.event("task_done");
    assert_eq!((done["task"].as_str(), done["worker"].as_str()), (Some("t1"), Some("w1")));
    assert_eq!(done["outcome"], "done");
    let end = server.event("run_end");
    assert_eq!(end["exit_code"], 0);
    assert!(end["reason"].as_str().unwrap().starts_with("nothing left to do on main"), "{end}");
    assert!(end["summary"].as_str().unwrap().contains("1 iteration(s): 1 done"), "{end}");
}
