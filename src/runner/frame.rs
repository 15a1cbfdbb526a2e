//! The frame around the agent: what it must not touch. ralph's own state (`.ralph/state.json`,
//! the learnings store, the run's `run.json` and `iterations.jsonl`, `.ralph/.gitignore`),
//! git's internals (`config`, `info/exclude`, `hooks/`, every branch, tag and replacement ref
//! but the branch being worked on, and the index entries hidden from `git add` beyond the
//! user's own) and `ralph.toml`. A snapshot is taken before the agent starts; afterwards every
//! change is put back and named, and the iteration is rejected with the names as its reason. A
//! link (or anything but a regular file) in place of one of ralph's files is removed, never
//! followed, and ralph's version written back; the run's lock (`.ralph/lock`), which the
//! memory holds, is made again and taken if the agent took it away.
//!
//! Older iterations' logs are not snapshotted (they can be large), nor files over 1 MiB: an
//! agent that deletes them is still caught by the state files it deletes with them.
//!
//! What the frame read stays known ([`Memory`]) while a watch on the files' folders
//! ([`FileWatch`]) reports no change to them: an iteration in which neither the agent nor
//! anyone else touched the frame costs no look at its files, where it cost a `stat` of each
//! (and a read of the changed ones) twice. A symbolic link (a hook installed by a hook manager)
//! is looked at every time: its target may change unseen. Without inotify nothing is kept.

use crate::config;
use crate::git;
use crate::state::RALPH_DIR;
use crate::watch::files::FileWatch;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files larger than this are not snapshotted (a long run's `iterations.jsonl` grows past it):
/// the frame costs a few reads per iteration, never a copy of a large file in memory.
const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024;

/// A protected file as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Absent,
    /// Shared between the snapshot and the memory: taking a frame copies no content.
    Content(Arc<Vec<u8>>),
    /// Too large to keep: only a shrink or a removal is noticed, and cannot be undone.
    Large(u64),
    /// A symbolic link, a folder, a FIFO (anything but a regular file) where ralph keeps a file
    /// of its own: never followed nor read (see `fsx`); put back, the name is removed (a link's
    /// target untouched) and ralph's file written afresh.
    Foreign,
}

/// What the frame knows from one iteration to the next: the files, the hooks folder's listing
/// and the refs as last read, each kept while the watch reports no change to it. Shared by
/// reference through the iteration, like the tree's watch.
pub struct Memory(std::sync::Mutex<Known>);

struct Known {
    /// `None` without inotify: then nothing below is kept.
    watch: Option<FileWatch>,
    /// The watch after [`Memory::unwatch_all`], closed with the memory.
    retired: Option<FileWatch>,
    git_dir: PathBuf,
    common_dir: PathBuf,
    reads: HashMap<PathBuf, Seen>,
    hooks: Option<Vec<PathBuf>>,
    /// The ref HEAD names (`None`: detached), as `git::head_ref` said.
    head: Option<Option<String>>,
    /// Every branch and tag but `.0`, the ref HEAD named when they were listed.
    refs: Option<(Option<String>, BTreeMap<String, String>)>,
    /// The run's lock on `.ralph/lock`, made again when an agent takes it away.
    lock: Option<crate::state::RunLock>,
    /// Whether `.ralph/lock` was found to be the locked file, and the watch saw no change since.
    lock_seen: bool,
    /// The index entries hidden from `git add` (assume-unchanged, skip-worktree) before the
    /// first agent ran: the user's own. Only ralph's clearing of the agent's changes them.
    hidden: Option<std::collections::BTreeSet<String>>,
    /// A parallel run's worker: the run's folder and the branches (`refs/heads/`) are its
    /// coordinator's to change while the agent works (records, landings, other workers'
    /// slots), so they are not the worker's frame; tags and replace refs still are.
    worker: bool,
}

impl Memory {
    pub fn new(root: &Path) -> Memory {
        let git_dir = git::git_dir(root).unwrap_or_else(|| root.join(".git"));
        let common_dir = git::common_dir(root).unwrap_or_else(|| git_dir.clone());
        Memory(std::sync::Mutex::new(Known {
            watch: FileWatch::start(),
            retired: None,
            git_dir,
            common_dir,
            reads: HashMap::new(),
            hooks: None,
            head: None,
            refs: None,
            lock: None,
            lock_seen: false,
            hidden: None,
            worker: false,
        }))
    }

