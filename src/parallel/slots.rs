//! The worker slots of a parallel run: one git worktree each, outside the user's checkout (in
//! `<git common dir>/ralph-slots/<n>`), on its own branch `ralph/slot-<n>`, locked with `git
//! worktree lock` naming the run while it is in use, and reset to the target branch's tip
//! before each task (ignored files, build caches among them, survive).
//!
//! Invariants: ralph removes only checkouts under its slots folder and branches named
//! `ralph/slot-<n>`; a slot branch is deleted only when the target branch contains its commit
//! (its work landed, or it has none of its own); one holding work that did not land is kept
//! under `ralph/kept/...` and named to the user. No slot survives a run's end, and the next
//! run removes what a killed one left.

use crate::error::CliError;
use crate::git;
use std::path::{Path, PathBuf};

/// The prefix of slot branches.
pub const BRANCH_PREFIX: &str = "ralph/slot-";

/// Room a new checkout needs beyond the size of the tracked files.
const MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// A run's slots.
pub struct Slots {
    root: PathBuf,
    dir: PathBuf,
    run_id: String,
    /// Slots made so far (their numbers).
    made: std::collections::BTreeSet<u32>,
}

/// Where ralph keeps the slots of `root`'s repository.
pub fn folder(root: &Path) -> PathBuf {
    git::common_dir(root).unwrap_or_else(|| root.join(".git")).join("ralph-slots")
}

impl Slots {
    pub fn new(root: &Path, run_id: &str) -> Slots {
        Slots {
            root: root.to_path_buf(),
            dir: folder(root),
            run_id: run_id.to_string(),
            made: Default::default(),
        }
    }

    /// The slot `n`'s checkout.
    pub fn path(&self, n: u32) -> PathBuf {
        self.dir.join(n.to_string())
    }

    pub fn branch(n: u32) -> String {
        format!("{BRANCH_PREFIX}{n}")
    }

    /// Slot `n`, made if needed, reset to `tip`: its checkout's path.
    pub fn prepare(&mut self, n: u32, tip: &str) -> Result<PathBuf, CliError> {
        let path = self.path(n);
        let listed = git::worktrees(&self.root)?.iter().any(|w| w.path == path);
        if !listed || !path.join(".git").exists() {
            // Removed from outside (or never made): made again.
            if listed || path.exists() {
                let _ = git::worktree_remove(&self.root, &path);
                let _ = std::fs::remove_dir_all(&path);
            }
            self.check_room(tip)?;
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| CliError::failure(format!("cannot create {}: {e}", self.dir.display())))?;
            git::worktree_add(
                &self.root,
                &path,
                &Self::branch(n),
                tip,
                &format!("ralph run {}", self.run_id),
            )?;
        }
        git::reset_checkout(&path, &Self::branch(n), tip)?;
        self.made.insert(n);
        Ok(path)
    }

    /// Refuses to make a checkout the disk has no room for.
    fn check_room(&self, tip: &str) -> Result<(), CliError> {
        let need = git::tree_size(&self.root, tip).unwrap_or(0) + MARGIN_BYTES;
        let Some(free) = free_bytes(self.dir.parent().unwrap_or(&self.root)) else { return Ok(()) };
        if free < need {
            return Err(CliError::failure(format!(
                "not enough free disk for another worker's checkout in {}: {} MiB free, {} MiB needed",
                self.dir.display(),
                free / (1024 * 1024),
                need / (1024 * 1024)
            ))
            .hint("free some space, or run fewer workers (`-j`)"));
        }
        Ok(())
    }

    /// Removes every slot of this run (see [`remove_stale`]).
    pub fn remove_all(&mut self, target: &str) -> Vec<String> {
        self.made.clear();
        remove_stale(&self.root, target)
    }
}

