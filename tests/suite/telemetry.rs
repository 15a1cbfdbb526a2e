//! Trace export: a run's spans reach an OTLP/HTTP collector on 127.0.0.1 (a small one, here,
//! that keeps what it is sent), nothing is sent unless a collector is configured, and a
//! collector that hangs costs the run one warning line and nothing else.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the collector does with a request.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    /// Reads the request and never answers.
    Hang,
}

/// One request the collector received.
struct Post {
    path: String,
    content_type: String,
    body: Value,
}

struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    fn start(answer: Answer) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = posts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve(conn, answer, &kept));
            }
        });
        Collector { port, posts }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn posts(&self) -> usize {
        self.posts.lock().unwrap().len()
    }

    /// Every span received, with the service name of its resource.
    fn spans(&self) -> Vec<Value> {
        let posts = self.posts.lock().unwrap();
        let mut spans = Vec::new();
        for p in posts.iter() {
            assert_eq!(p.path, "/v1/traces");
            assert_eq!(p.content_type, "application/json");
            for rs in p.body["resourceSpans"].as_array().unwrap() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "service.name")
                    .map(|a| a["value"]["stringValue"].clone());
                assert_eq!(service, Some(Value::from("ralph")));
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
                }
            }
        }
        spans
    }
}

fn serve(conn: TcpStream, answer: Answer, kept: &Mutex<Vec<Post>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    if answer == Answer::Hang {
        std::thread::sleep(std::time::Duration::from_secs(30));
        return;
    }
    kept.lock().unwrap().push(Post { path, content_type, body: serde_json::from_slice(&body).unwrap() });
    let mut conn = conn;
    let _ =
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
}

fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v.get("stringValue")
                .or_else(|| v.get("intValue"))
                .or_else(|| v.get("doubleValue"))
                .or_else(|| v.get("boolValue"))
                .cloned()
                .unwrap()
        })
        .unwrap_or(Value::Null)
}

fn nanos(span: &Value, key: &str) -> u128 {
    span[key].as_str().unwrap().parse().unwrap()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["parentSpanId"] == parent["spanId"]).collect()
}

/// A Claude-style stream-json line, as a TOML string for a `print` action.
fn line(json: &str) -> String {
    format!("{{ print = {} }}", toml_str(json))
}

const SECRET: &str = "sk-live-0123456789abcdef";