    /// The memory of a parallel run's worker (see `Known::worker`).
    pub fn for_worker(self) -> Memory {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).worker = true;
        self
    }

    /// The memory, holding the run's lock: [`Frame::restore`] puts `.ralph/lock` back too.
    pub fn holding(self, lock: crate::state::RunLock) -> Memory {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).lock = Some(lock);
        self
    }

    /// Clears the marks that hide index entries from `git add` (assume-unchanged,
    /// skip-worktree) set since the run began, and names their files: with them ralph would
    /// commit what the index holds instead of the files its checks ran on.
    pub fn unhide_new(&self, root: &Path) -> Vec<String> {
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(now) = git::hidden_entries(root) else { return Vec::new() };
        let was = known.hidden.get_or_insert_with(Default::default);
        let new: Vec<&str> = now.iter().map(String::as_str).filter(|p| !was.contains(*p)).collect();
        // Entries gone from the index are no longer the user's either.
        was.retain(|p| now.contains(p));
        if new.is_empty() || git::unhide(root, &new).is_err() {
            return Vec::new();
        }
        new.into_iter().map(str::to_string).collect()
    }

    /// Stops watching (the run is over): see [`FileWatch::unwatch_all`]. Nothing is kept
    /// from now on.
    pub fn unwatch_all(&self) {
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut watch) = known.watch.take() {
            watch.unwatch_all();
            // Closed with the memory, not here: the marks are freed meanwhile.
            known.retired = Some(watch);
        }
        known.reads.clear();
        known.hooks = None;
        known.head = None;
        known.refs = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.refresh();
        known
    }
}

impl Known {
    fn hooks_dir(&self) -> PathBuf {
        self.common_dir.join("hooks")
    }

    /// Forgets whatever changed since the last look.
    fn refresh(&mut self) {
        let Some(watch) = &mut self.watch else { return };
        let Some(changed) = watch.changes() else {
            self.reads.clear();
            self.hooks = None;
            self.head = None;
            self.refs = None;
            self.lock_seen = false;
            return;
        };
        // Compared as bytes: every path here is a watched folder's path joined with a name,
        // and a change touches a few of them an iteration, where `Path`'s comparisons walk
        // components.
        let hooks = self.hooks_dir().into_os_string().into_vec();
        let head = self.git_dir.join("HEAD").into_os_string().into_vec();
        let packed = self.common_dir.join("packed-refs").into_os_string().into_vec();
        let lock = self.lock_path().map(|p| p.into_os_string().into_vec());
        let mut refs_dir = self.common_dir.join("refs").into_os_string().into_vec();
        refs_dir.push(b'/');
        let current = self.listed_current();
        for p in changed {
            let b = p.as_os_str().as_bytes();
            if b.strip_prefix(hooks.as_slice())
                .and_then(|r| r.strip_prefix(b"/"))
                .is_some_and(|n| !n.contains(&b'/'))
            {
                self.hooks = None;
            }
            if b == head.as_slice() {
                self.head = None;
                self.refs = None;
            }
            let current_ref = current
                .as_ref()
                .is_some_and(|c| b == c.as_slice() || b.strip_suffix(b".lock") == Some(c.as_slice()));
            // Under `refs/`: a branch or a tag, or a folder on the way to them.
            if b == packed.as_slice() || (b.starts_with(&refs_dir) && !current_ref) {
                self.refs = None;
            }
            if lock.as_deref() == Some(b) {
                self.lock_seen = false;
            }
            if !self.reads.is_empty() {
                self.reads.remove(&p);
            }
        }
    }

    /// The file of the branch the refs were listed without: ralph's own commits move it (and
    /// its lock file) every iteration, and the listing does not hold it.
    fn listed_current(&self) -> Option<Vec<u8>> {
        let Some((Some(current), _)) = &self.refs else { return None };
        Some(self.common_dir.join(current).into_os_string().into_vec())
    }

    fn lock_path(&self) -> Option<PathBuf> {
        self.lock.as_ref().map(|l| l.dir().join("lock"))
    }

