//! `ralph status`: the backlog (each task's status, attempts, iterations) and the current or
//! last run at a glance, with a parallel run's workers and landing queue while it runs;
//! `--json` prints the same for scripts.
//!
//! Invariant: the workers shown are those of the run's `workers.json` only while that run is
//! running and the file is its coordinator's (same pid): a file left by a killed coordinator
//! describes nothing under way, and `workers`/`queue` are then empty.

use crate::backlog::{Backlog, Status};
use crate::error::CliError;
use crate::logs;
use crate::parallel::WorkersFile;
use crate::record::{self, Outcome};
use crate::state::{RALPH_DIR, RunLock, RunMeta, State};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Serialize)]
struct TaskView {
    id: String,
    title: String,
    path: String,
    status: Status,
    priority: Option<i64>,
    depends_on: Vec<String>,
    attempts: u32,
    iterations: u32,
    blocked_reason: Option<String>,
    /// Done, but its spec was edited since: `ralph run` reopens it.
    changed: bool,
}

#[derive(Debug, Serialize)]
struct RunView {
    run_id: String,
    /// "running", "finished", or "crashed" (no end recorded and no process holds the lock).
    state: &'static str,
    pid: u32,
    started_at: String,
    ended_at: Option<String>,
    iterations: u32,
    exit_code: Option<u8>,
    end_reason: Option<String>,
    outcomes: BTreeMap<Outcome, u32>,
    elapsed_ms: u64,
    last_iteration: Option<LastView>,
    /// While a running run waits out a usage limit: until when.
    waiting_until: Option<String>,
    /// The agents of the fallback chain at a usage limit, and until when (RFC 3339): those
    /// whose reset is still ahead.
    agents_limited: BTreeMap<String, String>,
    /// What the run has spent (carried over when it resumes).
    spent: Option<crate::budget::Spent>,
    /// Its limits, and what is left of each.
    limits: Option<crate::state::Limits>,
    left: Option<Left>,
    /// How many times `ralph run` started or resumed it.
    sessions: u32,
}

#[derive(Debug, Serialize)]
struct Left {
    iterations: u32,
    duration_ms: Option<u64>,
    tokens: Option<u64>,
    cost_usd: Option<f64>,
}

#[derive(Debug, Serialize)]
struct LastView {
    iteration: u32,
    task: String,
    outcome: Outcome,
}

/// A worker of a parallel run, as `workers.json` has it.
#[derive(Debug, Serialize)]
struct WorkerView {
    id: u32,
    task: String,
    /// `agent` (the worker's agent and checks) or `landing`.
    phase: String,
    iteration: u32,
    started_at: String,
    /// Since `started_at`, as of this status.
    elapsed_ms: u64,
}

#[derive(Debug, Serialize)]
struct StatusView {
    root: String,
    tasks: Vec<TaskView>,
    run: Option<RunView>,
    /// A running parallel run's workers, by id; empty otherwise.
    workers: Vec<WorkerView>,
    /// The tasks waiting to land, in order; empty without a running parallel run.
    queue: Vec<String>,
    /// The run is a parallel run (it has its `workers.json`), even with no worker at work.
    #[serde(skip)]
    parallel: bool,
}

fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