#[test]
fn a_run_exports_its_iterations_agent_checks_and_commit_as_one_trace() {
    let collector = Collector::start(Answer::Ok);
    let init = r#"{"type":"system","subtype":"init","session_id":"sess-7","model":"claude-test"}"#;
    let result1 = r#"{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"Tried.","total_cost_usd":0.1,"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;
    let result2 = format!(
        r#"{{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"Finished with {SECRET}. <promise>COMPLETE</promise>","total_cost_usd":0.25,"usage":{{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":10}},"session_id":"sess-7"}}"#
    );
    // Iteration 1 breaks the first check; iteration 2 does the task.
    let scenario = format!(
        "[[step]]\niteration = 1\nactions = [{}, {{ write = {{ path = \"bad.txt\", content = \"x\\n\" }} }}, {}]\n\
         [[step]]\niteration = 2\nactions = [{}, {{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {}]\n",
        line(init),
        line(result1),
        line(init),
        line(&result2),
    );
    let second_check = format!("test -n {SECRET}");
    let repo = TestRepo::with_loop(
        &scenario,
        &["! test -f bad.txt", &second_check],
        &format!(
            "output_format = \"claude-stream-json\"\n[telemetry]\notlp_endpoint = \"{}\"\n",
            collector.url()
        ),
        &[("010-a.md", "# A\n")],
    );
    let run = repo.cmd(&["run"]).env("MY_API_KEY", SECRET).output().unwrap();
    let run = Run(run).expect(0);
    assert!(!run.stderr().contains("warning: telemetry"), "{}", run.stderr());
    let records = repo.records();
    assert_eq!(records.len(), 2);

    // One request per iteration, one for the run.
    assert_eq!(collector.posts(), 3);
    let spans = collector.spans();
    let trace = spans[0]["traceId"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(spans.iter().all(|s| s["traceId"] == trace), "one trace for the run");

    let runs = named(&spans, "ralph.run");
    assert_eq!(runs.len(), 1);
    let run_span = runs[0];
    assert!(run_span.get("parentSpanId").is_none());
    assert_eq!(attr(run_span, "ralph.run.id"), records[0]["run_id"]);
    assert_eq!(attr(run_span, "ralph.run.exit_code"), "0");
    assert_eq!(attr(run_span, "ralph.run.iterations"), "2");
    assert_eq!(attr(run_span, "ralph.cost_usd"), 0.35);

    let iterations = named(&spans, "ralph.iteration");
    assert_eq!(iterations.len(), 2);
    for (i, it) in iterations.iter().enumerate() {
        assert_eq!(it["parentSpanId"], run_span["spanId"]);
        assert_eq!(attr(it, "ralph.iteration"), (i + 1).to_string());
        assert_eq!(attr(it, "ralph.task.id"), "010-a");
        assert!(nanos(it, "startTimeUnixNano") >= nanos(run_span, "startTimeUnixNano"));
        assert!(nanos(it, "endTimeUnixNano") <= nanos(run_span, "endTimeUnixNano"));
        // Every phase lies within its iteration.
        for c in children(&spans, it) {
            assert!(nanos(c, "startTimeUnixNano") >= nanos(it, "startTimeUnixNano"), "{c}");
            assert!(nanos(c, "endTimeUnixNano") <= nanos(it, "endTimeUnixNano"), "{c}");
        }
    }
    let (red, green) = (iterations[0], iterations[1]);
    assert_eq!(attr(red, "ralph.outcome"), "checks_failed");
    assert_eq!(red["status"]["code"], 2);
    assert_eq!(attr(green, "ralph.outcome"), "done");
    assert!(green.get("status").is_none());

    let names = |it: &Value| -> Vec<String> {
        children(&spans, it).iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    // The clean tree's checks run once, before the first agent.
    assert_eq!(names(red), ["ralph.baseline", "invoke_agent ralph", "ralph.revert", "ralph.check"]);
    assert_eq!(names(green), ["invoke_agent ralph", "ralph.commit", "ralph.check", "ralph.check"]);

    let agent = children(&spans, green)[0];
    assert_eq!(attr(agent, "gen_ai.operation.name"), "invoke_agent");
    assert_eq!(attr(agent, "gen_ai.agent.name"), "ralph");
    assert_eq!(attr(agent, "gen_ai.response.model"), "claude-test");
    assert_eq!(attr(agent, "gen_ai.conversation.id"), "sess-7");
    assert_eq!(attr(agent, "gen_ai.usage.input_tokens"), "1110");
    assert_eq!(attr(agent, "gen_ai.usage.output_tokens"), "50");
    assert_eq!(attr(agent, "gen_ai.usage.cache_read.input_tokens"), "1000");
    assert_eq!(attr(agent, "ralph.cost_usd"), 0.25);
    assert_eq!(attr(agent, "process.exit.code"), "0");

    let red_check = children(&spans, red)[3];
    assert_eq!(attr(red_check, "ralph.check.command"), "! test -f bad.txt");
    assert_eq!(attr(red_check, "process.exit.code"), "1");
    assert_eq!(red_check["status"]["code"], 2);

    let green_kids = children(&spans, green);
    let (commit, c1, c2) = (green_kids[1], green_kids[2], green_kids[3]);
    assert_eq!(attr(c1, "ralph.check.command"), "! test -f bad.txt");
    assert_eq!(attr(c2, "ralph.check.command"), "test -n [MASKED]");
    assert!(nanos(c1, "startTimeUnixNano") >= nanos(agent, "endTimeUnixNano"), "checks follow the agent");
    assert!(nanos(c2, "startTimeUnixNano") >= nanos(c1, "endTimeUnixNano"), "one check after the other");
    assert!(
        nanos(commit, "startTimeUnixNano") >= nanos(c2, "endTimeUnixNano"),
        "the commit follows the checks"
    );
    assert_eq!(attr(commit, "vcs.ref.head.revision"), repo.head());
    assert_eq!(attr(commit, "vcs.ref.head.revision"), records[1]["commit"]);

    // No secret, and nothing the agent said, leaves the machine.
    let all = serde_json::to_string(&spans).unwrap();
    assert!(!all.contains(SECRET), "{all}");
    assert!(!all.contains("Finished with"), "{all}");
}

#[test]
fn nothing_is_exported_unless_a_collector_is_configured() {
    let collector = Collector::start(Answer::Ok);
    let scenario =
        "[[step]]\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(scenario, &["true"], "", &[("010-a.md", "# A\n")]);
    repo.ralph(&["run"]).expect(0);
    assert_eq!(repo.records().len(), 1);
    assert_eq!(collector.posts(), 0, "no [telemetry], no OTEL_* variable: no export");

    // The standard variable turns it on without ralph.toml (here: a run with nothing to do).
    let run =
        repo.cmd(&["run", "--new-run"]).env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()).output().unwrap();
    Run(run).expect(0);
    let spans = collector.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["name"], "ralph.run");
    assert_eq!(attr(&spans[0], "ralph.run.iterations"), "0");

    // OTEL_SDK_DISABLED turns it off again.
    let run = repo
        .cmd(&["run", "--new-run"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    Run(run).expect(0);
    assert_eq!(collector.posts(), 1);

    // A URL ralph cannot use, from the environment: a warning, and the run goes on.
    let run = repo
        .cmd(&["run", "--new-run"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example")
        .output()
        .unwrap();
    let run = Run(run).expect(0);
    assert!(
        run.stderr().contains(
            "warning: telemetry is off: OTEL_EXPORTER_OTLP_ENDPOINT: `https://collector.example` is https"
        ),
        "{}",
        run.stderr()
    );

    // From ralph.toml it is a configuration error, named with its file.
    repo.write_config(&["true"], "[telemetry]\notlp_endpoint = \"collector:4318\"\n");
    let run = repo.ralph(&["run", "--new-run"]).expect(2);
    assert!(
        run.stderr()
            .contains("ralph.toml: [telemetry] otlp_endpoint: `collector:4318` is not an http:// URL"),
        "{}",
        run.stderr()
    );
    assert_eq!(collector.posts(), 1);
}

#[test]
fn a_collector_that_never_answers_costs_one_warning_and_nothing_else() {
    let collector = Collector::start(Answer::Hang);
    let scenario = "[[step]]\niteration = 1\nactions = [{ write = { path = \"a.txt\", content = \"a\\n\" } }]\n\
                    [[step]]\niteration = 2\nactions = [{ write = { path = \"b.txt\", content = \"b\\n\" } }, { promise = true }]\n";
    let repo = TestRepo::with_loop(
        scenario,
        &["true"],
        &format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.url()),
        &[("010-a.md", "# A\n")],
    );
    let run = repo.cmd(&["run"]).env("OTEL_EXPORTER_OTLP_TIMEOUT", "300").output().unwrap();
    let run = Run(run).expect(0);
    let r = repo.records();
    assert_eq!(r.iter().map(|r| r["outcome"].as_str().unwrap()).collect::<Vec<_>>(), ["progress", "done"]);
    assert_eq!(repo.spec_status("010-a"), "done");
    let stderr = run.stderr();
    let warnings: Vec<&str> =
        stderr.lines().filter(|l| l.contains("warning: telemetry")).map(str::trim).collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr());
    assert!(
        warnings[0].contains(&format!(
            "cannot export traces to {}/v1/traces: the collector did not answer within 300ms",
            collector.url()
        )),
        "{}",
        warnings[0]
    );
}
