//! What ralph keeps between iterations and runs, under `.ralph/`: the per-task state
//! (`state.json`), each run's metadata (`runs/<id>/run.json`), and the single-instance lock.
//!
//! Invariants: every write is atomic (temporary file in the same folder, sync, rename; or, for
//! the files rewritten every iteration, an older version's file, exchange, sync in the
//! background), so a crash never leaves half a file, and after a power cut a file that did not
//! reach the disk is read from its synced previous version (`.prev` always holds one); the
//! lock is a kernel lock released when the process dies, so a crashed run never blocks the
//! next one, and is made again ([`RunLock::mend`]) if an agent removes or replaces its file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// ralph's folder at the repository root. Never committed, never touched by a revert.
pub const RALPH_DIR: &str = ".ralph";

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({message}); move it aside to start afresh")]
    Corrupt { path: PathBuf, message: String },
    #[error("another `ralph run` (pid {pid}) is already running in this repository")]
    Locked { pid: String },
    /// ralph's folder is not ralph's: a link, or not a folder (bad input, exit 2).
    #[error("{path} {why}; remove it (ralph makes its folder itself)")]
    NotOurs { path: PathBuf, why: &'static str },
    /// One of ralph's own files in `.ralph/` (`name`) is not a regular file: a link planted
    /// there, found before any agent ran (bad input, exit 2).
    #[error("{path} {why}, where ralph keeps a file of its own")]
    NotOurFile { path: PathBuf, name: &'static str, why: &'static str },
}

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

/// The prefix of atomic writes' temporary files.
pub const TMP_PREFIX: &str = ".ralph-tmp-";

/// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never half.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_new(path, bytes, true)
}

/// [`atomic_write`] synced in the background ([`sync_later`]): for a file ralph writes at every
/// iteration (`started.json`), which a power cut may take back (the next run then leaves the
/// tree as it is and says so).
pub fn atomic_write_later(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_new(path, bytes, false)
}

fn write_new(path: &Path, bytes: &[u8], sync_now: bool) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| err(std::io::Error::other("no file name")))?;
    // The folder opened once, every component from `.ralph` down checked (no link followed):
    // the temporary file and the rename happen in it, whatever is done to the path meanwhile.
    let dir = crate::fsx::open_dir(path.parent().unwrap_or(Path::new(".")), true).map_err(err)?;
    // Keep the file's permissions when replacing it (specs and AGENTS.md are the user's); a
    // new file gets the usual 0644, not a temporary file's 0600. A link's target is not looked at.
    let mode = dir.mode_of(name).unwrap_or(0o644);
    // A recognisable name: recovery removes what a crash left half-written.
    let (tmp_name, mut tmp) = loop {
        let tmp_name = std::ffi::OsString::from(format!("{TMP_PREFIX}{:08x}", fastrand::u32(..)));
        match dir.create_new(&tmp_name, 0o600) {
            Ok(f) => break (tmp_name, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(e)),
        }
    };
    let written = (|| {
        tmp.write_all(bytes)?;
        let _ = tmp.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
        if sync_now {
            tmp.sync_all()?;
        }
        if crate::fault::armed() {
            crate::fault::point(&format!("write:{}", name.to_string_lossy()));
        }
        // Replaces whatever is at the name, a link included, without following it.
        dir.rename(&tmp_name, name)
    })();
    if let Err(e) = written {
        let _ = dir.remove(&tmp_name);
        return Err(err(e));
    }
    if !sync_now {
        drop(sync_later(tmp));
    }
    Ok(())
}

