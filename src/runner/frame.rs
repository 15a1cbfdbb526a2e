//! The frame around the agent: what it must not touch. ralph's own state (`.ralph/state.json`,
//! the run's `run.json` and `iterations.jsonl`, `.ralph/.gitignore`), git's internals
//! (`.git/config`, `.git/info/exclude`, `.git/hooks/`, every branch and tag but the one being
//! worked on) and `ralph.toml`. A snapshot is taken before the agent starts; afterwards every
//! change is put back and named, and the iteration is rejected with the names as its reason.
//!
//! Older iterations' logs are not snapshotted (they can be large), nor files over 1 MiB: an
//! agent that deletes them is still caught by the state files it deletes with them.
//!
//! A file whose metadata (inode, size, modification and change times) is as it was when it was
//! last read, and whose last change was well before that read, is not read again: its content
//! is the one read then (git's index trusts the same, and the margin rules out a second write
//! within the file system's timestamp granularity). The hooks and configuration are read once
//! a run, not twice an iteration.

use crate::config;
use crate::git;
use crate::state::RALPH_DIR;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Files larger than this are not snapshotted (a long run's `iterations.jsonl` grows past it):
/// the frame costs a few reads per iteration, never a copy of a large file in memory.
const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024;

/// A change this close to a read (or after it) may not show in the file's times: read again.
const RACY: std::time::Duration = std::time::Duration::from_secs(1);

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the content read at `read_at` is still the file's while the stamp is unchanged.
    fn settled_before(&self, read_at: std::time::SystemTime) -> bool {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(self.ctime.0).unwrap_or(0),
                u32::try_from(self.ctime.1).unwrap_or(0),
            );
        self.ctime.0 > 0 && changed + RACY < read_at
    }
}

/// A read: the content, the stamp it had, and when it was read.
#[derive(Debug, Clone)]
struct Read {
    seen: Seen,
    stamp: Option<Stamp>,
    at: std::time::SystemTime,
}

/// Reads of the files that did not change since, from one iteration's frame to the next.
static CACHE: std::sync::LazyLock<std::sync::Mutex<BTreeMap<PathBuf, Read>>> =
    std::sync::LazyLock::new(Default::default);

/// The file as it is: from the last read if its stamp says it is unchanged since, else read.
fn look(p: &Path, last: Option<&Read>) -> Read {
    let meta = std::fs::metadata(p).ok().filter(std::fs::Metadata::is_file);
    let stamp = meta.as_ref().map(Stamp::of);
    if let (Some(last), Some(now)) = (last, &stamp)
        && last.stamp.as_ref() == Some(now)
        && now.settled_before(last.at)
    {
        return last.clone();
    }
    let at = std::time::SystemTime::now();
    let seen = match &meta {
        Some(m) if m.len() > MAX_SNAPSHOT_BYTES => Seen::Large(m.len()),
        Some(_) => std::fs::read(p).map_or(Seen::Absent, Seen::Content),
        None => Seen::Absent,
    };
    Read { seen, stamp, at }
}

/// The protected files and refs as they were.
#[derive(Debug)]
pub struct Frame {
    /// Absolute path → what it was.
    files: BTreeMap<PathBuf, Read>,
    /// Files under these folders that were not there before are removed.
    dirs: Vec<PathBuf>,
    /// Ref name → commit, for every branch and tag but the current branch.
    refs: BTreeMap<String, String>,
    current_ref: Option<String>,
    root: PathBuf,
}

/// A protected file as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Absent,
    Content(Vec<u8>),
    /// Too large to keep: only a shrink or a removal is noticed, and cannot be undone.
    Large(u64),
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default()
}

impl Frame {
    /// Takes the snapshot.
    pub fn take(root: &Path, run_dir: &Path) -> Frame {
        let git_dir = git::git_dir(root).unwrap_or_else(|| root.join(".git"));
        let hooks = git_dir.join("hooks");
        let mut paths = vec![
            root.join(config::FILE_NAME),
            root.join(RALPH_DIR).join("state.json"),
            root.join(RALPH_DIR).join(".gitignore"),
            run_dir.join("run.json"),
            run_dir.join("iterations.jsonl"),
            git_dir.join("config"),
            git_dir.join("info").join("exclude"),
        ];
        paths.extend(files_in(&hooks));
        let files: BTreeMap<PathBuf, Read> = {
            let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            paths
                .into_iter()
                .map(|p| {
                    let read = look(&p, cache.get(&p));
                    cache.insert(p.clone(), read.clone());
                    (p, read)
                })
                .collect()
        };
        let current_ref = git::current_branch(root).ok().flatten().map(|b| format!("refs/heads/{b}"));
        let refs = git::refs(root)
            .unwrap_or_default()
            .into_iter()
            .filter(|(r, _)| Some(r) != current_ref.as_ref())
            .collect();
        Frame { files, dirs: vec![hooks], refs, current_ref, root: root.to_path_buf() }
    }

