//! `ralph stats`: figures across every run's records (or one run's, `--run`), as a table or,
//! with `--json`, as the documented JSON object of [`crate::stats::Stats`]; the learnings store
//! is read for the removals among the interventions.

use crate::cli::StatsArgs;
use crate::error::CliError;
use crate::logs;
use std::path::{Path, PathBuf};

/// The run folder of `--run ID`, or a usage error naming where runs live.
pub fn existing_run(root: &Path, id: &str) -> Result<PathBuf, CliError> {
    let dir = logs::run_dir(root, id);
    if !dir.join("run.json").is_file() {
        return Err(CliError::usage(format!("no run `{id}` in {}", logs::runs_dir(root).display()))
            .hint("`ralph status` names the latest run; the folders under .ralph/runs/ are the others"));
    }
    Ok(dir)
}

/// Runs `ralph stats`.
pub fn run(cwd: &Path, a: &StatsArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    if let Some(id) = &a.run {
        existing_run(&root, id)?;
    }
    // Every run, even for one: the runs before it say where it found the branch.
    let dirs: Vec<PathBuf> = logs::run_ids(&root).iter().map(|id| logs::run_dir(&root, id)).collect();
    // Only removals and ralph's own commits are read from it: a store that cannot be read
    // costs those, not the figures.
    let store = crate::learnings::Store::load(&root).unwrap_or_default();
    let stats = crate::stats::collect(&dirs, a.run.as_deref(), &store)
        .map_err(|e| CliError::failure(format!("cannot {}", crate::error::chain(&e))))?;
    let text = if a.json {
        let mut t = serde_json::to_string_pretty(&stats).map_err(|e| CliError::failure(e.to_string()))?;
        t.push('\n');
        t
    } else {
        crate::stats::render(&stats)
    };
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::failure(format!("cannot print the figures: {e}")))
        }
        _ => Ok(crate::exit_code::OK),
    }
}
