//! The running task's spec, watched while its agent works: [`SpecWatch::task`] calls `on_edit`
//! once when the task's text (not its status) differs from what the agent was given, after a
//! quiet [`DEBOUNCE`]. One watch serves the whole run: an inotify instance per iteration would
//! cost a kernel grace period (5 to 20 ms on a small VM) each time it is closed.
//!
//! Invariants: only events that can change a file's text are asked of the kernel (writes,
//! creations, removals, renames), never opens or reads. The backlog's folder is read by ralph
//! twice an iteration (every spec, to load the backlog and to judge the agent's changes) and by
//! git; a watch that also heard opens (as the `notify` crate's does) woke its thread once per
//! file read, about a hundred times an iteration on a backlog of fifty specs, and cost the loop
//! more than its git commands. No thread: the event queue is read by a tokio task, woken
//! through the runtime's reactor, only while a task is watched. Without inotify (another
//! system, or its limits reached) the watch does nothing; the runner still compares the text
//! when the agent ends.

use crate::backlog::Spec;
use std::path::Path;
use std::time::Duration;

/// Quiet time after the last event before the spec is read: editors write a file in several
/// steps (a temporary file, a rename).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// See the module documentation.
pub struct SpecWatch(Option<imp::Inner>);

impl SpecWatch {
    /// A watch for the run; it watches nothing until [`SpecWatch::task`]. Needs a tokio runtime
    /// (with I/O) to have been entered.
    pub fn new() -> SpecWatch {
        match imp::Inner::start() {
            Ok(inner) => SpecWatch(Some(inner)),
            Err(e) => {
                tracing::debug!("the running task's spec is not watched: {e}");
                SpecWatch(None)
            }
        }
    }

    /// Watches `task`'s file until the answer is dropped; `on_edit` is called at most once.
    pub fn task(&self, root: &Path, task: &Spec, on_edit: impl FnOnce() + Send + 'static) -> TaskWatch {
        TaskWatch { task: self.0.as_ref().and_then(|inner| inner.task(root, task, on_edit)) }
    }
}

impl Default for SpecWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// One task's watch ([`SpecWatch::task`]); stops when dropped.
pub struct TaskWatch {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Whether `task`'s file now says something else than the agent was given.
fn edited(root: &Path, task: &Spec) -> bool {
    crate::backlog::current_body(root, task).is_some_and(|b| b.trim() != task.body.trim())
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{DEBOUNCE, Spec, edited};
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError};
    use tokio::io::unix::AsyncFd;

    pub struct Inner {
        watches: Mutex<Watches>,
        /// Folder → its watch descriptor: each folder is watched once, for the whole run.
        dirs: Mutex<HashMap<PathBuf, WatchDescriptor>>,
        /// The queue, read by one task's watch at a time (the previous one is aborted first).
        queue: Arc<tokio::sync::Mutex<AsyncFd<Inotify>>>,
    }

    /// One event, copied out of the read buffer: the folder and the entry's name.
    type Seen = (WatchDescriptor, Option<OsString>, bool);

