//! `ralph status`: the backlog (each task's status, attempts, iterations) and the current or
//! last run at a glance; `--json` prints the same for scripts.

use crate::backlog::{Backlog, Status};
use crate::error::CliError;
use crate::logs;
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

#[derive(Debug, Serialize)]
struct StatusView {
    root: String,
    tasks: Vec<TaskView>,
    run: Option<RunView>,
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
    let elapsed_ms = parse_time(&meta.started_at)
        .and_then(|s| end.duration_since(s).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
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
    let view = StatusView { root: root.to_string_lossy().into_owned(), tasks, run: run_view(&root) };
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
            if let Some(l) = &r.last_iteration {
                out.push_str(&format!(
                    "  last: iteration {} on {} → {}\n",
                    l.iteration,
                    l.task,
                    l.outcome.as_str()
                ));
            }
        }
    }
    out
}
