//! `ralph stats`: figures across every run's records (or one run's, `--run`), as a table or,
//! with `--json`, as the documented JSON object of [`crate::stats::Stats`].

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
    let dirs: Vec<PathBuf> = match &a.run {
        Some(id) => vec![existing_run(&root, id)?],
        None => logs::run_ids(&root).iter().map(|id| logs::run_dir(&root, id)).collect(),
    };
    let stats = crate::stats::collect(dirs.iter().map(PathBuf::as_path), a.run.clone())
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