/// [`atomic_write`] for ralph's own files rewritten at every iteration (`state.json`,
/// `run.json`, `learnings.json`): the new version is written into the file of an older one and
/// the two are swapped in one `renameat2` with `RENAME_EXCHANGE`; the new version is synced in
/// the background ([`sync_later`]).
///
/// Why: no file is created or deleted per write (on ext4 without a journal every deleted inode
/// slows each file creation after it for a minute or more), and the loop never waits for the
/// disk (on ext4 with a journal, a sync also writes out the index git has just rewritten).
/// The guarantee: a reader sees the old version or the new one, never half, whatever happens
/// to ralph; and after a power cut, `<name>.prev` holds a synced version, which [`load_json`]
/// falls back on: its file takes the next version only when the current one is synced (and
/// becomes `.prev` in the swap). A write before that, in a loop faster than the syncs, goes
/// through a third file, `<name>.spare`, and leaves `.prev` alone. Where the exchange is not
/// supported (another system or file system) it is [`atomic_write`].
///
/// No link is followed (see [`crate::fsx`]): a link (or a hard link, or anything but a file)
/// planted at `.prev` or `.spare` is removed, never opened, and the slot made afresh; one at
/// the file itself is swapped away unopened.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    #[cfg(target_os = "linux")]
    {
        use crate::fsx::Kind;
        let err = |source| StateError::Write { path: path.to_path_buf(), source };
        let Some(name) = path.file_name() else { return atomic_write(path, bytes) };
        let dir = crate::fsx::open_dir(path.parent().unwrap_or(Path::new(".")), true).map_err(err)?;
        if dir.kind(name).map_err(err)?.is_none() {
            return atomic_write(path, bytes);
        }
        let current_synced = lock(&PENDING).get(path).is_none_or(|s| s.is_done());
        let slot = if current_synced { prev_path(path) } else { slot_path(path, "spare") };
        let slot_name = slot.file_name().unwrap_or(name);
        let mut f = match dir.kind(slot_name).map_err(err)? {
            Some(Kind::File) | None => dir.open_write(slot_name, true, false),
            Some(_) => Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
        };
        if f.is_err() {
            // Not ralph's file (a link, a hard link, ...): its name goes, its target is never
            // opened.
            let _ = dir.remove(slot_name);
            f = dir.create_new(slot_name, 0o644);
        }
        let mut f = f.map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        if crate::fault::armed() {
            crate::fault::point(&format!("write:{}", name.to_string_lossy()));
        }
        match dir.exchange(slot_name, name) {
            Ok(()) => {
                let synced = sync_later(f);
                lock(&PENDING).insert(path.to_path_buf(), synced);
                return Ok(());
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EXDEV)) => {
                f.sync_data().map_err(err)?;
                return dir.rename(slot_name, name).map_err(err);
            }
            Err(e) => return Err(err(e)),
        }
    }
    #[allow(unreachable_code)]
    atomic_write(path, bytes)
}

/// Where [`replace`] keeps the version before.
fn prev_path(path: &Path) -> PathBuf {
    slot_path(path, "prev")
}

fn slot_path(path: &Path, slot: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.{slot}"))
}

/// Reads a JSON file written by [`replace`]: `None` when it does not exist. When it does not
/// parse (a power cut before its sync), the version before, if that one parses.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match crate::fsx::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path: path.to_path_buf(), source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => match crate::fsx::read(&prev_path(path)).ok().and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(v) => {
                tracing::warn!("{} does not parse ({e}); using its previous version", path.display());
                Ok(Some(v))
            }
            None => Err(StateError::Corrupt { path: path.to_path_buf(), message: e.to_string() }),
        },
    }
}

/// Syncs `file` on a thread of its own, within [`GATHER`], with whatever else was written
/// meanwhile: ralph's records and state reach the disk without the loop waiting for it. On
/// ext4 with a journal each sync commits the journal, which writes out what git has just
/// written too and holds up its next command: synced at every iteration, a fast loop lost a
/// millisecond an iteration to it. The answer says when it is done; [`flush`] syncs and waits
/// for all.
pub fn sync_later(file: File) -> std::sync::Arc<Synced> {
    let synced = std::sync::Arc::new(Synced::default());
    lock(&COUNTS).0 += 1;
    let gathered = {
        let mut batch = lock(&BATCH);
        batch.push((file, synced.clone()));
        batch.len()
    };
    match gathered {
        1 => wake(Wake::Later),
        // Each waiting file holds a descriptor: a loop writing faster than that is synced in
        // batches of this size, far from any limit on open files.
        MAX_GATHERED => wake(Wake::Now),
        _ => {}
    }
    synced
}

/// Hands every file written so far to the sync thread at once.
fn sync_now() {
    if !lock(&BATCH).is_empty() {
        wake(Wake::Now);
    }
}

