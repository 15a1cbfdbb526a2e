//! Durable writes, a leaf under [`crate::state`]: atomic replacement of a file, ralph's own
//! files swapped in place with a synced previous version, and the background syncs gathered in
//! batches ([`sync_later`], [`flush`]).
//!
//! Invariants: every write is atomic (temporary file in the same folder, sync, rename; or, for
//! the files rewritten every iteration, an older version's file, exchange, sync in the
//! background), so a crash never leaves half a file, and after a power cut a file that did not
//! reach the disk is read from its synced previous version (`.prev` always holds one). No link
//! is followed (everything goes through [`crate::fsx`]). This module needs nothing of ralph's
//! above `fsx` and `fault`, so any module may write through it without a cycle; [`StateError`]
//! lives here for that reason (`state` re-exports all of it).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// [`atomic_write_later`] for a file that does not exist yet, in a folder ralph has just made
/// (an iteration's `started.json`): created and written with one `write`, without a temporary
/// file and a rename (a file creation is the dearest thing an iteration asks of ext4). A kill
/// leaves it whole or empty, and readers take an empty one for none: it is written before
/// anything that relies on it. Where the name is taken (or cannot be made so), it is
/// [`atomic_write_later`].
pub fn create_later(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    let Some(name) = path.file_name() else { return atomic_write_later(path, bytes) };
    let dir = crate::fsx::open_dir(path.parent().unwrap_or(Path::new(".")), true).map_err(err)?;
    // Something at the name (a file, a link): replaced whole instead, the link unfollowed.
    let Ok(mut file) = dir.create_new(name, 0o644) else { return atomic_write_later(path, bytes) };
    if let Err(e) = file.write_all(bytes) {
        let _ = dir.remove(name);
        return Err(err(e));
    }
    drop(sync_later(file));
    Ok(())
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
        // Written over, then cut to the new length: a truncation to zero first would have ext4
        // write the file out when it is closed (its "replace by truncate" heuristic), twice an
        // iteration. The slot is no reader's file until the exchange.
        let mut f = match dir.kind(slot_name).map_err(err)? {
            Some(Kind::File) | None => dir.open_write(slot_name, false, false),
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
        f.set_len(bytes.len() as u64).map_err(err)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn create_later_writes_a_new_file_whole_and_replaces_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("started.json");
        create_later(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}");
        // Taken already (a restarted iteration): replaced whole, through a temporary file.
        create_later(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 1, "no temporary file is left");
        // Never through a link planted at the name.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "theirs").unwrap();
        let q = dir.path().join("other.json");
        std::os::unix::fs::symlink(&outside, &q).unwrap();
        create_later(&q, b"ours").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "theirs");
        assert!(!std::fs::symlink_metadata(&q).unwrap().file_type().is_symlink());
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
}
