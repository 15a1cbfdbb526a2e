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
    // The signals run by run: the commit of 030-c between the runs was a person's.
    let trend = s["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 2);
    assert_eq!(trend[0]["first_attempt_success"], 0.5);
    assert_eq!(trend[0]["iterations_to_resolution"], 1);
    assert_eq!(trend[0]["interventions"]["total"], 0, "{}", trend[0]);
    assert_eq!(trend[1]["first_attempt_success"], 1.0);
    assert_eq!(trend[1]["interventions"]["commits"], 1, "{}", trend[1]);
    assert_eq!(s["interventions"]["total"], 1);
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

/// One record line as ralph writes it, with `extra`'s fields on top.
fn record(run: &str, n: u32, task: &str, outcome: &str, extra: serde_json::Value) -> String {
    let mut r = serde_json::json!({
        "run_id": run, "iteration": n, "task": task,
        "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:01.000Z",
        "duration_ms": 1000, "exit_code": 0, "outcome": outcome, "checks": [],
        "head_before": null, "commit": null, "files_changed": [], "learnings_added": [],
        "learnings_rejected": [], "promise": outcome == "done", "failure": null,
        "progress": null, "blocked": false, "output_leaked": false,
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r.to_string()
}

/// Writes a run folder by hand: its run.json and its records.
fn write_run(repo: &TestRepo, id: &str, meta: serde_json::Value, records: &[String]) {
    let mut m = serde_json::json!({"run_id": id, "pid": 1, "iterations": records.len(), "sessions": 1});
    for (k, v) in meta.as_object().unwrap() {
        m[k] = v.clone();
    }
    repo.write(&format!(".ralph/runs/{id}/run.json"), &m.to_string());
    repo.write(&format!(".ralph/runs/{id}/iterations.jsonl"), &(records.join("\n") + "\n"));
}

#[test]
fn interventions_and_the_trend_come_from_the_run_folders_and_the_store() {
    let repo = TestRepo::new();
    let (r1, r2) = ("20260101-000000", "20260102-000000");
    use serde_json::json as j;
    // Run 1, on main: a done on its second iteration; b blocked (ralph's block commit `blk`);
    // c's spec edited while it ran; then a person's commit `u1` before c's next iteration.
    // Stopped by `ralph stop` (a run.json written before `stops` was kept).
    write_run(
        &repo,
        r1,
        j!({"started_at": "2026-01-01T00:00:00.000Z", "branch": "main",
            "end_reason": "stopped by `ralph stop` (resume with `ralph run`)"}),
        &[
            record(r1, 1, "a", "checks_failed", j!({"head_before": "h0", "head_after": "h0"})),
            record(r1, 2, "a", "done", j!({"head_before": "h0", "commit": "h1", "head_after": "h1"})),
            record(
                r1,
                3,
                "b",
                "checks_failed",
                j!({"head_before": "h1", "blocked": true, "head_after": "blk"}),
            ),
            record(
                r1,
                4,
                "c",
                "restarted",
                j!({"head_before": "blk", "spec_edited": true, "head_after": "blk"}),
            ),
            record(r1, 5, "c", "done", j!({"head_before": "u1", "commit": "h2", "head_after": "h2"})),
        ],
    );
    // Between the runs, `ralph learnings remove L1` committed AGENTS.md (`lc`, on h2). Run 2,
    // on main: ralph reopened a (its spec was edited; commit `ro`, on lc) and ran it; a person
    // unblocked b and committed that (`u2`); two sessions stopped by a person.
    write_run(
        &repo,
        r2,
        j!({"started_at": "2026-01-02T00:00:00.000Z", "branch": "main", "stops": 2,
            "end_reason": "backlog done", "ralph_commits": [{"commit": "ro", "parent": "lc"}]}),
        &[
            record(r2, 1, "a", "done", j!({"head_before": "ro", "commit": "h3", "head_after": "h3"})),
            record(r2, 2, "b", "done", j!({"head_before": "u2", "commit": "h4", "head_after": "h4"})),
        ],
    );
    // L1's removal is in the store's trace; L2's was made by an older ralph, which kept none:
    // its entry, retired "removed by hand" on 2026-01-03, says when.
    let entry = |id: &str, reason: &str, at: &str| {
        j!({"id": id, "text": format!("{id} text"), "status": "retired", "reviewed": false,
            "count": 1, "task": "a", "run_id": r1, "iteration": 1, "agent": "x", "model": null,
            "failure": null, "commit": null, "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": at, "retired_reason": reason})
    };
    repo.write(
        ".ralph/learnings.json",
        &j!({"entries": [entry("L1", "removed by hand", "2026-01-01T12:00:00.000Z"),
                         entry("L2", "removed by hand", "2026-01-03T00:00:00.000Z")],
             "next_id": 2,
             "by_hand": [{"action": "remove", "id": "L1", "at": "2026-01-01T12:00:00.000Z",
                          "commit": {"commit": "lc", "parent": "h2"}}]})
        .to_string(),
    );

    let s = json(repo.ralph(&["stats", "--json"]));
    // An `interventions` object: total, commits, spec edits, unblocks, stops, removals.
    let row = |i: &serde_json::Value| {
        let n = |k: &str| i[k].as_u64().unwrap();
        (n("total"), n("commits"), n("spec_edits"), n("unblocks"), n("stops"), n("learnings_removed"))
    };
    let trend = s["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 2);
    assert_eq!(trend[0]["run_id"], r1);
    // Run 1: the commit u1, c's edit, the stop, L1's removal (the run before it).
    assert_eq!(row(&trend[0]["interventions"]), (4, 1, 1, 0, 1, 1));
    assert_eq!(trend[0]["first_attempt_success"], 0.5);
    assert_eq!(trend[0]["iterations_to_resolution"], 1);
    assert_eq!(trend[0]["interventions_per_done_task"], 2.0);
    // Run 2: ro and lc are ralph's; u2, a's reopening, b's unblocking, two stops, L2.
    assert_eq!(trend[1]["run_id"], r2);
    assert_eq!(row(&trend[1]["interventions"]), (6, 1, 1, 1, 2, 1));
    assert_eq!(trend[1]["first_attempt_success"], 0.5);
    assert_eq!(trend[1]["iterations_to_resolution"], 1);
    assert_eq!(row(&s["interventions"]), (10, 2, 2, 1, 3, 2));
    assert_eq!(s["interventions_per_done_task"], 2.5);

    // One run: the runs before it still say where it found the branch and what was blocked
    // or done, and count in no figure.
    let one = json(repo.ralph(&["stats", "--json", "--run", r2]));
    assert_eq!((one["runs"].as_u64(), one["iterations"].as_u64()), (Some(1), Some(2)));
    assert_eq!(row(&one["interventions"]), (6, 1, 1, 1, 2, 1));
    assert_eq!(one["trend"].as_array().unwrap().len(), 1);
    let first = json(repo.ralph(&["stats", "--json", "--run", r1]));
    assert_eq!(row(&first["interventions"]), (4, 1, 1, 0, 1, 1));

    let human = repo.ralph(&["stats"]).expect(0).stdout();
    assert!(
        human.contains(
            "  interventions:       10 · 2.50 per done task (2 commits, 2 spec edits, 1 unblock, 3 stops, 2 learnings removed)"
        ),
        "{human}"
    );
    assert!(
        human.contains(&format!(
            "  {r1}      5     2        50%        1      2.00  4 (1 commit, 1 spec edit, 1 stop, 1 learning removed)\n  {r2}      2     2        50%        1      3.00  6 (1 commit, 1 spec edit, 1 unblock, 2 stops, 1 learning removed)\n"
        )),
        "{human}"
    );
}

#[test]
fn ralph_s_own_commits_and_a_person_s_in_real_runs() {
    // a: a red iteration that teaches (its learnings committed on their own), then done.
    // b: one attempt, failed: blocked (the block committed on its own).
    let scenario = r#"
[[step]]
task = "010-a"
iteration = 1
actions = [{ write = { path = "bad.txt", content = "x\n" } }, { learning = "Never leave bad.txt behind." }, { promise = true }]
[[step]]
task = "010-a"
iteration = 2
actions = [{ write = { path = "a.txt", content = "a\n" } }, { promise = true }]
[[step]]
task = "020-b"
iteration = 1
actions = [{ write = { path = "bad.txt", content = "x\n" } }, { promise = true }]
[[step]]
task = "020-b"
iteration = 2
actions = [{ write = { path = "b.txt", content = "b\n" } }, { promise = true }]
"#;
    let repo = TestRepo::with_loop(
        scenario,
        &["test ! -e bad.txt"],
        "",
        &[("010-a.md", "# A\n"), ("020-b.md", "---\nmax_attempts: 1\n---\n# B\n")],
    );
    repo.ralph(&["run"]).expect(4);
    let r = repo.records();
    assert_eq!(r.len(), 3);
    // Each record says where ralph left the branch: the next one starts there.
    assert_eq!(r[0]["learnings_added"].as_array().unwrap().len(), 1);
    assert_ne!(r[0]["head_after"], r[0]["head_before"], "the learnings were committed");
    assert_eq!(r[0]["head_after"], r[1]["head_before"]);
    assert_eq!(r[1]["head_after"], r[1]["commit"]);
    assert_eq!(r[1]["head_after"], r[2]["head_before"]);
    assert_eq!(r[2]["blocked"], true);
    assert_ne!(r[2]["head_after"], r[2]["head_before"], "the block was committed");
    assert_eq!(r[2]["head_after"].as_str().unwrap(), repo.head());
    let s = json(repo.ralph(&["stats", "--json"]));
    assert_eq!(s["interventions"]["total"], 0, "{}", s["interventions"]);

    // A person removes the learning (ralph commits AGENTS.md), unblocks b and commits that;
    // `ralph run` resumes the run.
    repo.ralph(&["learnings", "remove", "L1"]).expect(0);
    let store: serde_json::Value = serde_json::from_str(&repo.read(".ralph/learnings.json")).unwrap();
    assert_eq!(store["by_hand"][0]["action"], "remove");
    assert_eq!(store["by_hand"][0]["commit"]["commit"].as_str().unwrap(), repo.head());
    assert_eq!(store["by_hand"][0]["commit"]["parent"], r[2]["head_after"]);
    repo.write("specs/020-b.md", &repo.read("specs/020-b.md").replace("status: blocked", "status: todo"));
    repo.commit_all("unblock b");
    repo.ralph(&["run"]).expect(0);
    let r = repo.records();
    assert_eq!((r.len(), r[3]["task"].as_str(), r[3]["outcome"].as_str()), (4, Some("020-b"), Some("done")));
    let s = json(repo.ralph(&["stats", "--json"]));
    assert_eq!(
        s["interventions"],
        serde_json::json!({"total": 3, "commits": 1, "spec_edits": 0, "unblocks": 1, "stops": 0, "learnings_removed": 1, "notes": 0})
    );
    assert_eq!(s["trend"][0]["interventions"], s["interventions"]);
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
