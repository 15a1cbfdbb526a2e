//! Reverting an iteration's uncommitted work, the one way both a red iteration and the
//! recovery of a killed one do it: everything is staged, its diff against the base is saved
//! (secrets masked) as the iteration's `rejected.patch`, and only then is the tree put back.
//!
//! Invariant: nothing is reverted unless its diff is kept. A failed write of the patch is an
//! error naming the file, and the working tree is left as it is.

use crate::error::CliError;
use crate::secrets::Secrets;
use crate::state::{self, StateError};
use crate::worktree::Worktree;
use std::path::Path;

/// The file a reverted iteration's diff is saved in, in the iteration's folder.
pub(crate) const REJECTED_PATCH: &str = "rejected.patch";

/// Where the working tree goes back to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Back<'a> {
    /// The commit: tree and index equal to it.
    To(&'a str),
    /// An `--allow-dirty` snapshot `tree` taken on top of commit `head`.
    Snapshot { head: &'a str, tree: &'a str },
}

/// Saves the uncommitted work's diff against `base` into `dir`'s [`REJECTED_PATCH`], masked,
/// then puts the tree back as `back` says. Returns the files the diff changed (none: no patch).
/// Staged and put back through the worktree handle, which keeps its watch right.
pub(crate) fn revert(
    wt: &Worktree,
    base: &str,
    back: Back<'_>,
    dir: &Path,
    secrets: &Secrets,
) -> Result<Vec<String>, CliError> {
    wt.add_all()?;
    let files = wt.staged_files(base)?;
    if !files.is_empty() {
        let patch = secrets.mask_bytes(&wt.staged_patch(base)?);
        state::atomic_write(&dir.join(REJECTED_PATCH), &patch).map_err(not_saved)?;
    }
    match back {
        Back::To(rev) => wt.restore(rev)?,
        Back::Snapshot { head, tree } => wt.restore_snapshot(head, tree)?,
    }
    Ok(files)
}

fn not_saved(e: StateError) -> CliError {
    let full =
        matches!(&e, StateError::Write { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
    let err = CliError::failure(format!(
        "cannot save the rejected changes, so they were not reverted: {}",
        crate::error::chain(&e)
    ));
    if full {
        err.hint("free some space, then `ralph run` again: it resumes the run, records the cut iteration as interrupted and keeps its diff as rejected.patch")
    } else {
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(root: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git").args(args).current_dir(root).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A repository with one commit, `.ralph/` ignored, and a change on top holding a secret.
    fn repo(secret: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sh(root, &["init", "-q"]);
        sh(root, &["config", "user.email", "t@t"]);
        sh(root, &["config", "user.name", "t"]);
        std::fs::write(root.join(".gitignore"), ".ralph/\n").unwrap();
        std::fs::write(root.join("a.txt"), "a\n").unwrap();
        sh(root, &["add", "-A"]);
        sh(root, &["commit", "-qm", "i"]);
        let head = sh(root, &["rev-parse", "HEAD"]);
        std::fs::create_dir_all(root.join(".ralph/runs/r/001")).unwrap();
        std::fs::write(root.join("a.txt"), format!("token = {secret}\n")).unwrap();
        std::fs::write(root.join("new.txt"), "new\n").unwrap();
        (dir, head)
    }

    #[test]
    fn the_diff_is_saved_masked_then_the_tree_put_back() {
        let secret = "sk-live-0123456789abcdef";
        let (dir, head) = repo(secret);
        let root = dir.path();
        let secrets = Secrets::from_vars([("API_TOKEN", secret)]);
        let iter_dir = root.join(".ralph/runs/r/001");
        let files = revert(&Worktree::unwatched(root), &head, Back::To(&head), &iter_dir, &secrets).unwrap();
        assert_eq!(files, vec!["a.txt", "new.txt"]);
        let patch = std::fs::read_to_string(iter_dir.join(REJECTED_PATCH)).unwrap();
        assert!(patch.contains("new.txt") && patch.contains("token = "), "{patch}");
        assert!(!patch.contains(secret), "{patch}");
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "a\n");
        assert!(!root.join("new.txt").exists());
    }

    #[test]
    fn a_patch_that_cannot_be_written_is_an_error_and_nothing_is_reverted() {
        let (dir, head) = repo("not-a-secret-value");
        let root = dir.path();
        let iter_dir = root.join(".ralph/runs/r/001");
        // A folder with something in it where the patch goes: no file can take its name.
        std::fs::create_dir_all(iter_dir.join(REJECTED_PATCH).join("in")).unwrap();
        let e = revert(&Worktree::unwatched(root), &head, Back::To(&head), &iter_dir, &Secrets::default())
            .unwrap_err();
        assert!(e.message.contains(REJECTED_PATCH), "{}", e.message);
        assert!(e.message.contains("not reverted"), "{}", e.message);
        assert!(root.join("new.txt").exists());
        assert!(std::fs::read_to_string(root.join("a.txt")).unwrap().contains("token"));
    }

    #[test]
    fn nothing_changed_writes_no_patch() {
        let (dir, head) = repo("x");
        let root = dir.path();
        sh(root, &["checkout", "-q", "--", "."]);
        std::fs::remove_file(root.join("new.txt")).unwrap();
        let iter_dir = root.join(".ralph/runs/r/001");
        assert!(
            revert(&Worktree::unwatched(root), &head, Back::To(&head), &iter_dir, &Secrets::default())
                .unwrap()
                .is_empty()
        );
        assert!(!iter_dir.join(REJECTED_PATCH).exists());
    }
}
