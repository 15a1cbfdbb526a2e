//! The working tree's watch: whether anything changed in it since ralph last looked, so that an
//! iteration can skip a scan of the whole tree when nothing did.
//!
//! Two scans per iteration are otherwise needed only in case someone else wrote meanwhile: the
//! `git status` before the agent (uncommitted edits are snapshotted, so a revert cannot lose
//! them) and a second `git add -A` after the checks (a formatter among them may have changed
//! files). At 50,000 files each costs about 50 ms. The watch keeps an inotify watch on every
//! folder git does not ignore and reads the queued events only when asked: the kernel queues an
//! event as the write happens, so once a writer has exited its events are there to read, and
//! "nothing changed" costs one `read`.
//!
//! Invariants: the watch answers "nothing changed" only when it saw every folder's events since
//! the moment asked about. Anything it cannot vouch for is [`Changes::Unknown`] and the caller
//! scans as before: a queue overflow, a folder it could not watch, a new folder or a changed
//! ignore rule (until the next [`TreeWatch::mark`] watches them), the index or HEAD moved by
//! someone else, or no inotify at all (other systems, `GIT_DIR` and friends in the
//! environment). `.git/`, `.ralph/` and what git ignores are not watched: git's own writes and
//! ralph's logs change nothing git would commit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What changed in the working tree since the last [`TreeWatch::mark`].
#[derive(Debug, PartialEq, Eq)]
pub enum Changes {
    None,
    /// These paths (relative to the root), and nothing else.
    Only(BTreeSet<PathBuf>),
    /// The watch cannot tell: scan.
    Unknown,
}

/// More changed paths than this are not worth keeping one by one.
const MAX_PATHS: usize = 10_000;
/// A tree with more folders than this is not watched: inotify's watches are kernel memory,
/// and the user's own tools (an editor, a file watcher) draw on the same per-user limit, of
/// which ralph takes a quarter at most.
const MAX_DIRS: usize = 50_000;

/// See the module documentation. Shared by reference through the iteration; a mutex because
/// the iteration's future may move between threads.
pub struct TreeWatch(std::sync::Mutex<imp::Inner>);