fn run_view(root: &Path) -> Option<RunView> {
    let id = logs::latest_run(root)?;
    let dir = logs::run_dir(root, &id);
    let meta = RunMeta::load(&dir).ok()?;
    let records = record::read_briefs(&logs::records_path(&dir));
    let mut outcomes = BTreeMap::new();
    for r in &records {
        *outcomes.entry(r.outcome).or_insert(0) += 1;
    }
    let holder = RunLock::holder(&root.join(RALPH_DIR));
    let state = match (&meta.ended_at, holder) {
        (Some(_), _) => "finished",
        (None, Some(pid)) if pid == meta.pid => "running",
        (None, _) => "crashed",
    };
    let end = meta.ended_at.as_deref().and_then(parse_time).unwrap_or_else(std::time::SystemTime::now);
    let elapsed_ms = since(&meta.started_at, end);
    Some(RunView {
        run_id: meta.run_id,
        state,
        pid: meta.pid,
        started_at: meta.started_at,
        ended_at: meta.ended_at,
        iterations: records.len().try_into().unwrap_or(u32::MAX).max(meta.iterations),
        exit_code: meta.exit_code,
        end_reason: meta.end_reason,
        outcomes,
        elapsed_ms,
        last_iteration: records.last().map(|r| LastView {
            iteration: r.iteration,
            task: r.task.clone(),
            outcome: r.outcome,
        }),
        waiting_until: if state == "running" { meta.waiting_until.clone() } else { None },
        agents_limited: {
            let now = jiff::Timestamp::now();
            meta.agents_limited
                .iter()
                .filter(|(_, t)| t.parse::<jiff::Timestamp>().is_ok_and(|t| t > now))
                .map(|(a, t)| (a.clone(), t.clone()))
                .collect()
        },
        left: match (&meta.spent, &meta.limits) {
            (Some(s), Some(l)) => Some(Left {
                iterations: l.max_iterations.saturating_sub(s.iterations),
                duration_ms: l.max_duration_ms.map(|d| d.saturating_sub(s.elapsed_ms)),
                tokens: l.max_tokens.map(|t| t.saturating_sub(s.tokens)),
                cost_usd: l.max_cost.map(|c| (c - s.cost_usd).max(0.0)),
            }),
            _ => None,
        },
        spent: meta.spent,
        limits: meta.limits,
        sessions: meta.sessions,
    })
}

/// The workers file of the latest run, while it runs as a parallel run.
fn workers_file(root: &Path, run: Option<&RunView>) -> Option<WorkersFile> {
    let run = run.filter(|r| r.state == "running")?;
    WorkersFile::load(&logs::run_dir(root, &run.run_id)).filter(|f| f.pid == run.pid)
}

/// The workers, by id, and the landing queue.
fn workers_view(file: WorkersFile, now: std::time::SystemTime) -> (Vec<WorkerView>, Vec<String>) {
    let mut workers: Vec<WorkerView> = file
        .workers
        .into_iter()
        .map(|w| WorkerView {
            elapsed_ms: since(&w.started_at, now),
            id: w.id,
            task: w.task,
            phase: w.phase,
            iteration: w.iteration,
            started_at: w.started_at,
        })
        .collect();
    workers.sort_by_key(|w| w.id);
    (workers, file.queue)
}

