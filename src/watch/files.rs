//! A watch on a few folders' entries: which of their files changed since the last look. The
//! frame keeps what it read of the files it protects and asks this watch, not the files, whether
//! they are still so: "nothing changed" costs one `read` of the event queue instead of a
//! `stat` (and a read) of every hook, ref and state file twice an iteration.
//!
//! Invariants: after [`FileWatch::watch`] answered yes for a folder, any write, creation,
//! removal, rename or change of attributes of an entry of that folder is reported by the next
//! [`FileWatch::changes`] (by the entry's path) unless an earlier call reported it. When the
//! watch cannot tell (its queue overflowed or cannot be read, a watched folder or a watched
//! folder's entry on the way to another watched folder was removed, renamed or replaced),
//! [`FileWatch::changes`] answers `None` and the caller forgets everything; every folder is
//! then watched anew, at its path, by the next [`FileWatch::watch`]. A folder's parents beyond
//! the watched ones are the caller's to watch (or to trust). Entries are seen by
//! the path they were written through: a file written through a hard link in another folder,
//! or the target of a symbolic link, is not covered (callers keep no read of a symbolic link).
//! The watch reads its queue only when asked: no thread.

use std::path::{Path, PathBuf};

/// See the module documentation.
pub struct FileWatch(imp::Inner);

impl FileWatch {
    /// A watch with no folder yet; `None` where there is no inotify.
    pub fn start() -> Option<FileWatch> {
        match imp::Inner::start() {
            Ok(inner) => Some(FileWatch(inner)),
            Err(e) => {
                tracing::debug!("the frame's files are not watched: {e}");
                None
            }
        }
    }

    /// Whether `dir`'s entries are watched: already, or from now on. No when it is no folder
    /// (a symbolic link to one included: what it points at may change unseen) or cannot be
    /// watched.
    pub fn watch(&mut self, dir: &Path) -> bool {
        self.0.watch(dir)
    }

    /// Stops watching every folder. Closing an inotify instance waits for the kernel to free
    /// the marks it held (a grace period, 5 to 20 ms on a small VM), once per instance; marks
    /// removed from every instance first are freed in one grace period, and in the background
    /// of whatever the caller does before the instances are closed.
    pub fn unwatch_all(&mut self) {
        self.0.unwatch_all();
    }

