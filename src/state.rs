//! What ralph keeps between iterations and runs, under `.ralph/`: the per-task state
//! (`state.json`), each run's metadata (`runs/<id>/run.json`), and the single-instance lock.
//!
//! Invariants: every write is atomic and survives a power cut (see [`crate::durable`], the leaf
//! that does the writing and syncing; its functions are re-exported here); the lock is a
//! kernel lock released when the process dies, so a crashed run never blocks the next one, and
//! is made again ([`RunLock::mend`]) if an agent removes or replaces its file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub use crate::durable::{
    StateError, Synced, TMP_PREFIX, atomic_write, atomic_write_later, create_later, flush, load_json,
    replace, sync_later,
};
pub use crate::fsx::RALPH_DIR;

/// ralph's own files directly in `.ralph/` that a run reads or writes before any agent: the
/// lock, the state, the learnings store.
pub const OWN_FILES: [&str; 3] = ["lock", "state.json", "learnings.json"];

/// Refuses a run whose own files in `.ralph/` are not regular files (a link the agent of a run
/// killed mid-iteration planted, say): ralph never follows one nor decides on its own to remove
/// what it did not make while no agent is to blame. After an agent the frame puts them right.
pub fn check_own_files(root: &Path) -> Result<(), StateError> {
    let dir = root.join(RALPH_DIR);
    for name in OWN_FILES {
        let path = dir.join(name);
        let why = match crate::fsx::kind(&path) {
            Ok(Some(crate::fsx::Kind::Link)) => "is a symbolic link, which ralph does not follow",
            Ok(Some(crate::fsx::Kind::Dir | crate::fsx::Kind::Other)) => "is not a regular file",
            // Missing (or `.ralph` missing): made when needed; `.ralph` itself is checked apart.
            _ => continue,
        };
        return Err(StateError::NotOurFile { path, name, why });
    }
    Ok(())
}

/// Creates `.ralph/` with a `.gitignore` that ignores everything in it, so git never sees
/// ralph's files whatever the user's own ignore rules say. `.ralph` that is a symbolic link, or
/// not a folder, is refused ([`check_ralph_dir`]).
pub fn ensure_ralph_dir(root: &Path) -> Result<PathBuf, StateError> {
    check_ralph_dir(root)?;
    let dir = root.join(RALPH_DIR);
    let err = |source| StateError::Write { path: dir.clone(), source };
    crate::fsx::create_dir_all(&dir).map_err(err)?;
    let ignore = dir.join(".gitignore");
    if crate::fsx::read_to_string(&ignore).map(|s| s.trim() != "*").unwrap_or(true) {
        atomic_write(&ignore, b"*\n")?;
    }
    Ok(dir)
}

/// Refuses `.ralph` that is a symbolic link or not a folder: every command that writes there
/// checks it first. A missing one is fine (it is made).
pub fn check_ralph_dir(root: &Path) -> Result<(), StateError> {
    let path = root.join(RALPH_DIR);
    let why = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => "is a symbolic link, which ralph does not follow",
        Ok(m) if !m.is_dir() => "is not a folder",
        _ => return Ok(()),
    };
    Err(StateError::NotOurs { path, why })
}

/// The single-instance lock on `.ralph/lock`, held for the whole run.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    dir: PathBuf,
}

impl RunLock {
    /// Takes the lock, or says which pid holds it.
    pub fn acquire(ralph_dir: &Path) -> Result<RunLock, StateError> {
        let path = ralph_dir.join("lock");
        let err = |source| StateError::Write { path: path.clone(), source };
        // Never through a link: the pid is written into this file.
        let mut file = crate::fsx::open_dir(ralph_dir, true)
            .and_then(|d| d.open_write(std::ffi::OsStr::new("lock"), false, false))
            .map_err(err)?;
        // A holder that is gone already (killed a moment ago) may still hold the lock while the
        // kernel finishes its exit: waited out for a while, never taken from a live run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    file.rewind().map_err(err)?;
                    let _ = file.read_to_string(&mut pid);
                    let pid = pid.trim().to_string();
                    let gone = pid.parse::<u32>().is_ok_and(|p| !running(p));
                    if gone && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    return Err(StateError::Locked {
                        pid: if pid.is_empty() { "unknown".into() } else { pid },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
        }
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        write!(file, "{}", std::process::id()).map_err(err)?;
        file.flush().map_err(err)?;
        Ok(RunLock { file, dir: ralph_dir.to_path_buf() })
    }

    /// ralph's folder, which holds the lock.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `.ralph/lock` the file this run locks again if it is not (the agent removed it,
    /// or put a link, a folder or another file in its place, which would let a second run in
    /// and refuse every later one): whatever is at the name goes (a link's target is never
    /// touched), and a new lock file is made and locked. Returns whether it had to.
    pub fn mend(&mut self) -> Result<bool, StateError> {
        let path = self.dir.join("lock");
        let err = |source| StateError::Write { path: path.clone(), source };
        let name = std::ffi::OsStr::new("lock");
        let dir = crate::fsx::open_dir(&self.dir, false).map_err(err)?;
        let ours = {
            use std::os::unix::fs::MetadataExt;
            let m = self.file.metadata().map_err(err)?;
            Some((m.dev(), m.ino()))
        };
        if dir.file_id(name).map_err(err)? == ours {
            return Ok(false);
        }
        dir.remove_any(name).map_err(err)?;
        let mut file = dir.create_new(name, 0o644).map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(err(std::io::Error::other("another process locked it first")));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        write!(file, "{}", std::process::id()).map_err(err)?;
        file.flush().map_err(err)?;
        self.file = file;
        Ok(true)
    }

    /// The pid of the run holding the lock, if one does.
    pub fn holder(ralph_dir: &Path) -> Option<u32> {
        let path = ralph_dir.join("lock");
        let mut file = crate::fsx::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut pid = String::new();
                file.read_to_string(&mut pid).ok()?;
                pid.trim().parse().ok()
            }
        }
    }
}

