//! A worktree handle: one checkout's root and its working tree's watch ([`TreeWatch`]), with
//! the git operations that stage, commit and put the tree back, each keeping the watch right
//! itself. A caller stages, commits and reverts through the handle and never tells the watch.
//!
//! Invariants: the watch vouches for an unchanged tree ([`Worktree::unchanged`]) only after a
//! commit through the handle (or [`Worktree::settle`] / [`Worktree::settle_if_unchanged`] after
//! the caller's own look), and forgets it when the handle puts the tree back. Every staging
//! through the handle notes the index it left, so a change to it by anyone else makes the
//! watch answer [`Changes::Unknown`]. Several handles may exist at once, one per checkout
//! (`git worktree add`): each watches its own folders and its own index.

use crate::git::{self, CommitResult, GitError};
use crate::watch::tree::{Changes, TreeWatch};
use std::path::{Path, PathBuf};

/// See the module documentation.
pub struct Worktree {
    root: PathBuf,
    tree: Option<TreeWatch>,
}

impl Worktree {
    /// The checkout at `root`, watched when its tree can be (see [`TreeWatch::start`]).
    pub fn open(root: &Path) -> Worktree {
        Worktree { root: root.to_path_buf(), tree: TreeWatch::start(root) }
    }

    /// The checkout at `root` without a watch: every question about changes is answered
    /// "cannot tell", and the caller scans (recovery, before the run's watch starts).
    pub fn unwatched(root: &Path) -> Worktree {
        Worktree { root: root.to_path_buf(), tree: None }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the tree is watched at all.
    pub fn watched(&self) -> bool {
        self.tree.is_some()
    }

    /// Notes the index as it is now (before ralph's first look at the tree): a change to it by
    /// anyone else makes the next answer [`Changes::Unknown`].
    pub fn note_index(&self) {
        if let Some(t) = &self.tree {
            t.note_index();
        }
    }

    /// The caller found the tree matching `head` by a scan: the watch vouches for it if
    /// nothing changed while the scan ran.
    pub fn settle_if_unchanged(&self, head: &str) {
        if let Some(t) = &self.tree {
            t.settle_if_unchanged(head);
        }
    }

    /// The caller staged everything through the handle and found nothing to commit: the tree,
    /// the index and `head` match.
    pub fn settle(&self, head: &str) {
        if let Some(t) = &self.tree {
            t.settle(head);
        }
    }

    /// Whether the tree, the index and HEAD (now `head`) are as the last commit through the
    /// handle left them. Answers yes once per commit; no when there is no watch.
    pub fn unchanged(&self, head: &str) -> bool {
        self.tree.as_ref().is_some_and(|t| t.unchanged(head))
    }

    /// What changed in the tree since the last staging through the handle.
    pub fn changes(&self) -> Changes {
        self.tree.as_ref().map_or(Changes::Unknown, TreeWatch::changes)
    }

    /// Whether the index is still the one the last commit at `head` left: no one staged,
    /// committed or refreshed anything since.
    pub fn index_as_settled(&self, head: &str) -> bool {
        self.tree.as_ref().is_some_and(|t| t.index_as_settled(head))
    }

    /// `git add -A` (but `.ralph/`): what changed before is staged now.
    pub fn add_all(&self) -> Result<(), GitError> {
        self.staging(|| git::add_all(&self.root))
    }

    /// [`add_all`](Self::add_all), and what it changed in the index (see
    /// [`git::add_all_listed`]).
    pub fn add_all_listed(&self) -> Result<Option<Vec<git::Change>>, GitError> {
        self.staging(|| git::add_all_listed(&self.root))
    }

    /// A staging git command, with the watch told: it looks again from now on, and notes the
    /// index the command left.
    fn staging<T>(&self, stage: impl FnOnce() -> Result<T, GitError>) -> Result<T, GitError> {
        if let Some(t) = &self.tree {
            t.mark();
        }
        let done = stage();
        if let Some(t) = &self.tree {
            t.note_index();
        }
        done
    }

    /// The staged changes against `base`, as the gates judge them.
    pub fn staged(&self, base: &str) -> Result<git::Staged, GitError> {
        git::staged(&self.root, base)
    }

    /// Files whose staged content differs from `base`.
    pub fn staged_files(&self, base: &str) -> Result<Vec<String>, GitError> {
        git::staged_files(&self.root, base)
    }

    /// The staged changes against `base` as a binary-safe patch.
    pub fn staged_patch(&self, base: &str) -> Result<Vec<u8>, GitError> {
        git::staged_patch(&self.root, base)
    }

    /// Commits what is staged and `include` (see [`git::commit_including`]); once committed,
    /// the watch vouches for the tree at the new commit unless something changed that the
    /// commit did not take. With `include`, the caller says the tree changed only there since
    /// its last staging: the watch looks again from before the commit (hooks writing files
    /// are seen). Without, changes since the last staging stay known and keep the watch from
    /// vouching.
    pub fn commit_including(&self, message: &str, include: &[&Path]) -> Result<CommitResult, GitError> {
        if let (Some(t), false) = (&self.tree, include.is_empty()) {
            t.mark();
        }
        let result = git::commit_including(&self.root, message, include)?;
        if let (Some(t), CommitResult::Committed(sha)) = (&self.tree, &result) {
            t.settle(sha);
        }
        Ok(result)
    }

    /// Commits `path` on its own, as it is in the tree (learnings of a reverted iteration, a
    /// task's block): staged by the commit itself. When git refuses (a hook), the path is put
    /// back to HEAD, so the tree stays as the last commit left it.
    /// Whatever else differs from HEAD stays as it is, so the watch vouches for nothing after.
    pub fn commit_path(&self, message: &str, path: &Path) -> Result<CommitResult, GitError> {
        if let Some(t) = &self.tree {
            t.forget();
        }
        let result = match git::commit_including(&self.root, message, &[path]) {
            Ok(CommitResult::Refused(text)) => {
                git::checkout_path(&self.root, path).map(|()| CommitResult::Refused(text))
            }
            other => other,
        };
        if let Some(t) = &self.tree {
            t.forget();
        }
        result
    }

    /// Moves the branch to `rev`, index and tree untouched (commits the agent made itself,
    /// folded into ralph's one): what the watch knows of the tree still holds.
    pub fn reset_soft(&self, rev: &str) -> Result<(), GitError> {
        git::reset_soft(&self.root, rev)
    }

    /// The whole working tree as a tree object, through `tmp_index` (see [`git::snapshot`]);
    /// the real index is not touched.
    pub fn snapshot(&self, tmp_index: &Path) -> Result<String, GitError> {
        git::snapshot(&self.root, tmp_index)
    }

    /// The change against `base` as a reviewer sees it (see [`git::review_diff`]), which
    /// stages everything to compute it.
    pub fn review_diff(&self, base: &str) -> Result<String, GitError> {
        self.staging(|| git::review_diff(&self.root, base))
    }

    /// Puts index and working tree back to `rev` (see [`git::restore`]). The watch forgets
    /// what it vouched for.
    pub fn restore(&self, rev: &str) -> Result<(), GitError> {
        self.putting_back(|| git::restore(&self.root, rev))
    }

    /// Puts the working tree back to a snapshot `tree` taken on top of `head` (see
    /// [`git::restore_snapshot`]). The watch forgets what it vouched for.
    pub fn restore_snapshot(&self, head: &str, tree: &str) -> Result<(), GitError> {
        self.putting_back(|| git::restore_snapshot(&self.root, head, tree))
    }

    fn putting_back(&self, put_back: impl FnOnce() -> Result<(), GitError>) -> Result<(), GitError> {
        // Forgotten before and after: a half-done put back vouches for nothing either.
        if let Some(t) = &self.tree {
            t.forget();
        }
        let done = put_back();
        if let Some(t) = &self.tree {
            t.forget();
        }
        done
    }

    /// Stops watching, for good (see [`TreeWatch::unwatch_all`]).
    pub fn unwatch_all(&self) {
        if let Some(t) = &self.tree {
            t.unwatch_all();
        }
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    fn git_out(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A repository with one commit and two more checkouts of it (`git worktree add`), on
    /// branches `one` and `two`.
    fn two_worktrees() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main");
        std::fs::create_dir(&main).unwrap();
        let git = |args: &[&str]| git::test_git(&main, args);
        git(&["init", "-q"]);
        git(&["config", "user.name", "t"]);
        git(&["config", "user.email", "t@example.invalid"]);
        git(&["config", "commit.gpgsign", "false"]);
        std::fs::create_dir(main.join("src")).unwrap();
        std::fs::write(main.join("src/a.txt"), "a\n").unwrap();
        std::fs::write(main.join(".gitignore"), ".ralph/\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", "init"]);
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        for (path, branch) in [(&one, "one"), (&two, "two")] {
            git(&["worktree", "add", "-q", "-b", branch, path.to_str().unwrap()]);
        }
        (dir, one, two)
    }

    fn head(root: &Path) -> String {
        git::head(root).unwrap().unwrap()
    }

    #[test]
    fn two_handles_on_two_worktrees_each_stage_and_commit_their_own() {
        let (_dir, one, two) = two_worktrees();
        let (a, b) = (Worktree::open(&one), Worktree::open(&two));
        assert!(a.watched() && b.watched());
        let base = head(&one);
        assert_eq!(base, head(&two));

        std::fs::write(one.join("src/one.txt"), "one\n").unwrap();
        std::fs::write(two.join("src/a.txt"), "two\n").unwrap();
        std::fs::write(two.join("two.txt"), "two\n").unwrap();
        // Each watch sees its own checkout's writes, and nothing of the other's.
        assert_eq!(a.changes(), Changes::Only(["src/one.txt".into()].into()));
        assert_eq!(b.changes(), Changes::Only(["src/a.txt".into(), "two.txt".into()].into()));

        a.add_all().unwrap();
        assert_eq!(a.staged_files(&base).unwrap(), ["src/one.txt"]);
        assert_eq!(b.changes(), Changes::Only(["src/a.txt".into(), "two.txt".into()].into()));
        let CommitResult::Committed(sha_a) = a.commit_including("one", &[]).unwrap() else { panic!() };
        assert_eq!(head(&one), sha_a);
        assert_eq!(head(&two), base, "the other checkout's HEAD did not move");
        assert!(a.index_as_settled(&sha_a));
        assert!(!b.index_as_settled(&base), "never settled");

        // The other stages and commits on its own branch, after the first committed.
        b.add_all().unwrap();
        let CommitResult::Committed(sha_b) = b.commit_including("two", &[]).unwrap() else { panic!() };
        assert!(b.staged_files(&sha_b).unwrap().is_empty(), "all committed");
        assert_eq!(git_out(&two, &["diff", "--name-only", &base, &sha_b]), "src/a.txt\ntwo.txt");

        // Each watch vouches for its own commit: the other's commit (another branch, another
        // index, shared objects and refs) fools neither.
        assert!(a.index_as_settled(&sha_a) && b.index_as_settled(&sha_b));
        assert!(!a.index_as_settled(&sha_b) && !b.index_as_settled(&sha_a));
        assert!(a.unchanged(&sha_a), "the first checkout is as its commit left it");
        assert!(b.unchanged(&sha_b), "the second checkout is as its commit left it");

        // Neither sees the other's files.
        assert!(!one.join("two.txt").exists() && !two.join("src/one.txt").exists());
        assert_eq!(std::fs::read_to_string(one.join("src/a.txt")).unwrap(), "a\n");
        assert_eq!(git_out(&one, &["status", "--porcelain"]), "");
        assert_eq!(git_out(&two, &["status", "--porcelain"]), "");
        assert_eq!(git_out(&one, &["ls-files"]), ".gitignore\nsrc/a.txt\nsrc/one.txt");
        assert_eq!(git_out(&two, &["ls-files"]), ".gitignore\nsrc/a.txt\ntwo.txt");

        // A write in one checkout after its commit: its watch says so, the other's does not.
        a.settle(&sha_a);
        b.settle(&sha_b);
        std::fs::write(two.join("two.txt"), "changed\n").unwrap();
        assert!(a.unchanged(&sha_a));
        assert!(!b.unchanged(&sha_b));
    }

    #[test]
    fn a_put_back_leaves_the_watch_vouching_for_nothing() {
        let (_dir, one, _two) = two_worktrees();
        let a = Worktree::open(&one);
        std::fs::write(one.join("src/one.txt"), "one\n").unwrap();
        a.add_all().unwrap();
        let CommitResult::Committed(sha) = a.commit_including("one", &[]).unwrap() else { panic!() };
        // Red work, staged, then found to hold nothing to commit by a caller that settles.
        std::fs::write(one.join("src/a.txt"), "red work\n").unwrap();
        a.add_all().unwrap();
        a.settle(&sha);
        a.restore(&sha).unwrap();
        assert_eq!(std::fs::read_to_string(one.join("src/a.txt")).unwrap(), "a\n");
        assert!(!a.index_as_settled(&sha));
        assert!(!a.unchanged(&sha), "the hard reset is none of the watch's business to vouch for");
    }

    #[test]
    fn one_path_is_committed_alone_and_put_back_when_a_hook_refuses() {
        let (dir, one, _two) = two_worktrees();
        // A file the user left uncommitted before the handle watched: still there after, and
        // the watch does not vouch for a tree it never saw.
        std::fs::write(one.join("mine.txt"), "mine\n").unwrap();
        let a = Worktree::open(&one);
        // As in an iteration reverted with `--allow-dirty`: staged through the handle, then the
        // snapshot of the tree (the user's file in it) put back.
        let base = head(&one);
        let snap = a.snapshot(&dir.path().join("snapshot-index")).unwrap();
        a.add_all().unwrap();
        a.restore_snapshot(&base, &snap).unwrap();
        std::fs::write(one.join("AGENTS.md"), "learned\n").unwrap();
        let CommitResult::Committed(sha) = a.commit_path("learnings", Path::new("AGENTS.md")).unwrap() else {
            panic!()
        };
        assert_eq!(git_out(&one, &["show", "--name-only", "--format=", &sha]), "AGENTS.md");
        assert_eq!(git_out(&one, &["status", "--porcelain"]), "?? mine.txt");
        assert!(!a.unchanged(&sha), "mine.txt differs from the commit");

        // A hook that refuses: the path goes back to HEAD, the other change stays.
        let hooks = one.join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        std::fs::write(hooks.join("pre-commit"), "#!/bin/sh\necho no >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(
            hooks.join("pre-commit"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        git::test_git(&one, &["config", "core.hooksPath", hooks.to_str().unwrap()]);
        std::fs::write(one.join("AGENTS.md"), "learned more\n").unwrap();
        let result = a.commit_path("more", Path::new("AGENTS.md")).unwrap();
        assert!(matches!(result, CommitResult::Refused(ref t) if t.contains("no")), "{result:?}");
        assert_eq!(head(&one), sha);
        assert_eq!(std::fs::read_to_string(one.join("AGENTS.md")).unwrap(), "learned\n");
        assert_eq!(std::fs::read_to_string(one.join("mine.txt")).unwrap(), "mine\n");
        assert!(!a.unchanged(&sha), "a put back vouches for nothing");
    }

    #[test]
    fn an_unwatched_handle_vouches_for_nothing() {
        let (_dir, one, _two) = two_worktrees();
        let a = Worktree::unwatched(&one);
        let h = head(&one);
        a.settle(&h);
        assert!(!a.unchanged(&h) && !a.index_as_settled(&h));
        assert_eq!(a.changes(), Changes::Unknown);
        std::fs::write(one.join("src/one.txt"), "one\n").unwrap();
        a.add_all().unwrap();
        assert_eq!(a.staged_files(&h).unwrap(), ["src/one.txt"]);
    }
}
