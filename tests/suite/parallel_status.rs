//! `ralph status`, `ralph logs --worker` and `ralph report` on a parallel run (`ralph run -j N`),
//! staged by hand: a run folder with its `workers.json`, records that name their worker, and
//! `.ralph/lock` held by the test itself as a running coordinator would hold it. No real
//! parallel run is needed (nor its timing).

use crate::common::*;
use ralph::record::{IterationRecord, Outcome};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

const RUN: &str = "20270101-000000";

/// A repository with four tasks and a run of it, "running" under this test's pid.
struct Staged {
    repo: TestRepo,
    run_dir: PathBuf,
    /// `.ralph/lock`, held while the run runs.
    lock: Option<std::fs::File>,
}

fn specs() -> Vec<(&'static str, &'static str)> {
    vec![("010-a.md", "# A\n"), ("020-b.md", "# B\n"), ("030-c.md", "# C\n"), ("040-d.md", "# D\n")]
}

fn ago(secs: u64) -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .to_string()
}

impl Staged {
    fn new() -> Staged {
        let repo = TestRepo::with_loop("", &["true"], "", &specs());
        let run_dir = repo.path(&format!(".ralph/runs/{RUN}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let staged = Staged { repo, run_dir, lock: None };
        staged.write_meta(None);
        staged
    }

    /// Holds `.ralph/lock` with this process's pid in it, as `ralph run` does.
    fn hold_lock(&mut self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.repo.path(".ralph/lock"))
            .unwrap();
        f.try_lock().unwrap();
        f.set_len(0).unwrap();
        write!(f, "{}", std::process::id()).unwrap();
        self.lock = Some(f);
    }

    /// run.json, ended when `ended` says how.
    fn write_meta(&self, ended: Option<(u8, &str)>) {
        let meta = serde_json::json!({
            "run_id": RUN,
            "pid": std::process::id(),
            "started_at": ago(600),
            "ended_at": ended.map(|_| ago(0)),
            "iterations": 4,
            "exit_code": ended.map(|e| e.0),
            "end_reason": ended.map(|e| e.1),
            "sessions": 1,
        });
        std::fs::write(self.run_dir.join("run.json"), meta.to_string()).unwrap();
    }

    /// The run ends as the coordinator ends it: workers.json removed, run.json ended, lock let go.
    fn end(&mut self) {
        let _ = std::fs::remove_file(self.run_dir.join("workers.json"));
        self.write_meta(Some((0, "the backlog is done")));
        self.lock = None;
    }

    /// workers.json: (worker, task, iteration, phase, seconds since it started), the queue.
    fn workers(&self, pid: u32, rows: &[(u32, &str, u32, &str, u64)], queue: &[&str]) {
        let workers: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, task, iteration, phase, secs)| {
                serde_json::json!({"id": id, "task": task, "iteration": iteration, "phase": phase, "started_at": ago(*secs)})
            })
            .collect();
        let file = serde_json::json!({"pid": pid, "workers": workers, "queue": queue});
        // Replaced in one rename, as the coordinator's writes are: a reader never sees half.
        let tmp = self.run_dir.join("workers.json.tmp");
        std::fs::write(&tmp, file.to_string()).unwrap();
        std::fs::rename(tmp, self.run_dir.join("workers.json")).unwrap();
    }

    fn iter_file(&self, n: u32, name: &str) -> PathBuf {
        let dir = self.run_dir.join(format!("iter-{n:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn append(&self, n: u32, name: &str, text: &str) {
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(self.iter_file(n, name)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Records of the given iterations: (iteration, task, worker, start in s, duration in s).
    fn records(&self, rows: &[(u32, &str, Option<u32>, u64, u64)]) {
        let mut text = String::new();
        for &(n, task, worker, start, dur) in rows {
            let ts = |s: u64| {
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + s),
                )
                .to_string()
            };
            let rec = IterationRecord {
                started_at: ts(start),
                ended_at: ts(start + dur),
                duration_ms: dur * 1000,
                worker,
                ..IterationRecord::new(RUN, n, task, Outcome::Done)
            };
            text += &serde_json::to_string(&rec).unwrap();
            text.push('\n');
        }
        std::fs::write(self.run_dir.join("iterations.jsonl"), text).unwrap();
    }
}

fn status_json(repo: &TestRepo) -> serde_json::Value {
    serde_json::from_str(&repo.ralph(&["status", "--json"]).expect(0).stdout()).unwrap()
}

#[test]
fn status_shows_each_worker_and_the_landing_queue_while_the_run_runs() {
    let mut s = Staged::new();
    s.hold_lock();
    s.records(&[(1, "010-a", Some(1), 0, 60)]);
    s.workers(
        std::process::id(),
        &[(2, "030-c", 3, "landing", 12), (1, "020-b", 2, "agent", 63)],
        &["030-c"],
    );

    let out = s.repo.ralph(&["status"]).expect(0).stdout();
    assert!(out.contains(&format!("Run {RUN} — running (pid {})", std::process::id())), "{out}");
    // Workers by id, each with its time so far (a second or two may pass before the status).
    let w1 = out.lines().position(|l| l.starts_with("  worker 1 · iteration 2 · 020-b · agent · 1m "));
    let w2 = out.lines().position(|l| l.starts_with("  worker 2 · iteration 3 · 030-c · landing · 1"));
    assert!(w1.is_some() && w2 > w1, "{out}");
    assert!(out.contains("\n  landing queue: 030-c\n"), "{out}");

    let json = status_json(&s.repo);
    let workers = json["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{json}");
    assert_eq!(workers[0]["id"], 1);
    assert_eq!(workers[0]["task"], "020-b");
    assert_eq!(workers[0]["phase"], "agent");
    assert_eq!(workers[0]["iteration"], 2);
    assert!(workers[0]["started_at"].as_str().unwrap().ends_with('Z'), "{json}");
    assert!(workers[0]["elapsed_ms"].as_u64().unwrap() >= 63_000, "{json}");
    assert_eq!(workers[1]["id"], 2);
    assert_eq!(workers[1]["phase"], "landing");
    assert_eq!(json["queue"], serde_json::json!(["030-c"]));

    // Every worker between tasks: the run still says it is a parallel run.
    s.workers(std::process::id(), &[], &[]);
    let out = s.repo.ralph(&["status"]).expect(0).stdout();
    assert!(out.contains("  workers: none at work\n  landing queue: empty\n"), "{out}");
}

#[test]
fn status_shows_no_workers_without_a_parallel_run_under_way() {
    let mut s = Staged::new();
    s.records(&[(1, "010-a", None, 0, 60)]);
    // No run yet; then a single-loop run, running then finished.
    let fresh = TestRepo::with_loop("", &["true"], "", &specs());
    let json = status_json(&fresh);
    assert_eq!((&json["workers"], &json["queue"]), (&serde_json::json!([]), &serde_json::json!([])));
    s.hold_lock();
    let json = status_json(&s.repo);
    assert_eq!(json["run"]["state"], "running");
    assert_eq!((&json["workers"], &json["queue"]), (&serde_json::json!([]), &serde_json::json!([])));

    // A workers.json its coordinator did not write (an earlier session's, killed) is stale.
    s.workers(std::process::id() + 1, &[(1, "020-b", 2, "agent", 5)], &[]);
    let out = s.repo.ralph(&["status"]).expect(0).stdout();
    assert!(!out.contains("worker 1") && !out.contains("landing queue"), "{out}");
    assert_eq!(status_json(&s.repo)["workers"], serde_json::json!([]));

    // A coordinator killed with -9 leaves its workers.json: none of them is at work.
    s.workers(std::process::id(), &[(1, "020-b", 2, "agent", 5)], &["020-b"]);
    s.lock = None;
    let json = status_json(&s.repo);
    assert_eq!(json["run"]["state"], "crashed");
    assert_eq!((&json["workers"], &json["queue"]), (&serde_json::json!([]), &serde_json::json!([])));
    let out = s.repo.ralph(&["status"]).expect(0).stdout();
    assert!(!out.contains("worker 1") && !out.contains("landing queue"), "{out}");
}

/// A `ralph logs` child whose output is collected as it comes.
struct Follower {
    child: std::process::Child,
    out: Arc<Mutex<String>>,
}

impl Follower {
    fn start(repo: &TestRepo, args: &[&str]) -> Follower {
        let mut child = repo.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Follower { child, out }
    }

    fn shows(&self, text: &str) -> bool {
        wait_for(20, || self.out.lock().unwrap().contains(text))
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for the end (at most 20 s): its exit code.
    fn end(mut self) -> (i32, String) {
        let ended = wait_for(20, || self.child.try_wait().unwrap().is_some());
        if !ended {
            let _ = self.child.kill();
            panic!("ralph logs -f did not end with the run:\n{}", self.text());
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        // The reader thread has the last bytes once the pipe closes.
        wait_for(5, || Arc::strong_count(&self.out) == 1);
        (code, self.text())
    }
}

#[test]
fn logs_worker_prints_and_follows_that_workers_iterations_only() {
    let mut s = Staged::new();
    s.hold_lock();
    s.append(1, "agent.log", "iteration one, worker 1, done\n");
    s.append(2, "agent.log", "worker 1 starts on 020-b\n");
    s.append(2, "checks.log", "$ true\n");
    s.append(3, "agent.log", "worker 2 on 030-c\n");
    s.workers(std::process::id(), &[(1, "020-b", 2, "agent", 30), (2, "030-c", 3, "agent", 10)], &[]);

    assert_eq!(s.repo.ralph(&["logs", "--worker", "1"]).expect(0).stdout(), "worker 1 starts on 020-b\n");
    assert_eq!(s.repo.ralph(&["logs", "--worker", "2"]).expect(0).stdout(), "worker 2 on 030-c\n");
    assert_eq!(s.repo.ralph(&["logs", "--worker", "1", "--checks"]).expect(0).stdout(), "$ true\n");
    let none = s.repo.ralph(&["logs", "--worker", "7"]).expect(2).stderr();
    assert!(none.contains(&format!("run {RUN} has no worker 7 at work (at work: worker 1, 2)")), "{none}");
    assert!(none.contains("hint: `ralph status` lists the workers"), "{none}");
    let both = s.repo.ralph(&["logs", "2", "--worker", "1"]).expect(2).stderr();
    assert!(both.contains("cannot be used with"), "{both}");

    // `-f` alone follows the first worker at work, not the latest iteration (worker 2's).
    let plain = Follower::start(&s.repo, &["logs", "-f"]);
    assert!(
        plain.shows("==> worker 1 · iteration 2 · 020-b <==\nworker 1 starts on 020-b\n"),
        "{}",
        plain.text()
    );
    let follow = Follower::start(&s.repo, &["logs", "-f", "--worker", "1"]);
    assert!(
        follow.shows("==> worker 1 · iteration 2 · 020-b <==\nworker 1 starts on 020-b\n"),
        "{}",
        follow.text()
    );
    s.append(2, "agent.log", "worker 1 writes more\n");
    assert!(follow.shows("worker 1 writes more\n"), "{}", follow.text());
    // Worker 2 moves on to iteration 4: not the followed worker's business.
    s.append(4, "agent.log", "worker 2 on 040-d\n");
    s.workers(std::process::id(), &[(1, "020-b", 2, "landing", 40), (2, "040-d", 4, "agent", 1)], &["020-b"]);
    // Worker 1's task landed; it starts iteration 5 on 010-a again.
    s.append(2, "agent.log", "worker 1's last words\n");
    s.append(5, "agent.log", "worker 1 on 010-a\n");
    s.workers(std::process::id(), &[(1, "010-a", 5, "agent", 1), (2, "040-d", 4, "agent", 2)], &[]);
    assert!(follow.shows("==> worker 1 · iteration 5 · 010-a <==\nworker 1 on 010-a\n"), "{}", follow.text());
    s.append(5, "agent.log", "worker 1 finishes\n");
    s.end();
    let (code, out) = follow.end();
    assert_eq!(code, 0, "{out}");
    let (code, plain_out) = plain.end();
    assert_eq!(code, 0, "{plain_out}");
    assert_eq!(plain_out, out, "the plain follower followed worker 1 too");
    assert_eq!(
        out,
        "==> worker 1 · iteration 2 · 020-b <==\nworker 1 starts on 020-b\nworker 1 writes more\nworker 1's last words\n\
         ==> worker 1 · iteration 5 · 010-a <==\nworker 1 on 010-a\nworker 1 finishes\n"
    );

    // Once the run is over no worker is at work, with -f or without.
    for args in [&["logs", "--worker", "1"][..], &["logs", "-f", "--worker", "1"]] {
        let err = s.repo.ralph(args).expect(2).stderr();
        assert!(
            err.contains(&format!("run {RUN} has no worker 1: it is not a parallel run under way")),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn logs_worker_in_a_repository_without_runs_says_so_at_once() {
    let repo = TestRepo::with_loop("", &["true"], "", &specs());
    let err = repo.ralph_within(20, &["logs", "-f", "--worker", "1"]).expect(2).stderr();
    assert!(err.contains("no runs yet"), "{err}");
}

#[test]
fn report_draws_a_lane_per_worker() {
    let s = Staged::new();
    s.records(&[
        (1, "010-a", Some(1), 0, 60),
        (2, "020-b", Some(2), 0, 30),
        (3, "030-c", Some(2), 30, 30),
        (4, "040-d", Some(1), 60, 60),
    ]);
    s.repo.ralph(&["report"]).expect(0);
    let page = std::fs::read_to_string(s.run_dir.join("report.html")).unwrap();
    let lanes: Vec<&str> = page.match_indices("<title>worker ").map(|(i, _)| &page[i + 7..i + 15]).collect();
    assert_eq!(lanes, ["worker 1", "worker 2"], "{page}");
    for task in ["010-a", "020-b", "030-c", "040-d"] {
        assert!(!page.contains(&format!("<title>{task}</title>")), "no lane of its own for {task}");
    }
    // Iterations 1 and 2 ran at once, one above the other.
    assert!(page.contains(r#"data-iteration="1" x="150.0" y="8.0""#), "{page}");
    assert!(page.contains(r#"data-iteration="2" x="150.0" y="34.0""#), "{page}");

    // The single loop's records keep their lane per task.
    s.records(&[(1, "010-a", None, 0, 60), (2, "020-b", None, 60, 30)]);
    s.repo.ralph(&["report"]).expect(0);
    let page = std::fs::read_to_string(s.run_dir.join("report.html")).unwrap();
    assert!(page.contains("<title>010-a</title>010-a</text>"), "{page}");
    assert!(!page.contains("worker"), "{page}");
}
