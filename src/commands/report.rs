//! `ralph report`: writes the HTML page of [`crate::runreport`] for a run (default: the latest)
//! to `.ralph/runs/<id>/report.html` or `--out FILE`, and prints where. Links to the
//! iterations' files are relative to where the page is written, so the page and the run
//! folder can be moved together.

use crate::cli::ReportArgs;
use crate::error::CliError;
use crate::logs;
use crate::record;
use crate::runreport;
use crate::state::RunMeta;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The path segments that lead from folder `from` to `to` (both absolute and canonical).
fn relative(from: &Path, to: &Path) -> Vec<String> {
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<String> = a[common..].iter().map(|_| "..".to_string()).collect();
    out.extend(b[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    out
}

/// Runs `ralph report`.
pub fn run(cwd: &Path, a: &ReportArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    let run_id = match &a.run {
        Some(id) => {
            super::stats::existing_run(&root, id)?;
            id.clone()
        }
        None => logs::latest_run(&root)
            .ok_or_else(|| CliError::usage("no runs yet").hint("start one with `ralph run`"))?,
    };
    let run_dir = logs::run_dir(&root, &run_id);
    let meta = RunMeta::load(&run_dir).ok();
    let records = record::read_all(&logs::records_path(&run_dir));
    let recorded: BTreeSet<u32> = records.iter().map(|r| r.iteration).collect();
    let unrecorded: Vec<u32> =
        logs::iterations(&run_dir).into_iter().filter(|n| !recorded.contains(n)).collect();

    let mut out = match &a.out {
        Some(p) => cwd.join(p),
        None => run_dir.join("report.html"),
    };
    if out.is_dir() {
        out = out.join("report.html");
    }
    let out_dir = out.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        CliError::failure(format!("cannot {what} {}: {e}", p.display()))
    };
    crate::fsx::create_dir_all(&out_dir).map_err(|e| io("create", &out_dir, e))?;
    let from = out_dir.canonicalize().map_err(|e| io("read", &out_dir, e))?;
    let to = run_dir.canonicalize().map_err(|e| io("read", &run_dir, e))?;
    let prefix = relative(&from, &to);

    let links = runreport::links(&run_dir, &prefix, recorded.iter().chain(&unrecorded).copied());
    let generated_at = logs::now_rfc3339();
    let html = runreport::render(&runreport::Input {
        run_id: &run_id,
        meta: meta.as_ref(),
        records: &records,
        unrecorded: &unrecorded,
        links: &links,
        generated_at: &generated_at,
    });
    crate::state::atomic_write(&out, html.as_bytes())?;
    crate::outln!("{}", out.display());
    Ok(crate::exit_code::OK)
}

#[cfg(test)]
mod tests {
    use super::relative;
    use std::path::Path;

    #[test]
    fn relative_paths_climb_then_descend() {
        let r = relative(Path::new("/a/b/c"), Path::new("/a/x/y"));
        assert_eq!(r, ["..", "..", "x", "y"]);
        assert!(relative(Path::new("/a/b"), Path::new("/a/b")).is_empty());
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b")), ["b"]);
    }
}