    /// The paths of the entries that changed since the last call, each once, or `None` when
    /// the watch cannot tell (then every watched folder counts as changed).
    pub fn changes(&mut self) -> Option<Vec<PathBuf>> {
        self.0.changes()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
    use std::collections::{HashMap, HashSet};
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    pub struct Inner {
        inotify: Inotify,
        /// Folder → its watch descriptor, and back.
        dirs: HashMap<PathBuf, WatchDescriptor>,
        by_wd: HashMap<WatchDescriptor, PathBuf>,
        /// Every name on the way to a watched folder: an entry named otherwise cannot lead to
        /// one, which spares most events a comparison with every folder.
        on_the_way: HashSet<OsString>,
        /// Where events are read into, kept from one read to the next.
        buf: Vec<u8>,
    }

    impl Inner {
        pub fn start() -> std::io::Result<Inner> {
            Ok(Inner {
                inotify: Inotify::init()?,
                dirs: HashMap::new(),
                by_wd: HashMap::new(),
                on_the_way: HashSet::new(),
                buf: vec![0; 16 * 1024],
            })
        }

        pub fn watch(&mut self, dir: &Path) -> bool {
            if self.dirs.contains_key(dir) {
                return true;
            }
            // Not CLOSE_WRITE: a write shows as MODIFY when it happens, and ralph's sync thread
            // closes the files it synced whenever it is done with them (the agent may be
            // running), under their new names.
            let mask = WatchMask::MODIFY
                | WatchMask::ATTRIB
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR
                | WatchMask::DONT_FOLLOW;
            match self.inotify.watches().add(dir, mask) {
                Ok(wd) => {
                    // Two paths to one folder (a bind mount) share a descriptor: events name
                    // the later path, and the earlier one is watched again if asked.
                    if let Some(old) = self.by_wd.insert(wd.clone(), dir.to_path_buf()) {
                        self.dirs.remove(&old);
                    }
                    self.dirs.insert(dir.to_path_buf(), wd);
                    self.on_the_way.extend(dir.iter().map(OsString::from));
                    true
                }
                Err(e) => {
                    tracing::debug!("{} is not watched: {e}", dir.display());
                    false
                }
            }
        }

        pub fn unwatch_all(&mut self) {
            for (wd, _) in std::mem::take(&mut self.by_wd) {
                // Fails harmlessly when the kernel already dropped it (the folder is gone).
                let _ = self.inotify.watches().remove(wd);
            }
            self.dirs.clear();
            self.on_the_way.clear();
        }

        pub fn changes(&mut self) -> Option<Vec<PathBuf>> {
            // A write is several events on one entry (create, modify, close): each entry once.
            let mut entries: Vec<(WatchDescriptor, OsString)> = Vec::new();
            let mut known = true;
            let mut buf = std::mem::take(&mut self.buf);
            loop {
                let events = match self.inotify.read_events(&mut buf) {
                    Ok(events) => events,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!("the frame's watch cannot read its events: {e}");
                        known = false;
                        break;
                    }
                };
                for e in events {
                    if !self.by_wd.contains_key(&e.wd) {
                        // An overflow (no descriptor), or a folder no longer watched.
                        known &= !e.mask.contains(EventMask::Q_OVERFLOW);
                        continue;
                    }
                    match e.name {
                        Some(name)
                            if !e.mask.intersects(
                                EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF,
                            ) =>
                        {
                            if !entries.iter().any(|(wd, n)| *wd == e.wd && n == name) {
                                entries.push((e.wd.clone(), name.to_owned()));
                            }
                        }
                        // The folder itself was removed, renamed or unmounted.
                        _ => known = false,
                    }
                }
            }
            self.buf = buf;
            let mut paths = Vec::with_capacity(entries.len());
            for (wd, name) in entries {
                let Some(dir) = self.by_wd.get(&wd) else { continue };
                let path = dir.join(&name);
                // A watched folder's parent renamed or removed: the path now leads elsewhere
                // while the watch stays on what was there.
                if self.on_the_way.contains(&name) && self.dirs.keys().any(|d| d.starts_with(&path)) {
                    known = false;
                }
                paths.push(path);
            }
            if !known {
                // Every folder is watched anew, at its path, by the next `watch`.
                self.unwatch_all();
            }
            known.then_some(paths)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::{Path, PathBuf};

    /// No inotify: never started.
    pub struct Inner;

    impl Inner {
        pub fn start() -> std::io::Result<Inner> {
            Err(std::io::Error::other("no inotify on this system"))
        }
        pub fn watch(&mut self, _: &Path) -> bool {
            false
        }
        pub fn unwatch_all(&mut self) {}
        pub fn changes(&mut self) -> Option<Vec<PathBuf>> {
            None
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn set(paths: &[&Path]) -> Option<BTreeSet<PathBuf>> {
        Some(paths.iter().map(|p| p.to_path_buf()).collect())
    }

    trait Sorted {
        fn sorted(self) -> Option<BTreeSet<PathBuf>>;
    }

    impl Sorted for Option<Vec<PathBuf>> {
        fn sorted(self) -> Option<BTreeSet<PathBuf>> {
            self.map(|v| {
                let n = v.len();
                let set: BTreeSet<PathBuf> = v.into_iter().collect();
                assert_eq!(set.len(), n, "an entry reported twice");
                set
            })
        }
    }

    #[test]
    fn names_each_entry_written_created_removed_or_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "1").unwrap();
        std::fs::write(d.join("b"), "1").unwrap();
        let mut w = FileWatch::start().unwrap();
        assert!(w.watch(d));
        assert_eq!(w.changes().sorted(), set(&[]));
        std::fs::write(d.join("a"), "2").unwrap();
        assert_eq!(w.changes().sorted(), set(&[&d.join("a")]));
        assert_eq!(w.changes().sorted(), set(&[]), "reported once");
        std::fs::write(d.join("c.tmp"), "new").unwrap();
        std::fs::rename(d.join("c.tmp"), d.join("b")).unwrap();
        std::fs::remove_file(d.join("a")).unwrap();
        assert_eq!(w.changes().sorted(), set(&[&d.join("a"), &d.join("b"), &d.join("c.tmp")]));
        let f = std::fs::File::open(d.join("b")).unwrap();
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_eq!(w.changes().sorted(), set(&[&d.join("b")]));
    }

    #[test]
    fn a_folder_replaced_or_an_overflow_is_unknown_then_watched_anew() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let mut w = FileWatch::start().unwrap();
        assert!(w.watch(&sub));
        std::fs::rename(&sub, dir.path().join("old")).unwrap();
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(w.changes().sorted(), None);
        // Watched again at its path: the new folder's writes are seen, the old one's are not.
        assert!(w.watch(&sub));
        std::fs::write(dir.path().join("old/x"), "").unwrap();
        std::fs::write(sub.join("y"), "").unwrap();
        assert_eq!(w.changes().sorted(), set(&[&sub.join("y")]));
        std::fs::remove_dir_all(&sub).unwrap();
        assert_eq!(w.changes().sorted(), None);
        assert!(!w.watch(&sub), "no folder there");
    }

    #[test]
    fn a_watched_folders_parent_renamed_is_unknown_a_sibling_folder_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let deep = top.join("runs/r");
        std::fs::create_dir_all(&deep).unwrap();
        let mut w = FileWatch::start().unwrap();
        assert!(w.watch(top) && w.watch(&deep));
        // A new folder beside the watched ones (an iteration's log folder) is an entry.
        std::fs::create_dir(deep.join("iter-0001")).unwrap();
        assert_eq!(w.changes().sorted(), set(&[&deep.join("iter-0001")]));
        // `runs` is not watched, but its rename shows in `top`, and leads away from `deep`.
        std::fs::rename(top.join("runs"), top.join("old")).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(w.changes().sorted(), None);
        assert!(w.watch(top) && w.watch(&deep));
        std::fs::write(deep.join("run.json"), "{}").unwrap();
        assert_eq!(w.changes().sorted(), set(&[&deep.join("run.json")]));
    }

    #[test]
    fn a_symbolic_link_to_a_folder_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let mut w = FileWatch::start().unwrap();
        assert!(!w.watch(&dir.path().join("link")));
        assert!(w.watch(&dir.path().join("real")));
    }
}