/// Whether process `pid` runs (a zombie does not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// What already fails on the clean tree at `head`: per check command, its failing tests. An
/// empty list means the runner named none (pytest not installed, a collection or compile error,
/// a timeout): nothing of that command's failure can be told apart from new breakage, so it is
/// never tolerated and the command must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub head: String,
    pub failing: BTreeMap<String, Vec<String>>,
}

/// What a run has spent, as persisted and shown by `ralph status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Iterations that count against `max_iterations` (a usage limit's wait does not).
    pub iterations: u32,
    /// Time ralph was running, across resumptions.
    pub elapsed_ms: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub consecutive_failures: u32,
    /// Counted iterations in a row that changed no file.
    pub no_change_streak: u32,
    /// The last failure's signature and how many iterations in a row failed with it.
    pub failure_signature: Option<String>,
    pub failure_streak: u32,
}

/// What ralph remembers of one task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskState {
    /// Iterations spent on the task, across runs.
    #[serde(default)]
    pub iterations: u32,
    /// Failed iterations since the task was last done or unblocked; `max_attempts` of them
    /// block it.
    #[serde(default)]
    pub attempts: u32,
    /// Whether ralph blocked it (so an unblock by the user resets `attempts`).
    #[serde(default)]
    pub blocked_by_ralph: bool,
    /// Tokens its iterations used, since it was last unblocked.
    #[serde(default)]
    pub tokens: u64,
    /// Time its iterations took, since it was last unblocked.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// The last iteration (run id, number) whose tokens and time are in `tokens` and
    /// `elapsed_ms`: recovery adds a killed iteration's only if its end had not already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<(String, u32)>,
    /// A fingerprint of the spec's body when the task was done: a later edit reopens it.
    #[serde(default)]
    pub done_hash: Option<String>,
    /// The last iteration's outcome on this task, for the next prompt.
    #[serde(default)]
    pub last: Option<LastIteration>,
    /// Iterations in a row restarted because the spec was edited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// ralph's block of a story or checklist item (whose file has no place for one): the
    /// reason, and the fingerprint of the task's text then. Editing the task lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<(String, String)>,
}

/// The handoff from one iteration on a task to the next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastIteration {
    pub run_id: String,
    pub iteration: u32,
    pub outcome: String,
    /// What failed: the tail of the failing check's output, or of the agent's.
    pub failure: Option<String>,
    /// The agent's `<progress>` note.
    pub progress: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `.ralph/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskState>,
    /// Per check command, the number of tests its runner reported at the last green
    /// iteration: fewer later means tests were removed (a gate rejects that).
    #[serde(default)]
    pub test_counts: BTreeMap<String, u64>,
    /// What the project's checks fail on the clean tree at a commit.
    #[serde(default)]
    pub baseline: Option<Baseline>,
}

impl State {
    fn path(root: &Path) -> PathBuf {
        root.join(RALPH_DIR).join("state.json")
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(root: &Path) -> Result<State, StateError> {
        let path = Self::path(root);
        Ok(load_json(&path)?.unwrap_or_default())
    }

    /// Writes the state atomically.
    pub fn save(&self, root: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| StateError::Corrupt { path: Self::path(root), message: e.to_string() })?;
        replace(&Self::path(root), &bytes)
    }

    pub fn task(&self, id: &str) -> TaskState {
        self.tasks.get(id).cloned().unwrap_or_default()
    }

    pub fn task_mut(&mut self, id: &str) -> &mut TaskState {
        self.tasks.entry(id.to_string()).or_default()
    }

    /// ralph's blocks of stories and checklist items, by task id.
    pub fn blocks(&self) -> BTreeMap<String, (String, String)> {
        self.tasks.iter().filter_map(|(id, t)| Some((id.clone(), t.block.clone()?))).collect()
    }
}

/// `runs/<id>/run.json`: one run's metadata, rewritten as the run goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunMeta {
    pub run_id: String,
    pub pid: u32,
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    pub iterations: u32,
    /// Set when the run ends.
    #[serde(default)]
    pub exit_code: Option<u8>,
    /// One line: why the run ended.
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// While the run waits out a usage limit: until when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<String>,
    /// How many times `ralph run` started or resumed this run.
    #[serde(default)]
    pub sessions: u32,
    /// Active time before the current session.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// What the run has spent, as of the last iteration.
    #[serde(default)]
    pub spent: Option<Spent>,
    /// The limits of the current (or last) session.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Sessions ended by a person: `ralph stop`, `ralph stop --now`, Ctrl-C or a termination
    /// signal (`end_reason` keeps only the last end, and a resumed run clears it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stops: u32,
    /// Commits ralph made between iterations (a block, a reopen), which no record names:
    /// `ralph stats` tells them from a person's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ralph_commits: Vec<OwnCommit>,
    /// Agents left out of the fallback chain until their usage limit resets: per agent name,
    /// the reset (RFC 3339). A resumed run does not try them again before then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents_limited: BTreeMap<String, String>,
}

/// A commit ralph made on its own, and the commit it was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnCommit {
    pub commit: String,
    pub parent: String,
}

/// The run's limits, as `ralph status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub max_iterations: u32,
    pub max_duration_ms: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_cost: Option<f64>,
}