impl TreeWatch {
    /// Starts watching every folder of the tree at `root` but `.git/`, `.ralph/` and what git
    /// ignores (asked of git: one `git ls-files`). `None` when the tree cannot be watched.
    pub fn start(root: &Path) -> Option<TreeWatch> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"] {
            if std::env::var_os(var).is_some() {
                return None;
            }
        }
        let git_dir = crate::git::git_dir(root)?;
        let ignored = match crate::git::ignored(root) {
            Ok(ignored) => ignored,
            Err(e) => {
                tracing::debug!("the working tree is not watched: {e}");
                return None;
            }
        };
        match imp::Inner::start(root, git_dir, &ignored) {
            Ok(inner) => Some(TreeWatch(std::sync::Mutex::new(inner))),
            Err(e) => {
                tracing::debug!("the working tree is not watched: {e}");
                None
            }
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, imp::Inner> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what changed so far: the caller is about to look at the whole tree (`git add
    /// -A`). Folders created since the last mark are watched from now on.
    pub fn mark(&self) {
        self.inner().mark();
    }

    /// Notes the index as ralph's git command just left it: a change to it by anyone else
    /// makes the next answer [`Changes::Unknown`].
    pub fn note_index(&self) {
        self.inner().note_index();
    }

    /// What changed since the last [`mark`](Self::mark).
    pub fn changes(&self) -> Changes {
        self.inner().changes()
    }

    /// The tree, the index and `head` match (ralph just committed all of it): the next
    /// [`unchanged`](Self::unchanged) may say so.
    pub fn settle(&self, head: &str) {
        let mut inner = self.inner();
        inner.note_index();
        inner.settled = Some((head.to_string(), inner.index_now()));
        inner.vouch = true;
    }

    /// [`settle`](Self::settle), if nothing changed since the last [`mark`](Self::mark) (or
    /// the start) and the index is as [`note_index`](Self::note_index) saw it: the caller
    /// scanned the tree meanwhile and found it matching `head`.
    pub fn settle_if_unchanged(&self, head: &str) {
        let unchanged = self.inner().changes() == Changes::None;
        if unchanged {
            self.settle(head);
        }
    }

    /// Whether the index is still the one the last [`settle`](Self::settle) at `head` left:
    /// no one staged, committed or refreshed anything since, so it holds `head`'s tree.
    pub fn index_as_settled(&self, head: &str) -> bool {
        let inner = self.inner();
        inner
            .settled
            .as_ref()
            .is_some_and(|(h, index)| h == head && index.is_some() && *index == inner.index_now())
    }

    /// Forgets the last [`settle`](Self::settle): the tree and the index were put back by a
    /// command the watch cannot follow (a hard reset), so it vouches for nothing until the
    /// next settle.
    pub fn forget(&self) {
        let mut inner = self.inner();
        inner.settled = None;
        inner.vouch = false;
    }

    /// Stops watching, for good: see [`crate::watch::files::FileWatch::unwatch_all`].
    pub fn unwatch_all(&self) {
        self.inner().unwatch_all();
    }

    /// Whether the tree, the index and HEAD (now `head`) are as the last
    /// [`settle`](Self::settle) left them. Answers once per settle.
    pub fn unchanged(&self, head: &str) -> bool {
        let mut inner = self.inner();
        let vouch = std::mem::take(&mut inner.vouch);
        vouch && inner.settled.as_ref().is_some_and(|(h, _)| h == head) && inner.changes() == Changes::None
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{Changes, MAX_DIRS, MAX_PATHS};
    use crate::git::{self, IndexStamp};
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::ffi::OsStr;
    use std::path::{Path, PathBuf};

    /// Everything that changes what `git status` would say about a folder's entries.
    fn mask() -> WatchMask {
        WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW
            | WatchMask::EXCL_UNLINK
    }

    pub struct Inner {
        root: PathBuf,
        git_dir: PathBuf,
        inotify: Inotify,
        /// Watch descriptor → the folder, relative to the root (empty for the root).
        dirs: HashMap<i32, PathBuf>,
        /// The watch on `.git/info` (`exclude` is an ignore file too).
        info: Option<i32>,
        /// What git ignores, relative: events on these change nothing.
        ignored: HashSet<PathBuf>,
        /// Changed paths since the last mark.
        paths: BTreeSet<PathBuf>,
        /// Something happened that the paths do not say (an overflow, a lost watch).
        unknown: bool,
        /// New folders or ignore rules: watch again at the next mark.
        rescan: bool,
        /// The watch failed for good: every answer is `Unknown`.
        broken: bool,
        /// The index as ralph's last git command left it.
        index: Option<Option<IndexStamp>>,
        /// HEAD and the index at the last settle.
        pub settled: Option<(String, Option<IndexStamp>)>,
        /// Whether the next `unchanged` may answer yes (once per settle).
        pub vouch: bool,
        /// Where events are read into, kept from one read to the next.
        buf: Vec<u8>,
        /// Every watch added, to remove them all at the end.
        added: HashSet<WatchDescriptor>,
    }

    impl Inner {
        pub fn start(root: &Path, git_dir: PathBuf, ignored: &[String]) -> std::io::Result<Inner> {
            let inotify = Inotify::init()?;
            let mut inner = Inner {
                root: root.to_path_buf(),
                git_dir,
                inotify,
                dirs: HashMap::new(),
                info: None,
                ignored: HashSet::new(),
                paths: BTreeSet::new(),
                unknown: false,
                rescan: false,
                broken: false,
                index: None,
                settled: None,
                vouch: false,
                buf: vec![0; 64 * 1024],
                added: HashSet::new(),
            };
            inner.watch_all(ignored)?;
            Ok(inner)
        }

        /// Watches every folder that is not ignored (again: a watched one keeps its
        /// descriptor), and `.git/info`.
        fn watch_all(&mut self, ignored: &[String]) -> std::io::Result<()> {
            self.ignored = ignored.iter().map(|p| PathBuf::from(p.trim_end_matches('/'))).collect();
            let info = self.git_dir.join("info");
            if info.is_dir() {
                let wd = self.inotify.watches().add(&info, mask())?;
                self.info = Some(wd.get_watch_descriptor_id());
                self.added.insert(wd);
            }
            let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .map_or(MAX_DIRS, |max| (max / 4).min(MAX_DIRS));
            let mut todo = vec![PathBuf::new()];
            while let Some(rel) = todo.pop() {
                let abs = self.root.join(&rel);
                let wd = self.inotify.watches().add(&abs, mask())?;
                self.dirs.insert(wd.get_watch_descriptor_id(), rel.clone());
                self.added.insert(wd);
                if self.dirs.len() > limit {
                    return Err(std::io::Error::other(format!("more than {limit} folders to watch")));
                }
                for entry in std::fs::read_dir(&abs)? {
                    let entry = entry?;
                    if !entry.file_type()?.is_dir() {
                        continue;
                    }
                    let child = rel.join(entry.file_name());
                    if !self.skipped(&child, Some(&entry.file_name())) {
                        todo.push(child);
                    }
                }
            }
            Ok(())
        }

        /// Paths whose changes git never commits.
        fn skipped(&self, rel: &Path, name: Option<&OsStr>) -> bool {
            name == Some(OsStr::new(".git"))
                || rel == Path::new(crate::state::RALPH_DIR)
                || self.ignored.contains(rel)
        }

        pub fn mark(&mut self) {
            self.drain();
            if self.rescan && !self.broken {
                self.rescan = false;
                let again = git::ignored(&self.root)
                    .map_err(std::io::Error::other)
                    .and_then(|ignored| self.watch_all(&ignored));
                if let Err(e) = again {
                    tracing::debug!("the working tree's watch stops: {e}");
                    self.broken = true;
                }
            }
            self.paths.clear();
            self.unknown = false;
            self.index = None;
        }

        pub fn note_index(&mut self) {
            self.index = Some(self.index_now());
        }

        pub fn unwatch_all(&mut self) {
            for wd in std::mem::take(&mut self.added) {
                // Fails harmlessly for a folder the kernel already dropped.
                let _ = self.inotify.watches().remove(wd);
            }
            self.dirs.clear();
            self.info = None;
            self.broken = true;
        }

        pub fn index_now(&self) -> Option<IndexStamp> {
            git::index_stamp(&self.git_dir)
        }

        pub fn changes(&mut self) -> Changes {
            self.drain();
            let index_moved = self.index.as_ref().is_some_and(|i| *i != git::index_stamp(&self.git_dir));
            if self.broken || self.unknown || self.rescan || index_moved {
                Changes::Unknown
            } else if self.paths.is_empty() {
                Changes::None
            } else {
                Changes::Only(self.paths.clone())
            }
        }

        /// Reads every queued event.
        fn drain(&mut self) {
            let mut buf = std::mem::take(&mut self.buf);
            loop {
                let events = match self.inotify.read_events(&mut buf) {
                    Ok(events) => events,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            tracing::debug!("the working tree's watch stops: {e}");
                            self.broken = true;
                        }
                        break;
                    }
                };
                for e in events {
                    self.note(e.wd.get_watch_descriptor_id(), e.mask, e.name);
                }
            }
            self.buf = buf;
        }

        fn note(&mut self, wd: i32, mask: EventMask, name: Option<&OsStr>) {
            if mask.contains(EventMask::Q_OVERFLOW) {
                self.unknown = true;
                self.rescan = true;
                return;
            }
            if Some(wd) == self.info {
                // `.git/info/exclude` changed what git ignores.
                self.rescan = true;
                if mask.contains(EventMask::IGNORED) {
                    self.info = None;
                }
                return;
            }
            let Some(dir) = self.dirs.get(&wd) else { return };
            if mask.contains(EventMask::IGNORED) {
                // The folder is gone (its parent's event says so) or unwatchable.
                self.dirs.remove(&wd);
                self.rescan = true;
                return;
            }
            let path = match name {
                Some(n) => dir.join(n),
                None => {
                    // The watched folder itself was moved or deleted.
                    self.rescan = true;
                    dir.clone()
                }
            };
            if self.skipped(&path, name) {
                return;
            }
            if name == Some(OsStr::new(".gitignore"))
                || (mask.contains(EventMask::ISDIR)
                    && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO))
            {
                self.rescan = true;
            }
            if self.paths.len() < MAX_PATHS {
                self.paths.insert(path);
            } else {
                self.unknown = true;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Changes;
    use std::path::{Path, PathBuf};

    /// No inotify: never started.
    pub struct Inner {
        pub settled: Option<(String, Option<crate::git::IndexStamp>)>,
        pub vouch: bool,
    }

    impl Inner {
        pub fn start(_: &Path, _: PathBuf, _: &[String]) -> std::io::Result<Inner> {
            Err(std::io::Error::other("no inotify on this system"))
        }
        pub fn mark(&mut self) {}
        pub fn note_index(&mut self) {}
        pub fn unwatch_all(&mut self) {}
        pub fn index_now(&self) -> Option<crate::git::IndexStamp> {
            None
        }
        pub fn changes(&mut self) -> Changes {
            Changes::Unknown
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::git::test_git(dir.path(), args);
        git(&["init", "-q"]);
        std::fs::create_dir_all(dir.path().join("src/deep")).unwrap();
        std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
        std::fs::write(dir.path().join("src/deep/a.rs"), "a").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "target/\n*.log\n").unwrap();
        git(&["add", "-A"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]);
        dir
    }

    fn only(paths: &[&str]) -> Changes {
        Changes::Only(paths.iter().map(PathBuf::from).collect())
    }

    fn watch(root: &Path) -> TreeWatch {
        TreeWatch::start(root).unwrap()
    }

    #[test]
    fn sees_every_write_in_a_folder_git_does_not_ignore() {
        let dir = repo();
        let root = dir.path();
        let w = watch(root);
        assert_eq!(w.changes(), Changes::None);
        std::fs::write(root.join("src/deep/a.rs"), "b").unwrap();
        std::fs::write(root.join("new.txt"), "n").unwrap();
        assert_eq!(w.changes(), only(&["new.txt", "src/deep/a.rs"]));
        w.mark();
        assert_eq!(w.changes(), Changes::None);
        std::fs::remove_file(root.join("new.txt")).unwrap();
        assert_eq!(w.changes(), only(&["new.txt"]));
    }

    #[test]
    fn ignores_what_git_ignores_and_its_own_folders() {
        let dir = repo();
        let root = dir.path();
        let w = watch(root);
        std::fs::write(root.join("target/debug/out"), "x").unwrap();
        std::fs::create_dir_all(root.join(".ralph/runs")).unwrap();
        std::fs::write(root.join(".ralph/runs/r"), "x").unwrap();
        std::fs::write(root.join(".git/description"), "x").unwrap();
        assert_eq!(w.changes(), Changes::None);
        // An ignored file that did not exist when the watch started is a change it cannot
        // judge without git: it says so.
        std::fs::write(root.join("build.log"), "x").unwrap();
        assert_eq!(w.changes(), only(&["build.log"]));
    }

    #[test]
    fn a_new_folder_is_unknown_until_the_next_mark_watches_it() {
        let dir = repo();
        let root = dir.path();
        let w = watch(root);
        std::fs::create_dir(root.join("src/new")).unwrap();
        std::fs::write(root.join("src/new/b.rs"), "b").unwrap();
        assert_eq!(w.changes(), Changes::Unknown);
        w.mark();
        assert_eq!(w.changes(), Changes::None);
        std::fs::write(root.join("src/new/b.rs"), "c").unwrap();
        assert_eq!(w.changes(), only(&["src/new/b.rs"]));
        // A new ignore rule: the next mark asks git again.
        w.mark();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        assert_eq!(w.changes(), Changes::Unknown);
    }

    #[test]
    fn unchanged_needs_a_settle_the_same_head_and_the_same_index() {
        let dir = repo();
        let root = dir.path();
        let head = crate::git::head(root).unwrap().unwrap();
        let w = watch(root);
        assert!(!w.unchanged(&head), "never settled");
        assert!(!w.index_as_settled(&head));
        w.mark();
        w.settle(&head);
        assert!(w.index_as_settled(&head));
        assert!(!w.unchanged("0000000000000000000000000000000000000000"), "HEAD moved");
        w.settle(&head);
        assert!(w.unchanged(&head));
        assert!(!w.unchanged(&head), "one answer per settle");
        w.settle(&head);
        // The user stages something: only the index changes.
        std::fs::write(root.join("src/deep/a.rs"), "z").unwrap();
        w.mark();
        w.settle(&head);
        let ok = std::process::Command::new("git").args(["add", "-A"]).current_dir(root).status().unwrap();
        assert!(ok.success());
        assert!(!w.index_as_settled(&head));
        assert!(!w.unchanged(&head), "the index changed");
        w.settle(&head);
        std::fs::write(root.join("src/deep/a.rs"), "y").unwrap();
        assert!(!w.unchanged(&head), "a file changed");
    }

    #[test]
    fn a_scan_settles_only_if_nothing_changed_while_it_ran() {
        let dir = repo();
        let root = dir.path();
        let head = crate::git::head(root).unwrap().unwrap();
        let w = watch(root);
        w.note_index();
        w.settle_if_unchanged(&head);
        assert!(w.unchanged(&head));
        let w = watch(root);
        w.note_index();
        std::fs::write(root.join("src/deep/a.rs"), "during the scan").unwrap();
        w.settle_if_unchanged(&head);
        assert!(!w.unchanged(&head));
    }
}
