//! `ralph stats` over real runs (several runs, a usage-limit wait, a failed check, a torn record
//! line) and `ralph report`, rendered in headless Chromium: the rendered DOM and a screenshot
//! are checked, not just the HTML text.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Claude-style stream-json result line as a `print` action.
fn result(text: &str, input: u64, output: u64, cost: f64) -> String {
    let json = serde_json::json!({
        "type": "result", "subtype": "success", "is_error": false, "num_turns": 1,
        "result": text, "total_cost_usd": cost,
        "usage": {"input_tokens": input, "output_tokens": output,
                  "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    });
    format!("{{ print = {} }}", toml_str(&json.to_string()))
}

const CHECK: &str = "if [ -e bad.txt ]; then echo 'bad.txt: <script>alert(1)</script> & more'; exit 1; fi";

/// 010-a: done at once. 020-b: (optionally a usage limit first,) then a failing check, then
/// done with a learning.
fn scenario(limit_first: bool) -> String {
    let mut s = String::new();
    s += &format!(
        "[[step]]\ntask = \"010-a\"\nactions = [{{ write = {{ path = \"a.txt\", content = \"a\\n\" }} }}, {}]\n",
        result("ok <promise>COMPLETE</promise>", 600, 400, 1.5)
    );
    let mut n = 1;
    if limit_first {
        s += "[[step]]\ntask = \"020-b\"\niteration = 1\nactions = [{ eprint = \"You've hit your usage limit. Try again in 1 seconds.\" }, { exit = 1 }]\n";
        n += 1;
    }
    s += &format!(
        "[[step]]\ntask = \"020-b\"\niteration = {n}\nactions = [{{ write = {{ path = \"bad.txt\", content = \"x\\n\" }} }}, {}]\n",
        result("should pass <promise>COMPLETE</promise>", 100, 100, 0.25)
    );
    s += &format!(
        "[[step]]\ntask = \"020-b\"\niteration = {}\nactions = [{{ write = {{ path = \"b.txt\", content = \"b\\n\" }} }}, {}]\n",
        n + 1,
        result(
            "fixed <learning>Never leave bad.txt behind: the check refuses it.</learning> <promise>COMPLETE</promise>",
            200,
            300,
            0.5
        )
    );
    s += &format!(
        "[[step]]\ntask = \"030-c\"\nactions = [{}]\n",
        result("<promise>COMPLETE</promise>", 50, 50, 0.01)
    );
    s
}

fn two_task_repo(limit_first: bool) -> TestRepo {
    TestRepo::with_loop(
        &scenario(limit_first),
        &[CHECK],
        "output_format = \"claude-stream-json\"\nretry_wait = \"1s\"\n",
        &[("010-a.md", "# A\n"), ("020-b.md", "# B\n")],
    )
}

fn json(run: Run) -> serde_json::Value {
    serde_json::from_str(&run.expect(0).stdout()).unwrap()
}

#[test]
fn stats_sum_up_every_run_or_one() {
    let repo = two_task_repo(true);
    repo.ralph(&["run"]).expect(0);
    let first = repo.latest_run_dir();
    // A second run, finishing a third task on its first iteration.
    repo.write("specs/030-c.md", "# C\n");
    repo.commit_all("another task");
    repo.ralph(&["run"]).expect(0);
    let second = repo.latest_run_dir();
    assert_ne!(first, second);
    // A crash mid-append leaves a torn line: skipped, not fatal.
    let mut f = std::fs::OpenOptions::new().append(true).open(first.join("iterations.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, br#"{"run_id":"x","iteration":9,"task":"020-"#).unwrap();

    let s = json(repo.ralph(&["stats", "--json"]));
    assert_eq!(s["runs"], 2);
    assert_eq!(s["run_id"], serde_json::Value::Null);
    assert_eq!(s["iterations"], 5);
    assert_eq!(s["skipped_lines"], 1);
    assert_eq!(s["outcomes"], serde_json::json!({"done": 3, "checks_failed": 1, "rate_limited": 1}));
    assert_eq!(s["tasks"]["seen"], 3);
    assert_eq!(s["tasks"]["done"], 3);
    assert_eq!(s["tasks"]["done_first_iteration"], 2);
    let rate = s["tasks"]["first_attempt_success_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
    // 020-b: the usage limit says nothing about the task; the failed check and the fix count.
    let b = &s["per_task"][1];
    assert_eq!(b["task"], "020-b");
    assert_eq!(b["iterations"], 3);
    assert_eq!(b["attempts"], 1);
    assert_eq!(b["iterations_to_done"], serde_json::json!([2]));
    assert_eq!(b["tokens"], 700);
    assert_eq!(s["iterations_to_done"]["max"], 2);
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures.iter().any(|f| f["outcome"] == "checks_failed"
            && f["cause"].as_str().unwrap().starts_with("`if [ -e bad.txt ]")
            && f["cause"].as_str().unwrap().ends_with("…` failed")
            && f["count"] == 1),
        "{failures:?}"
    );
    assert!(failures.iter().any(|f| f["outcome"] == "rate_limited" && f["count"] == 1));
    assert_eq!(s["tokens"]["total"], 1800);
    assert_eq!(s["tokens"]["iterations_reporting"], 4);
    assert_eq!(s["tokens"]["per_done_task"], 600.0);
    let cost = s["cost_usd"]["total"].as_f64().unwrap();
    assert!((cost - 2.26).abs() < 1e-9, "{cost}");
    assert_eq!(s["learnings_added"], 1);
    assert_eq!(s["rate_limits"]["waits"], 1);
    assert!(s["rate_limits"]["waited_ms"].as_u64().unwrap() >= 900, "{}", s["rate_limits"]);
    let longest = [&first, &second]
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("iterations.jsonl"))
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .map(|r| r["duration_ms"].as_u64().unwrap())
        .max();
    assert_eq!(s["iteration_ms"]["max"].as_u64(), longest);

    let human = repo.ralph(&["stats"]).expect(0).stdout();
    assert!(
        human.contains("Stats for 2 run(s): 5 iteration(s) (1 unreadable record line(s) skipped)"),
        "{human}"
    );
    assert!(human.contains("first-attempt done:  67% (2 of 3 done on their first iteration)"), "{human}");
    assert!(human.contains("rate-limit waits:    1 ("), "{human}");
    assert!(human.contains("020-b"), "{human}");

    let id = second.file_name().unwrap().to_str().unwrap();
    let one = json(repo.ralph(&["stats", "--json", "--run", id]));
    assert_eq!(one["run_id"], id);
    assert_eq!(one["runs"], 1);
    assert_eq!(one["iterations"], 1);
    assert_eq!(one["per_task"][0]["task"], "030-c");
    assert_eq!(one["tasks"]["first_attempt_success_rate"], 1.0);

    let bad = repo.ralph(&["stats", "--run", "nope"]).expect(2);
    assert!(bad.stderr().contains("no run `nope`"), "{}", bad.stderr());
}

#[test]
fn each_failure_names_its_cause_in_the_record_and_in_stats() {
    let scenario = r#"
[[step]]
task = "010-check"
actions = [{ write = { path = "bad.txt", content = "x\n" } }, { promise = true }]
[[step]]
task = "020-protected"
actions = [{ write = { path = "check.sh", content = "exit 0\n" } }, { promise = true }]
[[step]]
task = "030-frame"
actions = [{ run = "git checkout -q -b agent-branch" }, { promise = true }]
[[step]]
task = "040-slow"
actions = [{ run = "while true; do echo tick; sleep 0.1; done" }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["sh check.sh"],
        "timeout = \"3s\"\n[budget]\nmax_attempts = 1\n",
        &[
            ("010-check.md", "# C\n"),
            ("020-protected.md", "# P\n"),
            ("030-frame.md", "# F\n"),
            ("040-slow.md", "# S\n"),
        ],
    );
    repo.write("check.sh", "#!/bin/sh\ntest ! -f bad.txt\n");
    repo.commit_all("check script");
    repo.ralph(&["run"]).expect(4);

    let got: Vec<(String, String, String)> = repo
        .records()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            (s("task"), s("outcome"), s("cause"))
        })
        .collect();
    let want = [
        ("010-check", "checks_failed", "checks_failed"),
        ("020-protected", "checks_failed", "protected_path"),
        ("030-frame", "agent_failed", "frame_broken"),
        ("040-slow", "timeout", "timeout"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(got, want);

    // `ralph stats` groups them by those causes.
    let s = json(repo.ralph(&["stats", "--json"]));
    let mut kinds: Vec<(String, String)> = s["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_string(), f["cause"].as_str().unwrap().to_string()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("checks_failed", "`sh check.sh` failed"),
            ("frame_broken", "agent changed the frame"),
            ("protected_path", "gate: protected path changed"),
            ("timeout", "iteration time limit"),
        ]
        .map(|(k, c)| (k.to_string(), c.to_string()))
    );
}

#[test]
fn stats_without_runs_say_so() {
    let repo = TestRepo::new();
    let out = repo.ralph(&["stats"]).expect(0).stdout();
    assert!(out.contains("No iterations recorded yet"), "{out}");
    let s = json(repo.ralph(&["stats", "--json"]));
    assert_eq!((s["runs"].as_u64(), s["iterations"].as_u64()), (Some(0), Some(0)));
    assert_eq!(
        repo.ralph(&["report"]).expect(2).stderr().trim(),
        "error: no runs yet\nhint: start one with `ralph run`"
    );
}

/// Chromium: the test that needs it is ignored unless asked for (`scripts/test` installs it).
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("chromium")).find(|p| p.is_file()))
        .expect("chromium is not installed: scripts/test installs it (apt-get install chromium)")
}

/// Runs headless Chromium on a file with extra arguments; returns stdout.
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .env("HOME", profile)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The values of every `attr="..."` in the document, in order.
fn attr_values<'a>(dom: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    dom.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &dom[i + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Pixels of exactly this colour in an RGB(A) PNG.
fn pixels_of(png_path: &Path, rgb: [u8; 3]) -> (usize, u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let n = buf[..info.buffer_size()].chunks(step).filter(|p| p[..3] == rgb).count();
    (n, info.width, info.height)
}

#[test]
#[ignore = "needs chromium: scripts/test installs it"]
fn report_renders_a_coloured_timeline_tasks_and_linked_iterations() {
    let chromium = chromium();
    let repo = two_task_repo(false);
    repo.ralph(&["run"]).expect(0);
    let run_dir = repo.latest_run_dir();
    let printed = repo.ralph(&["report"]).expect(0).stdout();
    let page = run_dir.join("report.html");
    assert_eq!(printed.trim(), page.to_str().unwrap());

    let profile = repo.outside.join("chromium-profile");
    let dom = headless(&chromium, &profile, &page, &["--dump-dom"]);
    // The timeline: a bar per iteration, coloured by outcome, in task lanes.
    assert_eq!(dom.matches("class=\"bar o-done\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("class=\"bar o-checks_failed\"").count(), 1, "{dom}");
    assert_eq!(dom.matches("class=\"bar ").count(), 3);
    // The task table and the iteration rows.
    assert_eq!(dom.matches("<tr class=\"task\">").count(), 2, "{dom}");
    assert!(dom.contains("<code>020-b</code></td><td><span class=\"badge o-done\">done</span></td><td class=\"num\">2</td><td class=\"num\">1</td><td class=\"num\">700</td><td class=\"num\">$0.75</td>"), "{dom}");
    assert_eq!(dom.matches("<tr class=\"iteration ").count(), 3);
    assert!(dom.contains("<tr class=\"iteration o-checks_failed\" id=\"it-2\">"), "{dom}");
    // The spending chart has both series.
    assert!(dom.contains("class=\"series tokens\"") && dom.contains("class=\"series cost\""), "{dom}");
    // The check's output held HTML: it is text on the page, not markup.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("bad.txt: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"), "{dom}");
    // Every file link resolves to a file of the run; the failed iteration links its patch.
    let links: Vec<&str> = attr_values(&dom, "href").into_iter().filter(|h| !h.starts_with('#')).collect();
    assert_eq!(links.len(), 3 * 3 + 1, "{links:?}");
    for l in &links {
        assert!(run_dir.join(l).is_file(), "{l} does not exist");
    }
    assert!(links.contains(&"iter-0002/rejected.patch"), "{links:?}");
    assert!(std::fs::read_to_string(run_dir.join("iter-0002/rejected.patch")).unwrap().contains("bad.txt"));
    // Bars link to their rows.
    for h in attr_values(&dom, "href").into_iter().filter(|h| h.starts_with('#')) {
        assert!(dom.contains(&format!("id=\"{}\"", &h[1..])), "{h}");
    }

    // What a person sees: a real picture, with the outcome colours of the timeline in it.
    let shot = repo.outside.join("report.png");
    headless(
        &chromium,
        &profile,
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1600"],
    );
    let bytes = std::fs::read(&shot).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000, "{} bytes", bytes.len());
    let (green, w, h) = pixels_of(&shot, [0x1a, 0x7f, 0x37]);
    let (red, _, _) = pixels_of(&shot, [0xcf, 0x22, 0x2e]);
    assert_eq!((w, h), (1280, 1600));
    // Two done bars and one failed bar (plus badges and legend keys) of at least 3×18 px.
    assert!(green > 2 * 3 * 18 && red > 3 * 18, "green {green} px, red {red} px");

    // --out elsewhere: the links climb back to the run folder.
    let out = repo.outside.join("elsewhere/r.html");
    let printed = repo.ralph(&["report", "--out", out.to_str().unwrap()]).expect(0).stdout();
    assert_eq!(printed.trim(), out.to_str().unwrap());
    let dom = headless(&chromium, &profile, &out, &["--dump-dom"]);
    let links: Vec<&str> = attr_values(&dom, "href").into_iter().filter(|h| !h.starts_with('#')).collect();
    assert!(links.iter().all(|l| l.starts_with("../repo/.ralph/runs/")), "{links:?}");
    for l in &links {
        assert!(out.parent().unwrap().join(l).is_file(), "{l} does not exist");
    }
    let id = run_dir.file_name().unwrap().to_str().unwrap();
    repo.ralph(&["report", "--run", id]).expect(0);
    assert!(repo.ralph(&["report", "--run", "nope"]).expect(2).stderr().contains("no run `nope`"));
}