    /// Makes `.ralph/lock` the run's locked file again if it is not; returns whether it had to.
    fn mend_lock(&mut self) -> bool {
        if self.lock_seen {
            return false;
        }
        let Some(dir) = self.lock.as_ref().map(|l| l.dir().to_path_buf()) else { return false };
        // Watched before the look: a change after it is reported.
        let watched = self.watch(&dir);
        let Some(lock) = self.lock.as_mut() else { return false };
        match lock.mend() {
            Ok(mended) => {
                self.lock_seen = watched && !mended;
                mended
            }
            Err(e) => {
                tracing::warn!("{e}");
                true
            }
        }
    }

    fn watch(&mut self, dir: &Path) -> bool {
        self.watch.as_mut().is_some_and(|w| w.watch(dir))
    }

    /// The file as it is: as last read if nothing changed it since, else read (and kept).
    fn look(&mut self, p: &Path) -> Seen {
        if let Some(seen) = self.reads.get(p) {
            return seen.clone();
        }
        // Watched before the read: a write after it is reported.
        let watched = p.parent().is_some_and(|d| self.watch(d));
        let (seen, link) = if is_ralphs(p) {
            let seen = look_ralphs(p);
            (seen.clone(), seen == Seen::Foreign)
        } else {
            // A hook may be a link (a hook manager's), followed.
            let link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            let seen = match std::fs::metadata(p).ok().filter(std::fs::Metadata::is_file) {
                Some(m) if m.len() > MAX_SNAPSHOT_BYTES => Seen::Large(m.len()),
                Some(_) => std::fs::read(p).map_or(Seen::Absent, |b| Seen::Content(Arc::new(b))),
                None => Seen::Absent,
            };
            (seen, link)
        };
        if watched && !link {
            self.reads.insert(p.to_path_buf(), seen.clone());
        }
        seen
    }

    /// The files in the hooks folder.
    fn hooks(&mut self) -> Vec<PathBuf> {
        if let Some(list) = &self.hooks {
            return list.clone();
        }
        let dir = self.hooks_dir();
        let watched = self.watch(&dir);
        let list: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        if watched {
            self.hooks = Some(list.clone());
        }
        list
    }

    /// The ref HEAD names, `None` when detached (or unreadable).
    fn head_ref(&mut self, root: &Path) -> Option<String> {
        if let Some(head) = &self.head {
            return head.clone();
        }
        let git_dir = self.git_dir.clone();
        let watched = self.watch(&git_dir);
        let head = git::head_ref(root).ok().flatten();
        if watched {
            self.head = Some(head.clone());
        }
        head
    }

    /// Every branch and tag but `current`, with the commit it points at.
    fn refs(&mut self, root: &Path, current: Option<&String>) -> BTreeMap<String, String> {
        if let Some((listed_without, refs)) = &self.refs
            && listed_without.as_ref() == current
        {
            return refs.clone();
        }
        // Every folder of branches and tags watched before the listing (not the remotes a fetch
        // rewrites); packed-refs lives in the common dir, `refs/` on the way to both.
        let common = self.common_dir.clone();
        let mut watched = self.watch(&common) && self.watch(&common.join("refs"));
        let mut todo: Vec<PathBuf> = git::FRAMED_REFS.iter().map(|r| common.join(r)).collect();
        while let Some(dir) = todo.pop() {
            // A folder that does not exist yet (`refs/replace` until `git replace`) is seen
            // being made by the watch on `refs/`.
            if !dir.is_dir() {
                continue;
            }
            watched &= self.watch(&dir);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            todo.extend(
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
            );
        }
        let worker = self.worker;
        let refs: BTreeMap<String, String> = git::refs(root)
            .unwrap_or_default()
            .into_iter()
            .filter(|(r, _)| Some(r) != current && !(worker && r.starts_with("refs/heads/")))
            .collect();
        if watched {
            self.refs = Some((current.cloned(), refs.clone()));
        }
        refs
    }
}

/// Whether `p` is one of ralph's files (under `.ralph/`): never a link, never followed.
fn is_ralphs(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == RALPH_DIR)
}

