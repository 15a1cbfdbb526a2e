//! Recovery of a run that ended without ending: ralph was killed (`kill -9`, a crash, a power
//! cut) mid-iteration. Before anything else happens, the next `ralph run`:
//!
//! 1. ends the orphans of the killed run: every process whose environment carries its
//!    `RALPH_RUN_ID` and `RALPH_ROOT` (the agent's whole group, grandchildren included, and
//!    the checks);
//! 2. removes what a half-done write or git command left: a torn last line of
//!    `iterations.jsonl`, ralph's temporary files, stale git lock files;
//! 3. settles the interrupted iteration: if ralph's commit for it exists, the work is kept;
//!    otherwise its diff is saved as `rejected.patch` and the tree restored; either way it is
//!    recorded as `interrupted` (no attempt used).
//!
//! Committed work is never touched.

use super::iteration::{STARTED, Started};
use crate::error::CliError;
use crate::git;
use crate::logs;
use crate::record::{self, IterationRecord, Outcome};
use crate::reporter::Reporter;
use crate::state::{RALPH_DIR, TMP_PREFIX};
use std::path::Path;
use std::time::Duration;

/// Puts the crashed run `run_id` right.
pub fn crashed_run(
    root: &Path,
    run_dir: &Path,
    run_id: &str,
    reporter: &mut dyn Reporter,
) -> Result<(), CliError> {
    let killed = kill_orphans(root, run_id);
    if killed > 0 {
        reporter.line(&format!("ended {killed} process(es) left running by the killed run {run_id}"));
    }
    mend_records(&logs::records_path(run_dir));
    remove_temp_files(root);
    remove_stale_git_locks(root);
    let recorded: Vec<u32> =
        record::read_all(&logs::records_path(run_dir)).iter().map(|r| r.iteration).collect();
    for n in logs::iterations(run_dir) {
        if recorded.contains(&n) {
            continue;
        }
        let dir = logs::iter_dir(run_dir, n);
        let started: Option<Started> =
            crate::fsx::read(&dir.join(STARTED)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(started) = started else {
            // Killed before the iteration touched anything: nothing to settle.
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        };
        let record = settle(root, run_id, n, &dir, &started)?;
        reporter.line(&format!(
            "recovered iteration {n} ({}) of the killed run: {}",
            started.task,
            record.failure.as_deref().unwrap_or("")
        ));
        record::append(&logs::records_path(run_dir), &record)
            .map_err(|e| CliError::failure(format!("cannot write the iteration record: {e}")))?;
    }
    Ok(())
}

/// Whether an iteration of the run started (touched the tree) and has no record.
pub fn has_unsettled(run_dir: &Path) -> bool {
    let recorded: Vec<u32> =
        record::read_all(&logs::records_path(run_dir)).iter().map(|r| r.iteration).collect();
    logs::iterations(run_dir)
        .into_iter()
        .any(|n| !recorded.contains(&n) && logs::iter_dir(run_dir, n).join(STARTED).exists())
}

/// Keeps ralph's commit of the iteration if it was made, else saves the diff and restores.
fn settle(root: &Path, run_id: &str, n: u32, dir: &Path, st: &Started) -> Result<IterationRecord, CliError> {
    if let Some(branch) = &st.branch
        && git::current_branch(root)?.as_deref() != Some(branch.as_str())
    {
        git::point_head_at(root, branch)?;
    }
    let head = git::head(root)?.unwrap_or_default();
    let committed = head != st.head_before && git::commit_has_trailers(root, &head, run_id, n);
    let (commit, files_changed, failure) = if committed {
        let files = git::changed_between(root, &st.head_before, &head)?;
        // Anything after the commit (learnings not yet committed) goes back to the commit.
        git::restore(root, &head)?;
        (
            Some(head),
            files,
            "ralph was killed after committing this iteration; its commit is kept".to_string(),
        )
    } else {
        git::add_all(root)?;
        let files = git::staged_files(root, &st.head_before)?;
        if !files.is_empty() {
            let patch = git::staged_patch(root, &st.head_before)?;
            let _ = crate::fsx::write(&dir.join("rejected.patch"), &patch);
        }
        match &st.snapshot {
            Some(tree) => git::restore_snapshot(root, &st.head_before, tree)?,
            None => git::restore(root, &st.head_before)?,
        }
        (None, files, "ralph was killed during this iteration; its changes were reverted".to_string())
    };
    // The iteration lasted until its log was last written.
    let last_alive = std::fs::metadata(dir.join("agent.log"))
        .or_else(|_| std::fs::metadata(dir))
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    let start = humantime::parse_rfc3339(&st.started_at).unwrap_or(last_alive);
    let duration_ms =
        last_alive.duration_since(start).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    Ok(IterationRecord {
        started_at: st.started_at.clone(),
        ended_at: humantime::format_rfc3339_millis(last_alive).to_string(),
        duration_ms,
        head_before: Some(st.head_before.clone()),
        commit,
        files_changed,
        failure: Some(failure),
        ..IterationRecord::new(run_id, n, &st.task, Outcome::Interrupted)
    })
}

/// Kills every process whose environment names this run of this repository; returns how many.
/// Both are matched: run ids are timestamps, and two repositories may start runs in the same
/// second.
pub fn kill_orphans(root: &Path, run_id: &str) -> usize {
    let needle = format!("RALPH_RUN_ID={run_id}\0");
    let root_needle = format!("RALPH_ROOT={}\0", root.display());
    let me = std::process::id();
    let mut killed = 0;
    // Twice: a dying parent may have forked a child between the scan and the kill.
    for _ in 0..2 {
        let Ok(entries) = std::fs::read_dir("/proc") else { return killed };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if u32::try_from(pid).ok() == Some(me) {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
            if memchr::memmem::find(&env, needle.as_bytes()).is_some()
                && memchr::memmem::find(&env, root_needle.as_bytes()).is_some()
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    killed
}

/// Cuts a torn last line (a crash mid-append) so the next record starts on its own line.
fn mend_records(path: &Path) {
    let Ok(bytes) = crate::fsx::read(path) else { return };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return;
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let _ = crate::fsx::write(path, &bytes[..keep]);
}

/// Removes temporary files of atomic writes that never got renamed.
fn remove_temp_files(root: &Path) {
    for dir in [root.to_path_buf(), root.join(crate::backlog::SPECS_DIR), root.join(RALPH_DIR)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Removes git lock files a killed git command left. The orphans are dead and ralph holds its
/// own lock, so nothing of ours still writes; a git command of the killed run that is still
/// finishing gets a few seconds first.
fn remove_stale_git_locks(root: &Path) {
    let Some(git_dir) = git::git_dir(root) else { return };
    let mut locks = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
    if let Ok(Some(branch)) = git::current_branch(root) {
        locks.push(git_dir.join("refs/heads").join(format!("{branch}.lock")));
    }
    for lock in locks {
        for _ in 0..50 {
            if !lock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&lock);
    }
}