    /// Puts back whatever changed; returns what did, as paths relative to the repository root
    /// (or ref names). Empty when the agent kept to its frame. The changed versions of files
    /// are kept under `keep` (an edit that was the user's, made while the agent ran, is not
    /// lost).
    pub fn restore(&self, keep: &Path) -> Vec<String> {
        let mut changed = Vec::new();
        let rel = |p: &Path| p.strip_prefix(&self.root).unwrap_or(p).to_string_lossy().into_owned();
        for (path, read) in &self.files {
            let before = &read.seen;
            let now = look(path, Some(read)).seen;
            match (before, &now) {
                (b, n) if b == n => continue,
                (Seen::Large(was), Seen::Large(is)) if is >= was => continue,
                _ => {}
            }
            if let Seen::Content(changed) = &now {
                let aside = keep.join(rel(path));
                if let Some(parent) = aside.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::fs::write(aside, changed);
            }
            match (before, &now) {
                (Seen::Content(bytes), _) => {
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    let _ = crate::state::atomic_write(path, bytes);
                    CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(path);
                }
                (Seen::Absent, _) => {
                    let _ = std::fs::remove_file(path);
                }
                (Seen::Large(_), _) => {}
            }
            changed.push(rel(path));
        }
        for dir in &self.dirs {
            for p in files_in(dir) {
                if !self.files.contains_key(&p) {
                    let _ = std::fs::remove_file(&p);
                    changed.push(rel(&p));
                }
            }
        }
        let now: BTreeMap<String, String> = git::refs(&self.root)
            .unwrap_or_default()
            .into_iter()
            .filter(|(r, _)| Some(r) != self.current_ref.as_ref())
            .collect();
        for (r, sha) in &self.refs {
            if now.get(r) != Some(sha) {
                let _ = git::update_ref(&self.root, r, Some(sha));
                changed.push(r.clone());
            }
        }
        for r in now.keys() {
            if !self.refs.contains_key(r) {
                let _ = git::update_ref(&self.root, r, None);
                changed.push(r.clone());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_put_back_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::process::Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap();
        std::fs::write(root.join("ralph.toml"), "[agent]\n").unwrap();
        let run_dir = root.join(".ralph/runs/r");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("run.json"), "{}").unwrap();
        let frame = Frame::take(root, &run_dir);
        let keep = dir.path().join("kept");
        assert!(frame.restore(&keep).is_empty());

        std::fs::write(root.join("ralph.toml"), "[agent]\ncommand = [\"evil\"]\n").unwrap();
        std::fs::remove_file(run_dir.join("run.json")).unwrap();
        std::fs::write(root.join(".git/hooks/pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
        let changed = frame.restore(&keep);
        assert_eq!(
            std::fs::read_to_string(keep.join("ralph.toml")).unwrap(),
            "[agent]\ncommand = [\"evil\"]\n"
        );
        assert_eq!(changed, vec![".ralph/runs/r/run.json", "ralph.toml", ".git/hooks/pre-commit"]);
        assert_eq!(std::fs::read_to_string(root.join("ralph.toml")).unwrap(), "[agent]\n");
        assert_eq!(std::fs::read_to_string(run_dir.join("run.json")).unwrap(), "{}");
        assert!(!root.join(".git/hooks/pre-commit").exists());
    }

    #[test]
    fn an_unchanged_stamp_is_trusted_only_well_after_the_last_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hook");
        std::fs::write(&p, "one").unwrap();
        let first = look(&p, None);
        assert_eq!(first.seen, Seen::Content(b"one".to_vec()));
        // Read just after its last change: the stamp is not trusted, the file is read again.
        let marked = Read { seen: Seen::Content(b"stale".to_vec()), ..first.clone() };
        assert_eq!(look(&p, Some(&marked)).seen, Seen::Content(b"one".to_vec()));
        // Read long after its last change (as the hooks are): the stamp is trusted.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        let settled = Read { seen: Seen::Content(b"as read".to_vec()), at: later, ..first.clone() };
        assert_eq!(look(&p, Some(&settled)).seen, Seen::Content(b"as read".to_vec()));
        // A write changes the stamp (another inode here, as an atomic write would): read again.
        std::fs::write(dir.path().join("new"), "two").unwrap();
        std::fs::rename(dir.path().join("new"), &p).unwrap();
        assert_eq!(look(&p, Some(&settled)).seen, Seen::Content(b"two".to_vec()));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(look(&p, Some(&settled)).seen, Seen::Absent);
    }
}
