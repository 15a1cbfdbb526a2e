//! Following the user's edits while the loop runs: which specs (and AGENTS.md) changed since
//! the last iteration, for the run's log; and, for `ralph run --watch`, waiting until specs/ changes
//! (notify, debounced) when there is nothing to do; the running task's spec while its agent
//! works ([`spec_edit`]); the working tree's watch ([`tree`]),
//! which spares an iteration its scans of the tree when nothing changed; and the frame's
//! ([`files`]), which spares it a look at every file the agent must not touch.

pub mod files;
mod spec_edit;
pub mod tree;

pub use spec_edit::{SpecWatch, TaskWatch};

use crate::backlog::{Backlog, SPECS_DIR, Source, spec};
use crate::signal::Stop;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use spec_edit::DEBOUNCE;

/// Fingerprints of what the user edits, as of the last iteration.
#[derive(Debug, Default)]
pub struct Seen {
    /// Task id → (label, fingerprint of its text).
    files: Option<BTreeMap<String, (String, String)>>,
    /// AGENTS.md as ralph left it after the last iteration (its learnings included).
    agents_md: Option<String>,
}

impl Seen {
    /// Takes a new look; returns one line per change since the last look (none the first time).
    /// Notes AGENTS.md as ralph leaves it, so that only someone else's edit is reported.
    pub fn note_agents_md(&mut self, root: &Path) {
        self.agents_md = Some(agents_md(root));
    }

    pub fn update(&mut self, root: &Path, backlog: &Backlog) -> Vec<String> {
        // By task id (the stories of one prd.json share a path); the label names it.
        let now: BTreeMap<String, (String, String)> =
            backlog.tasks.iter().map(|t| (t.id.clone(), (t.label(), spec::fingerprint(&t.body)))).collect();
        let mut out = Vec::new();
        if let Some(before) = &self.files {
            for (id, (label, fp)) in &now {
                match before.get(id) {
                    None => out.push(format!("{label} is new")),
                    Some((_, old)) if old != fp => out.push(format!("{label} changed")),
                    _ => {}
                }
            }
            for (label, _) in before.iter().filter(|(id, _)| !now.contains_key(*id)).map(|(_, v)| v) {
                out.push(format!("{label} was removed"));
            }
        }
        self.files = Some(now);
        let md = agents_md(root);
        if self.agents_md.as_ref().is_some_and(|old| *old != md) {
            out.push(format!("{} changed", crate::learnings::AGENTS_MD));
        }
        self.agents_md = Some(md);
        out
    }
}

/// Why the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    Changed,
    /// Ctrl-C, SIGTERM, `ralph stop --now`.
    Stopped,
    /// `ralph stop`: end once the current work is over, and there is none.
    StopRequested,
}

/// The folder to watch for a backlog, and the one file in it that matters (a prd or a plan).
fn watched(root: &Path, source: &Source) -> (std::path::PathBuf, Option<std::ffi::OsString>) {
    match source.file() {
        None => (root.join(SPECS_DIR), None),
        Some(f) => {
            let abs = root.join(f);
            (abs.parent().unwrap_or(root).to_path_buf(), abs.file_name().map(ToOwned::to_owned))
        }
    }
}

/// Waits until the backlog differs from `before` (a [`listing`] taken when the backlog was last
/// read, so an edit made meanwhile is not missed), then a quiet [`DEBOUNCE`]; or a stop.
pub async fn specs_changed(root: &Path, source: &Source, before: &Listing, stop: &Stop) -> Woken {
    use notify::Watcher;
    let (dir, only) = watched(root, source);
    let listing = |dir: &Path| listing(dir, only.as_deref());
    if only.is_none() {
        let _ = std::fs::create_dir_all(&dir);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        let mode = if only.is_some() {
            notify::RecursiveMode::NonRecursive
        } else {
            notify::RecursiveMode::Recursive
        };
        w.watch(&dir, mode).map(|()| w)
    });
    // Without a watcher (inotify limits), a slow poll of the folder does the job.
    let poll = watcher.is_err();
    let _keep = watcher.ok();
    if listing(&dir) != *before {
        return Woken::Changed;
    }
    loop {
        tokio::select! {
            got = rx.recv(), if !poll => if got.is_none() { return Woken::Stopped },
            _ = tokio::time::sleep(Duration::from_secs(2)), if poll => {
                if listing(&dir) == *before { continue }
            },
            _ = stop.cancel.cancelled() => return Woken::Stopped,
            _ = stop.after_iteration.cancelled() => return Woken::StopRequested,
        }
        // Debounce: wait until the burst of events is over.
        loop {
            tokio::select! {
                _ = rx.recv(), if !poll => continue,
                _ = tokio::time::sleep(DEBOUNCE) => break,
                _ = stop.cancel.cancelled() => return Woken::Stopped,
            }
        }
        if listing(&dir) != *before {
            return Woken::Changed;
        }
    }
}

/// Names and modification times of a folder's files.
pub type Listing = BTreeMap<String, Option<std::time::SystemTime>>;

/// The [`Listing`] of the backlog: specs/, or the prd or plan.
pub fn specs_listing(root: &Path, source: &Source) -> Listing {
    let (dir, only) = watched(root, source);
    listing(&dir, only.as_deref())
}

fn listing(dir: &Path, only: Option<&std::ffi::OsStr>) -> Listing {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| only.is_none_or(|o| e.file_name() == o))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().and_then(|m| m.modified()).ok(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn agents_md(root: &Path) -> String {
    spec::fingerprint(
        &crate::fsx::read_input_following(&root.join(crate::learnings::AGENTS_MD)).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_spec_wakes_the_wait_and_a_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(SPECS_DIR)).unwrap();
        let stop = Stop::default();
        let root = dir.path().to_path_buf();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::fs::write(root.join("specs/010-new.md"), "# New\n").unwrap();
        });
        let before = specs_listing(dir.path(), &Source::Specs);
        assert_eq!(specs_changed(dir.path(), &Source::Specs, &before, &stop).await, Woken::Changed);
        writer.await.unwrap();
        let before = specs_listing(dir.path(), &Source::Specs);
        stop.cancel.cancel();
        assert_eq!(specs_changed(dir.path(), &Source::Specs, &before, &stop).await, Woken::Stopped);
    }
}