/// Waits until every file handed to [`sync_later`] is synced: before ralph exits.
pub fn flush() {
    sync_now();
    let mut counts = lock(&COUNTS);
    while counts.1 < counts.0 {
        counts = ALL_SYNCED.wait(counts).unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

/// One file's sync, done or not.
#[derive(Default)]
pub struct Synced {
    done: std::sync::Mutex<bool>,
}

impl Synced {
    fn set(&self) {
        *lock(&self.done) = true;
        lock(&COUNTS).1 += 1;
        ALL_SYNCED.notify_all();
    }

    fn is_done(&self) -> bool {
        *lock(&self.done)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type SyncJob = (File, std::sync::Arc<Synced>);

/// Files gathered at most before they are synced.
const MAX_GATHERED: usize = 64;

/// How long the first file written waits for others to be synced with it.
const GATHER: std::time::Duration = std::time::Duration::from_secs(1);

/// What the sync thread is told: a file is waiting (sync within [`GATHER`]), or sync now.
enum Wake {
    Later,
    Now,
}

/// Files handed over, files synced.
static COUNTS: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));
static ALL_SYNCED: std::sync::Condvar = std::sync::Condvar::new();
/// Files written and not yet taken by the sync thread.
static BATCH: std::sync::Mutex<Vec<SyncJob>> = std::sync::Mutex::new(Vec::new());
/// The sync of each [`replace`]d file's current version.
static PENDING: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<Synced>>>,
> = std::sync::LazyLock::new(Default::default);
static SYNCER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Wake>>> =
    std::sync::OnceLock::new();

fn sync_batch() {
    let jobs = std::mem::take(&mut *lock(&BATCH));
    // Every file's writeback started first, then each waited for: their blocks are allocated
    // in one journal transaction, the first sync commits it and the others find their data
    // written (git's `core.fsyncMethod=batch` does the same). Synced one by one, each file's
    // delayed allocation opened a transaction of its own, a journal commit of 2 to 5 ms each.
    #[cfg(target_os = "linux")]
    if jobs.len() > 1 {
        use std::os::fd::AsRawFd;
        for (file, _) in &jobs {
            // SAFETY: a valid open descriptor; the call only starts the writeback of its pages.
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
    for (file, synced) in jobs {
        // A failed sync (the disk went away) shows when the next write fails.
        let _ = file.sync_data();
        synced.set();
    }
}

fn wake(how: Wake) {
    let sender = SYNCER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Wake>();
        // Without the thread the receiver is dropped and `wake` syncs in place.
        let _ = std::thread::Builder::new().name("ralph-sync".into()).spawn(move || {
            while let Ok(how) = rx.recv() {
                if let Wake::Later = how {
                    // Until a `Now`, or the time is up (a dropped sender ends the wait too).
                    let _ = rx.recv_timeout(GATHER);
                }
                sync_batch();
            }
        });
        std::sync::Mutex::new(tx)
    });
    if lock(sender).send(how).is_err() {
        sync_batch();
    }
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
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(false)
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
    pub baseline: Option<crate::checks::Baseline>,
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
    pub spent: Option<crate::budget::Spent>,
    /// The limits of the current (or last) session.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// The run's limits, as `ralph status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub max_iterations: u32,
    pub max_duration_ms: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_cost: Option<f64>,
}

impl From<&crate::config::BudgetConfig> for Limits {
    fn from(b: &crate::config::BudgetConfig) -> Self {
        Limits {
            max_iterations: b.max_iterations,
            max_duration_ms: b.max_duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_tokens: b.max_tokens,
            max_cost: b.max_cost,
        }
    }
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

    #[test]
    fn replace_swaps_in_the_new_version_and_keeps_a_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        replace(&p, b"one").unwrap();
        assert_eq!(read("run.json"), b"one");
        replace(&p, b"two, longer").unwrap();
        assert_eq!(read("run.json.prev"), b"one");
        // `.prev` takes a version only once it is synced: syncs are gathered for a second, so
        // "two" most likely is not when "3" comes, and "3" goes through the spare file. (Any
        // other test's flush may sync it meanwhile: then `.prev` may take it.)
        let pending = |v: &str| lock(&PENDING).get(&p).cloned().map(|s| (v.to_string(), s));
        let mut written = vec![pending("two, longer")];
        for v in ["3", "four"] {
            replace(&p, v.as_bytes()).unwrap();
            let prev = String::from_utf8(read("run.json.prev")).unwrap();
            let synced = prev == "one" || written.iter().flatten().any(|(w, s)| *w == prev && s.is_done());
            assert!(synced, "`.prev` holds {prev:?}, which was not synced");
            written.push(pending(v));
        }
        assert_eq!(read("run.json"), b"four");
        // Once the current version is synced, `.prev` takes it.
        flush();
        replace(&p, b"five").unwrap();
        assert_eq!(read("run.json"), b"five");
        assert_eq!(read("run.json.prev"), b"four");
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 3, "no temporary file is left: the file, `.prev` and `.spare`");
        flush();
    }

    /// Without a flush or an agent starting, a file written is still synced: within the
    /// gathering time, not never.
    #[test]
    fn a_file_handed_over_is_synced_without_being_asked_again() {
        let synced = sync_later(tempfile::tempfile().unwrap());
        let start = std::time::Instant::now();
        while !*lock(&synced.done) && start.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(*lock(&synced.done), "not synced after {:?}", start.elapsed());
    }

    #[test]
    fn a_version_that_did_not_reach_the_disk_is_read_from_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), None);
        replace(&p, b"[1]").unwrap();
        replace(&p, b"[1, 2]").unwrap();
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        // A power cut between the exchange and the sync: the new file is empty.
        std::fs::write(&p, b"").unwrap();
        assert_eq!(load_json::<Vec<u32>>(&p).unwrap(), Some(vec![1]));
        std::fs::write(dir.path().join("state.json.prev"), b"{").unwrap();
        let err = load_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(err.contains("state.json is corrupt"), "{err}");
    }

    #[test]
    fn new_files_are_world_readable_and_old_ones_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("AGENTS.md");
        atomic_write(&p, b"a").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        atomic_write(&p, b"b").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
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
