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
//!    recorded as `interrupted` with the cause `crashed` (no attempt used), with the tokens
//!    and cost the agent had reported until then (`usage.json`) and the time it ran, which the
//!    run's budgets count and so do the task's own totals in `state.json` (its `max_task_*`
//!    limits).
//!
//! Committed work is never touched.

use super::iteration::{STARTED, Started, USAGE, Usage};
use super::revert::{Back, revert};
use crate::error::CliError;
use crate::git;
use crate::logs;
use crate::record::{self, Cause, IterationRecord, Outcome};
use crate::reporter::Reporter;
use crate::secrets::Secrets;
use crate::state::{RALPH_DIR, State, TMP_PREFIX};
use std::path::Path;
use std::time::Duration;

/// Puts the crashed run `run_id` right; returns the time its cut iterations ran, which the
/// run's time budget had not counted yet.
pub fn crashed_run(
    root: &Path,
    run_dir: &Path,
    run_id: &str,
    secrets: &Secrets,
    reporter: &mut dyn Reporter,
) -> Result<Duration, CliError> {
    let killed = kill_orphans(root, run_id);
    if killed > 0 {
        reporter.line(&format!("ended {killed} process(es) left running by the killed run {run_id}"));
    }
    mend_records(&logs::records_path(run_dir));
    remove_temp_files(root);
    remove_stale_git_locks(root);
    let recorded: Vec<u32> =
        record::read_all(&logs::records_path(run_dir)).iter().map(|r| r.iteration).collect();
    let mut ran = Duration::ZERO;
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
        let record = settle(root, run_id, n, &dir, &started, secrets)?;
        reporter.line(&format!(
            "recovered iteration {n} ({}) of the killed run: {}",
            started.task,
            record.failure.as_deref().unwrap_or("")
        ));
        // The task's own totals, before the record: a kill between the two finds the
        // iteration counted and does not count it twice.
        count_for_task(root, run_id, &record)?;
        record::append(&logs::records_path(run_dir), &record)
            .map_err(|e| CliError::failure(format!("cannot write the iteration record: {e}")))?;
        ran += Duration::from_millis(record.duration_ms);
    }
    Ok(ran)
}