/// One of ralph's files as it is, looked at without following a link (see `fsx`).
fn look_ralphs(p: &Path) -> Seen {
    use crate::fsx::Kind;
    match crate::fsx::kind(p) {
        Ok(Some(Kind::File)) => {
            let Ok(file) = crate::fsx::open(p) else { return Seen::Foreign };
            match file.metadata().map(|m| m.len()) {
                Ok(len) if len > MAX_SNAPSHOT_BYTES => Seen::Large(len),
                _ => {
                    let mut bytes = Vec::new();
                    match std::io::Read::read_to_end(&mut &file, &mut bytes) {
                        Ok(_) => Seen::Content(Arc::new(bytes)),
                        Err(_) => Seen::Absent,
                    }
                }
            }
        }
        Ok(Some(_)) => Seen::Foreign,
        Ok(None) => Seen::Absent,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Absent,
        // A folder on the way is not ralph's (`.ralph` made a link): nothing to read.
        Err(_) => Seen::Foreign,
    }
}

/// The protected files and refs as they were.
#[derive(Debug)]
pub struct Frame {
    /// Absolute path → what it was. A hook not among them when the agent is done is removed.
    files: BTreeMap<PathBuf, Seen>,
    /// Ref name → commit, for every branch and tag but the current branch.
    refs: BTreeMap<String, String>,
    current_ref: Option<String>,
    root: PathBuf,
}

impl Frame {
    /// Takes the snapshot.
    pub fn take(root: &Path, run_dir: &Path, memory: &Memory) -> Frame {
        let mut known = memory.lock();
        let mut paths = vec![
            root.join(config::FILE_NAME),
            root.join(RALPH_DIR).join("state.json"),
            // Admission is ralph's: a learning written straight into the store would skip it.
            root.join(RALPH_DIR).join("learnings.json"),
            root.join(RALPH_DIR).join(".gitignore"),
            known.common_dir.join("config"),
            known.common_dir.join("info").join("exclude"),
        ];
        if !known.worker {
            paths.extend([run_dir.join("run.json"), run_dir.join("iterations.jsonl")]);
        }
        paths.extend(known.hooks());
        if known.hidden.is_none() {
            known.hidden = Some(git::hidden_entries(root).unwrap_or_default());
        }
        let files = paths
            .into_iter()
            .map(|p| {
                let seen = known.look(&p);
                (p, seen)
            })
            .collect();
        let current_ref = known.head_ref(root);
        let refs = known.refs(root, current_ref.as_ref());
        Frame { files, refs, current_ref, root: root.to_path_buf() }
    }

    /// Puts back whatever changed; returns what did, as paths relative to the repository root
    /// (or ref names). Empty when the agent kept to its frame. The changed versions of files
    /// are kept under `keep` (an edit that was the user's, made while the agent ran, is not
    /// lost; that copy is a courtesy, its failure no error). Every change is put back that can
    /// be; what cannot is an error naming each (the run must not go on with a frame it could
    /// not restore).
    #[cfg(test)]
    pub fn restore(&self, keep: &Path, memory: &Memory) -> Result<Vec<String>, FrameError> {
        self.restore_masked(keep, memory, &crate::secrets::Secrets::default())
    }

    /// [`restore`](Self::restore), the kept copies with `secrets` masked: they are logs, and the
    /// agent may have written a secret's value into the file it changed.
    pub fn restore_masked(
        &self,
        keep: &Path,
        memory: &Memory,
        secrets: &crate::secrets::Secrets,
    ) -> Result<Vec<String>, FrameError> {
        let mut known = memory.lock();
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        let rel = |p: &Path| p.strip_prefix(&self.root).unwrap_or(p).to_string_lossy().into_owned();
        for (path, before) in &self.files {
            let now = known.look(path);
            match (before, &now) {
                (b, n) if b == n => continue,
                (Seen::Large(was), Seen::Large(is)) if is >= was => continue,
                _ => {}
            }
            if let Seen::Content(changed) = &now {
                let aside = keep.join(rel(path));
                // Into the iteration's folder: never through a link the agent planted there.
                if let Some(parent) = aside.parent() {
                    let _ = crate::fsx::create_dir_all(parent);
                }
                let _ = crate::fsx::write(&aside, &secrets.mask_bytes(changed.as_slice()));
            }
            if let Err(e) = put_back(path, before, &now) {
                failed.push((rel(path), e));
            }
            known.reads.remove(path);
            changed.push(rel(path));
        }
        if known.mend_lock() {
            changed.push(format!("{RALPH_DIR}/lock"));
        }
        for p in known.hooks() {
            if !self.files.contains_key(&p) {
                if let Err(e) = remove_file(&p) {
                    failed.push((rel(&p), e));
                }
                known.hooks = None;
                changed.push(rel(&p));
            }
        }
        let now = known.refs(&self.root, self.current_ref.as_ref());
        for (r, sha) in &self.refs {
            if now.get(r) != Some(sha) {
                if let Err(e) = git::update_ref(&self.root, r, Some(sha)) {
                    failed.push((r.clone(), crate::error::chain(&e)));
                }
                known.refs = None;
                changed.push(r.clone());
            }
        }
        for r in now.keys() {
            if !self.refs.contains_key(r) {
                if let Err(e) = git::update_ref(&self.root, r, None) {
                    failed.push((r.clone(), crate::error::chain(&e)));
                }
                known.refs = None;
                changed.push(r.clone());
            }
        }
        if failed.is_empty() { Ok(changed) } else { Err(FrameError { changed, failed }) }
    }
}