impl RunMeta {
    pub fn load(run_dir: &Path) -> Result<RunMeta, StateError> {
        let path = run_dir.join("run.json");
        load_json(&path)?.ok_or_else(|| StateError::Read {
            path,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), StateError> {
        let path = run_dir.join("run.json");
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| StateError::Corrupt { path: path.clone(), message: e.to_string() })?;
        replace(&path, &bytes)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        // A second open file description conflicts, as a second process would.
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert_eq!(RunLock::holder(dir.path()), Some(std::process::id()));
        drop(lock);
        assert_eq!(RunLock::holder(dir.path()), None);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_replaced_by_a_link_is_made_again_and_held() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "precious").unwrap();
        let mut lock = RunLock::acquire(dir.path()).unwrap();
        assert!(!lock.mend().unwrap(), "nothing to mend");
        let at = dir.path().join("lock");
        std::fs::remove_file(&at).unwrap();
        std::os::unix::fs::symlink(outside.path(), &at).unwrap();
        assert!(lock.mend().unwrap());
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&at).unwrap().is_file());
        // Held again: a second run is refused, naming this one.
        assert_eq!(RunLock::holder(dir.path()), Some(std::process::id()));
        assert!(RunLock::acquire(dir.path()).is_err());
        // Removed outright, or replaced by another file: the same.
        std::fs::remove_file(&at).unwrap();
        assert!(lock.mend().unwrap());
        std::fs::remove_file(&at).unwrap();
        std::fs::write(&at, "1").unwrap();
        assert!(lock.mend().unwrap());
        assert_eq!(RunLock::holder(dir.path()), Some(std::process::id()));
        assert!(!lock.mend().unwrap());
    }

    /// The agent plants links at `.prev`, `.spare` and the lock pointing outside: nothing
    /// outside changes; a rewritten file's scratch slots are made afresh, the lock refused.
    #[test]
    fn planted_links_are_never_written_through() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let ralph = dir.path().join(RALPH_DIR);
        std::fs::create_dir(&ralph).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "precious").unwrap();
        let p = ralph.join("state.json");
        replace(&p, b"[1]").unwrap();
        symlink(&outside, ralph.join("state.json.prev")).unwrap();
        symlink(&outside, ralph.join("state.json.spare")).unwrap();
        for v in ["[2]", "[3]", "[4]"] {
            replace(&p, v.as_bytes()).unwrap();
        }
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), Some(vec![4]));
        // The file itself a link: swapped away unopened; read, it is refused.
        std::fs::remove_file(&p).unwrap();
        symlink(&outside, &p).unwrap();
        let e = load_json::<Vec<u32>>(&p).unwrap_err();
        assert!(crate::error::chain(&e).contains("state.json is a symbolic link"), "{e}");
        replace(&p, b"[5]").unwrap();
        symlink(&outside, ralph.join("lock")).unwrap();
        let e = RunLock::acquire(&ralph).unwrap_err();
        assert!(crate::error::chain(&e).contains("lock is a symbolic link"), "{e}");
        assert_eq!(RunLock::holder(&ralph), None);
        flush();
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    }

    #[test]
    fn a_linked_ralph_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(RALPH_DIR)).unwrap();
        let e = ensure_ralph_dir(&root).unwrap_err();
        assert!(matches!(e, StateError::NotOurs { .. }), "{e}");
        assert!(e.to_string().contains(".ralph is a symbolic link"), "{e}");
        assert_eq!(crate::error::CliError::from(e).code, crate::exit_code::USAGE);
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn state_round_trips_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::default();
        s.task_mut("a").attempts = 2;
        std::fs::create_dir(dir.path().join(RALPH_DIR)).unwrap();
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap().task("a").attempts, 2);
        std::fs::write(dir.path().join(".ralph/state.json"), "{").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json is corrupt"), "{e}");
    }
}