/// Adds a cut iteration's tokens and time to its task's totals (no attempt: the iteration was
/// not the agent's failure), so that the task's limits see them; unless the iteration's own
/// end counted them already (ralph was killed after saving the state, before the record).
fn count_for_task(root: &Path, run_id: &str, record: &IterationRecord) -> Result<(), CliError> {
    let mut state = State::load(root)?;
    let ts = state.task_mut(&record.task);
    let this = (run_id.to_string(), record.iteration);
    if ts.counted.as_ref() == Some(&this) {
        return Ok(());
    }
    ts.iterations += 1;
    ts.tokens += record.tokens.map_or(0, |t| t.total());
    ts.elapsed_ms += record.duration_ms;
    ts.counted = Some(this);
    state.save(root)?;
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

/// How the branch stands against where the killed iteration started.
enum History {
    /// HEAD is still `head_before`, or every commit on top was made while ralph was alive (the
    /// agent's own, which the iteration would have folded or reverted): back to `head_before`.
    Untouched,
    /// ralph committed the iteration (`ours`, its last commit with the iteration's trailers);
    /// `user` commits were made on top of it since.
    Committed { ours: String, user: usize },
    /// The iteration committed nothing, and commits were made on top since ralph died: the
    /// user's, kept.
    UserCommits(usize),
    /// `head_before` is no longer in HEAD's history: the user moved the branch.
    Moved,
    /// ralph's commit (this sha) of another iteration lies between `head_before` and HEAD: the
    /// iteration began above it, so its `started.json` does not hold (an agent that rewrote it,
    /// then killed ralph, would have the branch reset far below where it began).
    Doubtful(String),
}

/// Keeps ralph's commit of the iteration if it was made, and every commit made since ralph
/// died (the user's); saves what is left uncommitted as `rejected.patch` and reverts it, never
/// resetting the branch below a commit ralph did not make.
fn settle(
    root: &Path,
    run_id: &str,
    n: u32,
    dir: &Path,
    st: &Started,
    secrets: &Secrets,
) -> Result<IterationRecord, CliError> {
    // A parallel run's worker ran it in its own worktree, which the next parallel run resets
    // (its green work, if it committed any, waits on the slot's branch to be landed): the
    // user's checkout is none of its business.
    if let Some(w) = st.worker {
        let failure = format!(
            "ralph was killed while worker {w} ran this iteration in its own worktree; the user's checkout was not touched"
        );
        let mut r = record(run_id, n, st, dir, last_alive(dir), None, Vec::new(), failure);
        r.worker = Some(w);
        return Ok(r);
    }
    if let Some(branch) = &st.branch
        && git::current_branch(root)?.as_deref() != Some(branch.as_str())
    {
        git::point_head_at(root, branch)?;
    }
    let head = git::head(root)?.unwrap_or_default();
    let last_alive = last_alive(dir);
    let history = history(root, run_id, n, st, &head, last_alive)?;
    let (base, commit, mut files_changed, mut failure) = match &history {
        History::Moved => {
            let failure = format!(
                "ralph was killed during this iteration, and the branch was moved since (HEAD {} no longer descends from {}, where the iteration started): ralph left history and the working tree as they are",
                short(&head),
                short(&st.head_before)
            );
            return Ok(record(run_id, n, st, dir, last_alive, None, Vec::new(), failure));
        }
        History::Doubtful(other) => {
            let failure = format!(
                "ralph was killed during this iteration, and where its started.json says it began ({}) is below ralph's commit {} of another iteration, so it began elsewhere (the file was changed): ralph left history and the working tree as they are",
                short(&st.head_before),
                short(other)
            );
            return Ok(record(run_id, n, st, dir, last_alive, None, Vec::new(), failure));
        }
        History::Committed { ours, user } => (
            head.clone(),
            Some(ours.clone()),
            git::changed_between(root, &st.head_before, ours)?,
            format!("ralph was killed after committing this iteration; its commit is kept{}", kept(*user)),
        ),
        History::UserCommits(user) => (
            head.clone(),
            None,
            Vec::new(),
            format!("ralph was killed during this iteration; its changes were reverted{}", kept(*user)),
        ),
        History::Untouched => (
            st.head_before.clone(),
            None,
            Vec::new(),
            "ralph was killed during this iteration; its changes were reverted".to_string(),
        ),
    };
    // What is left uncommitted on top of `base` is the killed iteration's: saved, then reverted.
    let back = match (&st.snapshot, &history) {
        (Some(tree), History::Untouched) => Back::Snapshot { head: &st.head_before, tree },
        _ => Back::To(&base),
    };
    // Recovery runs before the run's watch starts: nothing to keep right.
    let left = revert(&crate::worktree::Worktree::unwatched(root), &base, back, dir, secrets)?;
    if st.snapshot.is_some() && !matches!(history, History::Untouched) && !left.is_empty() {
        failure.push_str(
            "; the uncommitted changes the iteration started from (--allow-dirty) are in rejected.patch too, since commits were made on top",
        );
    }
    if commit.is_some() {
        if !left.is_empty() {
            failure.push_str("; uncommitted changes left after it were saved as rejected.patch and reverted");
        }
    } else {
        files_changed = left;
    }
    Ok(record(run_id, n, st, dir, last_alive, commit, files_changed, failure))
}

/// Where the branch stands: walks from HEAD back to `head_before`.
fn history(
    root: &Path,
    run_id: &str,
    n: u32,
    st: &Started,
    head: &str,
    last_alive: std::time::SystemTime,
) -> Result<History, CliError> {
    if head == st.head_before {
        return Ok(History::Untouched);
    }
    if !git::is_ancestor(root, &st.head_before, head)? {
        return Ok(History::Moved);
    }
    let this = (run_id, n.to_string());
    if let Some([sha, ..]) = git::ralph_commits_between(root, &st.head_before, head)?
        .into_iter()
        .find(|[_, run, iteration]| (run.as_str(), iteration) != (this.0, &this.1))
    {
        return Ok(History::Doubtful(sha));
    }
    let commits = git::first_parent_commits(root, &st.head_before, head)?;
    if let Some(i) = commits.iter().rposition(|(sha, _)| git::commit_has_trailers(root, sha, run_id, n)) {
        return Ok(History::Committed { ours: commits[i].0.clone(), user: commits.len() - i - 1 });
    }
    // No commit of ralph's: commits the agent made while ralph was alive are the iteration's
    // work; one made after ralph's last sign of life is the user's, and so is every commit
    // under it that is kept with it (the branch is never reset below a user's commit).
    let alive = last_alive.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let alive = i64::try_from(alive).unwrap_or(i64::MAX);
    if commits.iter().all(|(_, t)| *t <= alive) {
        return Ok(History::Untouched);
    }
    Ok(History::UserCommits(commits.len()))
}

fn kept(user: usize) -> String {
    if user == 0 { String::new() } else { format!("; the {user} commit(s) made on top since are kept") }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The last time the iteration showed life: its folder's newest write (the agent's log, the
/// usage it streamed, the checks' log).
fn last_alive(dir: &Path) -> std::time::SystemTime {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| mtime(&e.path()));
    files.chain(mtime(dir)).max().unwrap_or_else(std::time::SystemTime::now)
}

#[allow(clippy::too_many_arguments)]
fn record(
    run_id: &str,
    n: u32,
    st: &Started,
    dir: &Path,
    last_alive: std::time::SystemTime,
    commit: Option<String>,
    files_changed: Vec<String>,
    failure: String,
) -> IterationRecord {
    // The iteration lasted until it last showed life.
    let start = humantime::parse_rfc3339(&st.started_at).unwrap_or(last_alive);
    let duration_ms =
        last_alive.duration_since(start).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    // What the agent spent before it was cut counts against the run's budgets.
    let usage: Usage = crate::fsx::read(&dir.join(USAGE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    IterationRecord {
        tokens: usage.tokens,
        cost_usd: usage.cost_usd,
        started_at: st.started_at.clone(),
        ended_at: humantime::format_rfc3339_millis(last_alive).to_string(),
        duration_ms,
        head_before: Some(st.head_before.clone()),
        commit,
        files_changed,
        failure: Some(failure),
        cause: Some(Cause::Crashed),
        agent: st.agent.clone(),
        ..IterationRecord::new(run_id, n, &st.task, Outcome::Interrupted)
    }
}

/// Kills every process whose environment names this run of this repository, and waits until
/// they are gone; returns how many. Both are matched: run ids are timestamps, and two
/// repositories may start runs in the same second. Git commands are marked too (see
/// [`git::mark_run`]): a `git commit` orphaned mid-hook is ended here, and only then are its
/// locks removed and HEAD read, so it cannot land later inside the next iteration.
pub fn kill_orphans(root: &Path, run_id: &str) -> usize {
    let needle = format!("RALPH_RUN_ID={run_id}\0");
    let root_needle = format!("RALPH_ROOT={}\0", root.display());
    let me = std::process::id();
    let mut killed = 0;
    // Again while a scan finds any: a dying parent may have forked a child between the scan
    // and the kill.
    for _ in 0..10 {
        let Ok(entries) = std::fs::read_dir("/proc") else { return killed };
        let mut round = Vec::new();
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if u32::try_from(pid).ok() == Some(me) {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
            let Some(start) = start_time(pid) else { continue };
            if memchr::memmem::find(&env, needle.as_bytes()).is_some()
                && memchr::memmem::find(&env, root_needle.as_bytes()).is_some()
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                round.push((pid, start));
            }
        }
        if round.is_empty() {
            break;
        }
        killed += round.len();
        // SIGKILL is not instant: a process in the kernel (writing a file) finishes that first.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while round.iter().any(|&(pid, start)| start_time(pid) == Some(start))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    killed
}

/// When process `pid` started (clock ticks since boot), `None` once it is gone or a zombie:
/// with the pid, this names one process even if the pid is reused.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold anything): state is field 3,
    // starttime field 22.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
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