    impl Inner {
        pub fn start() -> std::io::Result<Inner> {
            // The reactor is the runtime's: registering outside one would panic.
            tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
            let inotify = Inotify::init()?;
            let watches = inotify.watches();
            // SAFETY: the descriptor is the instance's own, open until the instance (owned by
            // the `AsyncFd`) is dropped, and never replaced.
            let queue = unsafe { AsyncFd::register_with_interest(inotify, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
            Ok(Inner {
                watches: Mutex::new(watches),
                dirs: Mutex::default(),
                queue: Arc::new(tokio::sync::Mutex::new(queue)),
            })
        }

        pub fn task(
            &self,
            root: &Path,
            task: &Spec,
            on_edit: impl FnOnce() + Send + 'static,
        ) -> Option<tokio::task::JoinHandle<()>> {
            let file = root.join(&task.path);
            let dir = file.parent()?.to_path_buf();
            let name = file.file_name()?.to_owned();
            let wd = self.watch(&dir)?;
            let queue = self.queue.clone();
            let (root, task) = (root.to_path_buf(), task.clone());
            Some(tokio::spawn(async move {
                let mut queue = queue.lock().await;
                let mut buf = vec![0u8; 4096];
                // What came before this agent (ralph's own status writes) is no edit of its spec.
                while !read_now(&mut queue, &mut buf).is_empty() {}
                let ours = |(w, n, overflow): &Seen| *overflow || (*w == wd && n.as_ref() == Some(&name));
                loop {
                    let Some(events) = read(&mut queue, &mut buf).await else { return };
                    if !events.iter().any(ours) {
                        continue;
                    }
                    // Debounce: wait until the burst of events is over.
                    loop {
                        tokio::select! {
                            got = read(&mut queue, &mut buf) => if got.is_none() { return },
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                        }
                    }
                    if edited(&root, &task) {
                        on_edit();
                        return;
                    }
                }
            }))
        }

        /// The descriptor of `dir`'s watch, made the first time.
        fn watch(&self, dir: &Path) -> Option<WatchDescriptor> {
            let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(wd) = dirs.get(dir) {
                return Some(wd.clone());
            }
            // A write shows as MODIFY, a new version written aside and renamed as MOVED_TO.
            let mask = WatchMask::MODIFY
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::ONLYDIR
                | WatchMask::DONT_FOLLOW;
            let added = self.watches.lock().unwrap_or_else(PoisonError::into_inner).add(dir, mask);
            match added {
                Ok(wd) => {
                    dirs.insert(dir.to_path_buf(), wd.clone());
                    Some(wd)
                }
                Err(e) => {
                    tracing::debug!("{} is not watched: {e}", dir.display());
                    None
                }
            }
        }
    }

    /// The events queued now, without waiting (none when the queue cannot be read).
    fn read_now(queue: &mut AsyncFd<Inotify>, buf: &mut [u8]) -> Vec<Seen> {
        match queue.get_mut().read_events(buf) {
            Ok(events) => events
                .map(|e| (e.wd, e.name.map(ToOwned::to_owned), e.mask.contains(EventMask::Q_OVERFLOW)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The next events, once there are some; `None` when the queue cannot be read any more.
    async fn read(queue: &mut AsyncFd<Inotify>, buf: &mut [u8]) -> Option<Vec<Seen>> {
        loop {
            let mut ready = queue.readable_mut().await.ok()?;
            let got = ready.try_io(|q| {
                q.get_mut().read_events(buf).map(|events| {
                    events
                        .map(|e| {
                            (e.wd, e.name.map(ToOwned::to_owned), e.mask.contains(EventMask::Q_OVERFLOW))
                        })
                        .collect::<Vec<Seen>>()
                })
            });
            match got {
                Ok(Ok(events)) if !events.is_empty() => return Some(events),
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(e)) => {
                    tracing::debug!("the spec watch's queue cannot be read: {e}");
                    return None;
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Spec;
    use std::path::Path;

    /// No watch: the runner compares the spec's text when the agent ends.
    pub struct Inner;

    impl Inner {
        pub fn start() -> std::io::Result<Inner> {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }

        pub fn task(
            &self,
            _root: &Path,
            _task: &Spec,
            _on_edit: impl FnOnce() + Send + 'static,
        ) -> Option<tokio::task::JoinHandle<()>> {
            None
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn spec(root: &Path, text: &str) -> Spec {
        std::fs::create_dir_all(root.join("specs")).unwrap();
        std::fs::write(root.join("specs/010-a.md"), text).unwrap();
        crate::backlog::Backlog::load(root, &crate::backlog::Source::Specs).unwrap().tasks.remove(0)
    }

    /// Whether `flag` is set within `ms` (more than [`DEBOUNCE`] to say "never").
    async fn settles(flag: &AtomicBool, ms: u64) -> bool {
        for _ in 0..ms / 50 {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_edit_of_the_running_spec_is_told_once_and_reads_or_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let task = spec(dir.path(), "# A\n\nDo a.\n");
        let watch = SpecWatch::new();
        let told = Arc::new(AtomicBool::new(false));
        let t = told.clone();
        let _w = watch.task(dir.path(), &task, move || t.store(true, Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Reading the spec, or writing another file of the folder, is no edit.
        for _ in 0..20 {
            std::fs::read_to_string(dir.path().join("specs/010-a.md")).unwrap();
        }
        std::fs::write(dir.path().join("specs/020-b.md"), "# B\n").unwrap();
        assert!(!settles(&told, 800).await, "a read or another spec was taken for an edit");
        // An editor's save: a new version written aside, renamed over the spec.
        std::fs::write(dir.path().join("specs/.010-a.md.swp"), "# A\n\nDo a, then b.\n").unwrap();
        std::fs::rename(dir.path().join("specs/.010-a.md.swp"), dir.path().join("specs/010-a.md")).unwrap();
        assert!(settles(&told, 3000).await, "the edit was not told");
    }

    #[tokio::test]
    async fn a_write_of_the_same_text_is_no_edit_and_a_dropped_watch_tells_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let task = spec(dir.path(), "# A\n\nDo a.\n");
        let watch = SpecWatch::new();
        let told = Arc::new(AtomicBool::new(false));
        let t = told.clone();
        let w = watch.task(dir.path(), &task, move || t.store(true, Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(dir.path().join("specs/010-a.md"), "# A\n\nDo a.\n").unwrap();
        assert!(!settles(&told, 800).await, "the same text was taken for an edit");
        drop(w);
        std::fs::write(dir.path().join("specs/010-a.md"), "# A\n\nDo b.\n").unwrap();
        assert!(!settles(&told, 800).await, "a watch dropped with its iteration still told");
        // The next iteration's watch of the same folder sees its own edits only.
        let told2 = Arc::new(AtomicBool::new(false));
        let t2 = told2.clone();
        let task = crate::backlog::Backlog::load(dir.path(), &crate::backlog::Source::Specs)
            .unwrap()
            .tasks
            .remove(0);
        let _w2 = watch.task(dir.path(), &task, move || t2.store(true, Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!settles(&told2, 800).await, "an edit before the watch was told");
        std::fs::write(dir.path().join("specs/010-a.md"), "# A\n\nDo c.\n").unwrap();
        assert!(settles(&told2, 3000).await, "the second watch missed the edit");
    }
}
