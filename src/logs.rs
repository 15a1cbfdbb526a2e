//! The on-disk layout of runs and iterations under `.ralph/runs/`:
//!
//! ```text
//! .ralph/runs/<run-id>/run.json            run metadata
//! .ralph/runs/<run-id>/iterations.jsonl    one record per iteration
//! .ralph/runs/<run-id>/iter-0001/prompt.md       what the agent was given
//! .ralph/runs/<run-id>/iter-0001/agent.log       its stdout and stderr, as they arrived
//! .ralph/runs/<run-id>/iter-0001/checks.log      the checks' output
//! .ralph/runs/<run-id>/iter-0001/rejected.patch  the diff of a reverted iteration
//! ```
//!
//! Run ids sort by time, so the latest run is the greatest name.

use crate::state::RALPH_DIR;
use std::path::{Path, PathBuf};

pub fn runs_dir(root: &Path) -> PathBuf {
    root.join(RALPH_DIR).join("runs")
}

pub fn run_dir(root: &Path, run_id: &str) -> PathBuf {
    runs_dir(root).join(run_id)
}

pub fn iter_dir(run_dir: &Path, iteration: u32) -> PathBuf {
    run_dir.join(format!("iter-{iteration:04}"))
}

pub fn records_path(run_dir: &Path) -> PathBuf {
    run_dir.join("iterations.jsonl")
}

/// All run ids, oldest first.
pub fn run_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs_dir(root))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("run.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The most recent run's id.
pub fn latest_run(root: &Path) -> Option<String> {
    run_ids(root).pop()
}

/// Iteration numbers that have a folder in a run, ascending.
pub fn iterations(run_dir: &Path) -> Vec<u32> {
    let mut n: Vec<u32> = std::fs::read_dir(run_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|name| name.strip_prefix("iter-").and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    n.sort_unstable();
    n
}

/// A new run id from the current UTC time, e.g. `20261122-031200`; a suffix keeps it unique.
pub fn new_run_id(root: &Path) -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let base: String =
        stamp.chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect::<String>().replace('T', "-");
    let mut id = base.clone();
    let mut n = 2;
    while run_dir(root, &id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