/// Milliseconds from `start` (RFC 3339) to `now`; 0 when it does not parse or is later.
fn since(start: &str, now: std::time::SystemTime) -> u64 {
    parse_time(start)
        .and_then(|s| now.duration_since(s).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `ralph status`.
pub fn run(cwd: &Path, json: bool) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let state = State::load(&root)?;
    let mut backlog = Backlog::load(&root, &crate::config::backlog_source(&root))?;
    backlog.apply_blocks(&state.blocks());
    let tasks: Vec<TaskView> = backlog
        .tasks
        .iter()
        .map(|t| {
            let ts = state.task(&t.id);
            TaskView {
                id: t.id.clone(),
                title: t.title.clone(),
                path: t.path.to_string_lossy().into_owned(),
                status: t.status,
                priority: t.priority,
                depends_on: t.depends_on.clone(),
                attempts: ts.attempts,
                iterations: ts.iterations,
                blocked_reason: t.blocked_reason.clone(),
                changed: t.status == Status::Done && crate::runner::spec_changed(&state, t),
            }
        })
        .collect();
    let run = run_view(&root);
    let file = workers_file(&root, run.as_ref());
    let parallel = file.is_some();
    let (workers, queue) =
        file.map_or_else(Default::default, |f| workers_view(f, std::time::SystemTime::now()));
    let view = StatusView { root: root.to_string_lossy().into_owned(), tasks, run, workers, queue, parallel };
    if json {
        let text = serde_json::to_string_pretty(&view).map_err(|e| CliError::failure(e.to_string()))?;
        crate::outln!("{text}");
        return Ok(crate::exit_code::OK);
    }
    crate::out!("{}", render(&view));
    Ok(crate::exit_code::OK)
}

fn render(v: &StatusView) -> String {
    let mut out = String::new();
    let count = |s: Status| v.tasks.iter().filter(|t| t.status == s).count();
    out.push_str(&format!(
        "Backlog: {} task(s): {} done, {} todo, {} blocked\n",
        v.tasks.len(),
        count(Status::Done),
        count(Status::Todo),
        count(Status::Blocked)
    ));
    if !v.tasks.is_empty() {
        let w = v.tasks.iter().map(|t| t.id.len()).max().unwrap_or(2).max(4);
        out.push_str(&format!(
            "  {:<w$}  {:<7}  {:>8}  {:>5}  TITLE\n",
            "TASK", "STATUS", "ATTEMPTS", "ITERS"
        ));
        for t in &v.tasks {
            out.push_str(&format!(
                "  {:<w$}  {:<7}  {:>8}  {:>5}  {}\n",
                t.id,
                if t.changed { "changed" } else { t.status.as_str() },
                t.attempts,
                t.iterations,
                t.title
            ));
            if let Some(r) = &t.blocked_reason {
                out.push_str(&format!("  {:<w$}  └ {r}\n", ""));
            }
        }
    } else {
        out.push_str("  (no specs/*.md yet: one file per task)\n");
    }
    match &v.run {
        None => out.push_str("\nNo run yet.\n"),
        Some(r) => {
            let elapsed = humantime::format_duration(std::time::Duration::from_secs(r.elapsed_ms / 1000));
            let head = match r.state {
                "running" if r.waiting_until.is_some() => format!(
                    "running (pid {}), waiting for a usage limit to lift until {}",
                    r.pid,
                    r.waiting_until.as_deref().unwrap_or("")
                ),
                "running" => format!("running (pid {})", r.pid),
                "crashed" => "ended without a record (crashed or killed)".to_string(),
                _ => format!(
                    "finished, exit {}: {}",
                    r.exit_code.map_or("?".into(), |c| c.to_string()),
                    r.end_reason.as_deref().unwrap_or("")
                ),
            };
            out.push_str(&format!("\nRun {} — {head}\n", r.run_id));
            let outcomes: Vec<String> =
                r.outcomes.iter().map(|(o, n)| format!("{n} {}", o.as_str())).collect();
            out.push_str(&format!(
                "  started {}, {} iteration(s) in {elapsed}{}{}\n",
                r.started_at,
                r.iterations,
                if outcomes.is_empty() { "" } else { ": " },
                outcomes.join(", ")
            ));
            if let (Some(s), Some(l)) = (&r.spent, &r.limits) {
                let dur = |ms: u64| {
                    humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
                };
                let mut parts = vec![format!("iterations {}/{}", s.iterations, l.max_iterations)];
                parts.push(match l.max_duration_ms {
                    Some(m) => format!("time {}/{}", dur(s.elapsed_ms), dur(m)),
                    None => format!("time {}", dur(s.elapsed_ms)),
                });
                parts.push(match l.max_tokens {
                    Some(m) => format!("tokens {}/{m}", s.tokens),
                    None => format!("tokens {}", s.tokens),
                });
                parts.push(match l.max_cost {
                    Some(m) => format!("cost ${:.2}/${m:.2}", s.cost_usd),
                    None => format!("cost ${:.2}", s.cost_usd),
                });
                out.push_str(&format!("  spent: {}\n", parts.join(" · ")));
                if let Some(left) = &r.left {
                    let mut parts = vec![format!("{} iteration(s)", left.iterations)];
                    if let Some(d) = left.duration_ms {
                        parts.push(dur(d));
                    }
                    if let Some(t) = left.tokens {
                        parts.push(format!("{t} tokens"));
                    }
                    if let Some(c) = left.cost_usd {
                        parts.push(format!("${c:.2}"));
                    }
                    out.push_str(&format!("  left:  {}\n", parts.join(" · ")));
                }
            }
            if !r.agents_limited.is_empty() {
                let limited: Vec<String> =
                    r.agents_limited.iter().map(|(a, t)| format!("{a} until {t}")).collect();
                out.push_str(&format!(
                    "  usage limits: {} (the chain's other agents run meanwhile)\n",
                    limited.join(", ")
                ));
            }
            if let Some(l) = &r.last_iteration {
                out.push_str(&format!(
                    "  last: iteration {} on {} → {}\n",
                    l.iteration,
                    l.task,
                    l.outcome.as_str()
                ));
            }
            for w in &v.workers {
                out.push_str(&format!(
                    "  worker {} · iteration {} · {} · {} · {}\n",
                    w.id,
                    w.iteration,
                    w.task,
                    w.phase,
                    humantime::format_duration(std::time::Duration::from_secs(w.elapsed_ms / 1000))
                ));
            }
            if v.parallel && v.workers.is_empty() {
                out.push_str("  workers: none at work\n");
            }
            if v.parallel {
                out.push_str(&format!(
                    "  landing queue: {}\n",
                    if v.queue.is_empty() { "empty".to_string() } else { v.queue.join(", ") }
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::WorkerRow;

    fn running_run() -> RunView {
        RunView {
            run_id: "20270101-000000".into(),
            state: "running",
            pid: 4242,
            started_at: "2027-01-01T00:00:00.000Z".into(),
            ended_at: None,
            iterations: 3,
            exit_code: None,
            end_reason: None,
            outcomes: BTreeMap::from([(Outcome::Done, 1)]),
            elapsed_ms: 600_000,
            last_iteration: None,
            waiting_until: None,
            agents_limited: BTreeMap::new(),
            spent: None,
            limits: None,
            left: None,
            sessions: 1,
        }
    }

    fn view(file: Option<WorkersFile>, now: std::time::SystemTime) -> StatusView {
        let parallel = file.is_some();
        let (workers, queue) = file.map_or_else(Default::default, |f| workers_view(f, now));
        StatusView {
            root: "/r".into(),
            tasks: Vec::new(),
            run: Some(running_run()),
            workers,
            queue,
            parallel,
        }
    }

    fn row(id: u32, task: &str, iteration: u32, phase: &str, started_at: &str) -> WorkerRow {
        WorkerRow { id, task: task.into(), iteration, phase: phase.into(), started_at: started_at.into() }
    }

    fn at(rfc3339: &str) -> std::time::SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn a_parallel_run_shows_each_worker_and_the_landing_queue() {
        let file = WorkersFile {
            pid: 4242,
            workers: vec![
                row(2, "030-c", 5, "landing", "2027-01-01T00:09:48.000Z"),
                row(1, "020-b", 4, "agent", "2027-01-01T00:08:57.000Z"),
            ],
            queue: vec!["030-c".into()],
        };
        let out = render(&view(Some(file), at("2027-01-01T00:10:00.500Z")));
        let at_work = "  worker 1 · iteration 4 · 020-b · agent · 1m 3s\n  worker 2 · iteration 5 · 030-c · landing · 12s\n  landing queue: 030-c\n";
        assert!(out.contains(at_work), "{out}");
    }

    #[test]
    fn idle_workers_and_an_empty_queue_say_so() {
        let out =
            render(&view(Some(WorkersFile { pid: 4242, ..Default::default() }), at("2027-01-01T00:10:00Z")));
        assert!(out.contains("  workers: none at work\n  landing queue: empty\n"), "{out}");
    }

    #[test]
    fn the_single_loop_shows_no_workers_and_empty_arrays() {
        let v = view(None, at("2027-01-01T00:10:00Z"));
        let out = render(&v);
        assert!(!out.contains("worker") && !out.contains("landing"), "{out}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["workers"], serde_json::json!([]));
        assert_eq!(json["queue"], serde_json::json!([]));
        assert!(json.get("parallel").is_none(), "{json}");
    }

    #[test]
    fn workers_are_listed_by_id_with_their_time_so_far() {
        let file = WorkersFile {
            pid: 1,
            workers: vec![
                row(3, "c", 9, "agent", "2027-01-01T00:00:00Z"),
                row(1, "a", 7, "agent", "not a time"),
                row(2, "b", 8, "agent", "2027-01-01T00:01:00Z"),
            ],
            queue: vec!["b".into(), "a".into()],
        };
        let (workers, queue) = workers_view(file, at("2027-01-01T00:00:30Z"));
        let ids: Vec<u32> = workers.iter().map(|w| w.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        // A start that does not parse, or lies ahead (another clock), counts as just now.
        let elapsed: Vec<u64> = workers.iter().map(|w| w.elapsed_ms).collect();
        assert_eq!(elapsed, [0, 0, 30_000]);
        assert_eq!(queue, ["b", "a"], "the queue keeps its order");
    }
}