/// Puts one protected file back as it was `before`; `now` is what is there.
fn put_back(path: &Path, before: &Seen, now: &Seen) -> Result<(), String> {
    let ralphs = is_ralphs(path);
    // Not ralph's file where ralph's should be: the name goes (a link, never its target; a
    // folder with what it holds), and ralph's version is written afresh.
    if ralphs && *now == Seen::Foreign {
        crate::fsx::remove_any(path).map_err(|e| e.to_string())?;
    }
    match before {
        Seen::Content(bytes) => {
            if let Some(parent) = path.parent() {
                crate::fsx::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            crate::state::atomic_write(path, bytes).map_err(|e| crate::error::chain(&e))
        }
        Seen::Absent if ralphs => crate::fsx::remove_any(path).map_err(|e| e.to_string()),
        Seen::Absent => remove_file(path),
        Seen::Large(_) | Seen::Foreign => Ok(()),
    }
}

/// Removes a file the agent added; one already gone is no failure.
fn remove_file(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// What the frame could not put back after the agent changed it.
#[derive(Debug, thiserror::Error)]
#[error("cannot put back {}", failed.iter().map(|(n, e)| format!("{n} ({e})")).collect::<Vec<_>>().join(", "))]
pub struct FrameError {
    /// Everything the agent changed, put back or not.
    pub changed: Vec<String>,
    /// What could not be put back, with why.
    pub failed: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::process::Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap();
        std::fs::write(root.join("ralph.toml"), "[agent]\n").unwrap();
        let run_dir = root.join(".ralph/runs/r");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("run.json"), "{}").unwrap();
        (dir, run_dir)
    }

    #[test]
    fn changes_are_put_back_and_named() {
        let (dir, run_dir) = repo();
        let root = dir.path();
        let memory = Memory::new(root);
        let frame = Frame::take(root, &run_dir, &memory);
        let keep = dir.path().join("kept");
        assert!(frame.restore(&keep, &memory).unwrap().is_empty());

        std::fs::write(root.join("ralph.toml"), "[agent]\ncommand = [\"evil\"]\n").unwrap();
        std::fs::remove_file(run_dir.join("run.json")).unwrap();
        std::fs::write(root.join(".git/hooks/pre-commit"), "#!/bin/sh\nexit 0\n").unwrap();
        let changed = frame.restore(&keep, &memory).unwrap();
        assert_eq!(
            std::fs::read_to_string(keep.join("ralph.toml")).unwrap(),
            "[agent]\ncommand = [\"evil\"]\n"
        );
        assert_eq!(changed, vec![".ralph/runs/r/run.json", "ralph.toml", ".git/hooks/pre-commit"]);
        assert_eq!(std::fs::read_to_string(root.join("ralph.toml")).unwrap(), "[agent]\n");
        assert_eq!(std::fs::read_to_string(run_dir.join("run.json")).unwrap(), "{}");
        assert!(!root.join(".git/hooks/pre-commit").exists());
        // What was put back is what the next frame finds: nothing to name.
        let again = Frame::take(root, &run_dir, &memory);
        assert!(again.restore(&keep, &memory).unwrap().is_empty());
    }

    /// The memory must never vouch for a file someone changed: every kind of change between
    /// frames, and during one, is seen on the next look.
    #[test]
    fn a_file_that_cannot_be_put_back_is_an_error_naming_it() {
        let (dir, run_dir) = repo();
        let root = dir.path();
        let memory = Memory::new(root);
        let frame = Frame::take(root, &run_dir, &memory);
        // A folder with something in it where ralph.toml was: ralph's file cannot go back.
        std::fs::remove_file(root.join("ralph.toml")).unwrap();
        std::fs::create_dir_all(root.join("ralph.toml/inside")).unwrap();
        std::fs::write(run_dir.join("run.json"), "changed").unwrap();
        let e = frame.restore(&dir.path().join("kept"), &memory).unwrap_err();
        assert_eq!(e.failed.len(), 1, "{e}");
        assert_eq!(e.failed[0].0, "ralph.toml");
        assert!(e.to_string().contains("ralph.toml"), "{e}");
        // What could be put back was.
        assert_eq!(std::fs::read_to_string(run_dir.join("run.json")).unwrap(), "{}");
        assert_eq!(e.changed.len(), 2, "{:?}", e.changed);
    }

    #[test]
    fn the_memory_sees_every_change_since_its_last_look() {
        let (dir, run_dir) = repo();
        let root = dir.path();
        let memory = Memory::new(root);
        let keep = dir.path().join("kept");
        let frame = Frame::take(root, &run_dir, &memory);
        // Rewritten in place, same size: no time stamp would tell within its granularity.
        std::fs::write(root.join("ralph.toml"), "[agenT]\n").unwrap();
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec!["ralph.toml"]);
        assert_eq!(std::fs::read_to_string(root.join("ralph.toml")).unwrap(), "[agent]\n");

        // ralph writes its state between frames: the next frame holds the new content.
        std::fs::write(run_dir.join("run.json"), "{\"n\":1}").unwrap();
        let frame = Frame::take(root, &run_dir, &memory);
        std::fs::write(run_dir.join("run.json"), "{\"n\":2}").unwrap();
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec![".ralph/runs/r/run.json"]);
        assert_eq!(std::fs::read_to_string(run_dir.join("run.json")).unwrap(), "{\"n\":1}");

        // The whole .ralph folder replaced: the memory forgets what it held there.
        let frame = Frame::take(root, &run_dir, &memory);
        std::fs::rename(root.join(".ralph"), root.join("moved")).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("run.json"), "{\"n\":1}").unwrap();
        assert!(frame.restore(&keep, &memory).unwrap().is_empty());
        let frame = Frame::take(root, &run_dir, &memory);
        std::fs::write(run_dir.join("run.json"), "{}").unwrap();
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec![".ralph/runs/r/run.json"]);
    }

    #[test]
    fn refs_other_than_the_current_branch_are_kept() {
        let (dir, run_dir) = repo();
        let root = dir.path();
        let git = |args: &[&str]| crate::git::test_git(root, args);
        let commit = |msg: &str| {
            git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", msg])
        };
        commit("one");
        git(&["branch", "other"]);
        git(&["tag", "v1"]);
        let memory = Memory::new(root);
        let keep = dir.path().join("kept");
        let frame = Frame::take(root, &run_dir, &memory);
        // The current branch moves freely (ralph commits on it); a nested branch appears, a
        // tag moves.
        commit("two");
        git(&["branch", "feature/x"]);
        git(&["tag", "-f", "v1"]);
        let mut changed = frame.restore(&keep, &memory).unwrap();
        changed.sort();
        assert_eq!(changed, vec!["refs/heads/feature/x", "refs/tags/v1"]);
        // Between frames ralph commits again: the kept listing still holds.
        commit("three");
        let frame = Frame::take(root, &run_dir, &memory);
        git(&["branch", "-f", "other", "HEAD"]);
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec!["refs/heads/other"]);
        let frame = Frame::take(root, &run_dir, &memory);
        git(&["branch", "feature/y"]);
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec!["refs/heads/feature/y"]);
    }

    #[test]
    fn a_hook_that_is_a_symbolic_link_is_looked_at_every_time() {
        let (dir, run_dir) = repo();
        let root = dir.path();
        std::fs::write(root.join("hook-target"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(root.join("hook-target"), root.join(".git/hooks/pre-commit")).unwrap();
        let memory = Memory::new(root);
        let keep = dir.path().join("kept");
        let frame = Frame::take(root, &run_dir, &memory);
        // Written through the link's target, outside every watched folder.
        std::fs::write(root.join("hook-target"), "#!/bin/sh\nexit 1\n").unwrap();
        assert_eq!(frame.restore(&keep, &memory).unwrap(), vec![".git/hooks/pre-commit"]);
    }
}