/// Removes every checkout in the slots folder and every slot branch, keeping (renamed) a
/// branch whose commit the target branch does not contain. Returns what it kept, in words.
pub fn remove_stale(root: &Path, target: &str) -> Vec<String> {
    let dir = folder(root);
    let mut said: Vec<String> = git::remove_worktrees_under(root, &dir)
        .into_iter()
        .map(|(path, e)| format!("could not remove the worker checkout {}: {e}", path.display()))
        .collect();
    let _ = std::fs::remove_dir(&dir);
    let target_ref = format!("refs/heads/{target}");
    for (name, sha) in git::branches(root, BRANCH_PREFIX).unwrap_or_default() {
        let landed = git::is_ancestor(root, &sha, &target_ref).unwrap_or(false);
        let full = format!("refs/heads/{name}");
        if landed {
            let _ = git::update_ref(root, &full, None);
        } else {
            let kept = format!(
                "refs/heads/ralph/kept/{}-{}",
                name.trim_start_matches("ralph/"),
                &sha[..sha.len().min(12)]
            );
            if git::update_ref(root, &kept, Some(&sha)).is_ok() && git::update_ref(root, &full, None).is_ok()
            {
                said.push(format!(
                    "kept {} (work of a worker that did not land) as {}",
                    &sha[..sha.len().min(12)],
                    kept.trim_start_matches("refs/heads/")
                ));
            }
        }
    }
    said
}

/// Free bytes for an unprivileged user on the file system of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and an out-pointer read only on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        let git = |args: &[&str]| git::test_git(&root, args);
        git(&["init", "-q", "-b", "main"]);
        git(&["config", "user.name", "t"]);
        git(&["config", "user.email", "t@example.invalid"]);
        git(&["config", "commit.gpgsign", "false"]);
        std::fs::write(root.join("a.txt"), "a\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", "init"]);
        let head = git::head(&root).unwrap().unwrap();
        (dir, root, head)
    }

    #[test]
    fn a_slot_removed_from_outside_is_made_again_and_reset_keeps_ignored_files() {
        let (_dir, root, head) = repo();
        let mut slots = Slots::new(&root, "r1");
        let path = slots.prepare(1, &head).unwrap();
        assert!(path.starts_with(root.join(".git/ralph-slots")), "{}", path.display());
        let listed = git::worktrees(&root).unwrap();
        assert!(listed.iter().any(|w| w.path == path && w.locked), "{listed:?}");
        // Left dirty by a task: reset for the next, an ignored build cache kept.
        std::fs::write(root.join(".git/info/exclude"), "target/\n").unwrap();
        std::fs::create_dir(path.join("target")).unwrap();
        std::fs::write(path.join("target/cache"), "x").unwrap();
        std::fs::write(path.join("a.txt"), "changed\n").unwrap();
        std::fs::write(path.join("stray.txt"), "x").unwrap();
        git::test_git(&path, &["add", "stray.txt"]);
        let path = slots.prepare(1, &head).unwrap();
        assert_eq!(std::fs::read_to_string(path.join("a.txt")).unwrap(), "a\n");
        assert!(!path.join("stray.txt").exists());
        assert!(path.join("target/cache").exists(), "the build cache survives");
        assert_eq!(git::head(&path).unwrap().as_deref(), Some(head.as_str()));
        // Deleted from outside: made again.
        std::fs::remove_dir_all(&path).unwrap();
        let path = slots.prepare(1, &head).unwrap();
        assert_eq!(std::fs::read_to_string(path.join("a.txt")).unwrap(), "a\n");
    }

    #[test]
    fn cleanup_deletes_landed_slot_branches_and_keeps_work_that_did_not_land() {
        let (_dir, root, head) = repo();
        let mut slots = Slots::new(&root, "r1");
        let one = slots.prepare(1, &head).unwrap();
        let two = slots.prepare(2, &head).unwrap();
        // Slot 2 holds a commit main does not have.
        std::fs::write(two.join("b.txt"), "b\n").unwrap();
        git::test_git(&two, &["add", "-A"]);
        git::test_git(&two, &["commit", "-qm", "unlanded"]);
        let unlanded = git::head(&two).unwrap().unwrap();
        let said = slots.remove_all("main");
        assert!(git::worktrees(&root).unwrap().iter().all(|w| !w.path.starts_with(folder(&root))));
        assert!(!one.exists() && !two.exists());
        assert!(git::branches(&root, BRANCH_PREFIX).unwrap().is_empty());
        let kept = git::branches(&root, "ralph/kept/").unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].1, unlanded);
        assert!(said[0].contains("ralph/kept/slot-2-"), "{said:?}");
    }
}
