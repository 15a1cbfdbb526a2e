//! Every git operation ralph performs, by shelling out to the `git` CLI.
//!
//! The CLI, not libgit2, because a commit made for the user must behave as `git commit` does:
//! their pre-commit and commit-msg hooks run, `core.hooksPath` and `commit.gpgsign` are honoured
//! (libgit2 runs no hooks: libgit2/libgit2#964). Invariants: ralph never pushes, never touches a
//! branch other than the one it works on, and never stages `.ralph/`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Pathspec that keeps ralph's own folder out of every `git add`, even if the user's ignore
/// rules were edited.
const EXCLUDE_RALPH: &str = ":(exclude).ralph";

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`git` could not be started (is git installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("`git {command}` exited with {status}: {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("{0} is not inside a git repository")]
    NotARepo(PathBuf),
}

fn git(root: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(root)
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        // ralph's `git status` must not take the index lock just to refresh it: a user's git
        // command (or their editor's) running meanwhile would fail.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null());
    cmd
}

/// How long a git command waits out another process's `index.lock` before failing: a user's
/// `git status` or an editor's git integration takes it for a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether git failed only because another process held a lock.
fn lock_contention(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains(".lock': File exists") || err.contains("Another git process seems to be running")
}

fn run<I, S>(root: &Path, args: I) -> Result<Output, GitError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let out = output(root, &args)?;
    if out.status.success() { Ok(out) } else { Err(failed(&args, &out)) }
}

/// Runs git, waiting out another process's lock; the output whatever the exit status.
fn output(root: &Path, args: &[std::ffi::OsString]) -> Result<Output, GitError> {
    tracing::debug!(?args, "git");
    let start = std::time::Instant::now();
    loop {
        let out = git(root).args(args).output().map_err(GitError::Spawn)?;
        if out.status.success() || !lock_contention(&out) || start.elapsed() > LOCK_WAIT {
            return Ok(out);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn failed(args: &[std::ffi::OsString], out: &Output) -> GitError {
    let command = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    GitError::Failed { command, status: out.status.to_string(), stderr }
}

fn stdout(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The repository's top folder for `dir`.
pub fn toplevel(dir: &Path) -> Result<PathBuf, GitError> {
    let out = git(dir).args(["rev-parse", "--show-toplevel"]).output().map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::NotARepo(dir.to_path_buf()));
    }
    Ok(PathBuf::from(stdout(out)))
}

/// The commit HEAD points to, or `None` in a repository with no commits yet.
pub fn head(root: &Path) -> Result<Option<String>, GitError> {
    let out = git(root).args(["rev-parse", "--verify", "-q", "HEAD"]).output().map_err(GitError::Spawn)?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// The checked-out branch, or `None` on a detached HEAD.
pub fn current_branch(root: &Path) -> Result<Option<String>, GitError> {
    let out = git(root).args(["symbolic-ref", "-q", "--short", "HEAD"]).output().map_err(GitError::Spawn)?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// Uncommitted changes (`git status --porcelain` lines), ignored files excluded.
pub fn dirty_entries(root: &Path) -> Result<Vec<String>, GitError> {
    let out = run(root, ["status", "--porcelain", "--untracked-files=all"])?;
    Ok(stdout(out)
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|l| !l[3.min(l.len())..].starts_with(".ralph/"))
        .map(str::to_string)
        .collect())
}

/// Stages every change in the working tree, except `.ralph/`.
pub fn add_all(root: &Path) -> Result<(), GitError> {
    run(root, ["add", "-A", "--", ".", EXCLUDE_RALPH]).map(drop)
}

/// Stages one path.
pub fn add_path(root: &Path, path: &Path) -> Result<(), GitError> {
    run(root, [OsStr::new("add"), OsStr::new("--"), path.as_os_str()]).map(drop)
}

/// Files whose staged content differs from `base`.
pub fn staged_files(root: &Path, base: &str) -> Result<Vec<String>, GitError> {
    let out = run(root, ["diff", "--cached", "--name-only", "-z", base])?;
    Ok(nul_separated(&out.stdout))
}

/// The staged changes against `base` as a binary-safe patch.
pub fn staged_patch(root: &Path, base: &str) -> Result<Vec<u8>, GitError> {
    Ok(run(root, ["diff", "--cached", "--binary", base])?.stdout)
}

/// Puts index and working tree back to `rev` and removes untracked files. Ignored files,
/// `.ralph/` among them, are left alone.
pub fn restore(root: &Path, rev: &str) -> Result<(), GitError> {
    run(root, ["reset", "--hard", "-q", rev])?;
    run(root, ["clean", "-fdq", "-e", ".ralph"]).map(drop)
}

/// Moves the branch to `rev`, keeping index and working tree (folds commits the agent made
/// itself into ralph's one commit).
pub fn reset_soft(root: &Path, rev: &str) -> Result<(), GitError> {
    run(root, ["reset", "--soft", "-q", rev]).map(drop)
}

/// The result of `git commit`: hooks may refuse it.
#[derive(Debug)]
pub enum CommitResult {
    Committed(String),
    /// git (usually a hook) refused; its combined output.
    Refused(String),
}

/// Commits what is staged with `message`, as `git commit` does for the user: hooks run and
/// signing follows their configuration.
pub fn commit(root: &Path, message: &str, message_file: &Path) -> Result<CommitResult, GitError> {
    commit_paths(root, message, message_file, &[])
}

/// Commits only `path` (whatever else is staged stays staged), with hooks and signing as usual.
pub fn commit_only(
    root: &Path,
    message: &str,
    path: &Path,
    message_file: &Path,
) -> Result<CommitResult, GitError> {
    commit_paths(root, message, message_file, &[path])
}

fn commit_paths(
    root: &Path,
    message: &str,
    message_file: &Path,
    paths: &[&Path],
) -> Result<CommitResult, GitError> {
    std::fs::write(message_file, message).map_err(GitError::Spawn)?;
    let mut args: Vec<std::ffi::OsString> =
        vec!["commit".into(), "-q".into(), "-F".into(), message_file.as_os_str().to_os_string()];
    if !paths.is_empty() {
        args.push("--".into());
        args.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
    }
    let out = output(root, &args)?;
    let _ = std::fs::remove_file(message_file);
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Ok(CommitResult::Refused(text));
    }
    match head(root)? {
        Some(sha) => Ok(CommitResult::Committed(sha)),
        None => Ok(CommitResult::Refused("git commit left no HEAD".into())),
    }
}

/// Checks out `branch`, creating it at HEAD when it does not exist.
pub fn checkout_branch(root: &Path, branch: &str) -> Result<(), GitError> {
    let exists = git(root)
        .args(["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")])
        .output()
        .map_err(GitError::Spawn)?
        .status
        .success();
    if exists {
        run(root, ["checkout", "-q", branch]).map(drop)
    } else {
        run(root, ["checkout", "-q", "-b", branch]).map(drop)
    }
}

/// Whether a branch name is valid.
pub fn valid_branch_name(root: &Path, branch: &str) -> bool {
    git(root)
        .args(["check-ref-format", "--branch", branch])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Initialises a repository (used by `ralph demo`).
pub fn init(root: &Path) -> Result<(), GitError> {
    run(root, ["init", "-q"]).map(drop)
}

/// Reads a config value, if set.
pub fn config_get(root: &Path, key: &str) -> Option<String> {
    let out = git(root).args(["config", "--get", key]).output().ok()?;
    out.status.success().then(|| stdout(out)).filter(|s| !s.is_empty())
}

/// Sets a repository-local config value.
pub fn config_set(root: &Path, key: &str, value: &str) -> Result<(), GitError> {
    run(root, ["config", key, value]).map(drop)
}

/// Records the whole working tree (tracked and untracked, ignored files and `.ralph/` left
/// out) as a tree object, without touching the real index. Used with `--allow-dirty`, so a
/// revert puts the user's uncommitted changes back instead of losing them.
pub fn snapshot(root: &Path, tmp_index: &Path) -> Result<String, GitError> {
    let index = stdout(run(root, ["rev-parse", "--git-path", "index"])?);
    let index = root.join(index);
    if index.exists() {
        std::fs::copy(&index, tmp_index).map_err(GitError::Spawn)?;
    }
    let with_index = |args: &[&str]| -> Result<Output, GitError> {
        let out = git(root).env("GIT_INDEX_FILE", tmp_index).args(args).output().map_err(GitError::Spawn)?;
        if out.status.success() {
            Ok(out)
        } else {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            Err(failed(&args, &out))
        }
    };
    let result = with_index(&["add", "-A", "--", ".", EXCLUDE_RALPH])
        .and_then(|_| with_index(&["write-tree"]))
        .map(stdout);
    let _ = std::fs::remove_file(tmp_index);
    result
}

/// Puts the working tree back to a [`snapshot`] taken on top of `head`. The index ends equal to
/// `head`: changes the user had staged come back unstaged.
pub fn restore_snapshot(root: &Path, head: &str, tree: &str) -> Result<(), GitError> {
    restore(root, head)?;
    run(root, ["checkout", tree, "--", "."])?;
    run(root, ["reset", "-q"]).map(drop)
}

/// Puts one path back to its content at HEAD.
pub fn checkout_path(root: &Path, path: &Path) -> Result<(), GitError> {
    run(root, [OsStr::new("checkout"), OsStr::new("HEAD"), OsStr::new("--"), path.as_os_str()]).map(drop)
}

/// Points HEAD at `branch` without touching index or working tree.
pub fn point_head_at(root: &Path, branch: &str) -> Result<(), GitError> {
    run(root, ["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")]).map(drop)
}

/// Whether `commit` carries ralph's trailers for this run and iteration.
pub fn commit_has_trailers(root: &Path, commit: &str, run_id: &str, iteration: u32) -> bool {
    run(root, ["log", "-1", "--format=%B", commit]).map(stdout).is_ok_and(|msg| {
        msg.contains(&format!("Ralph-Run: {run_id}\n"))
            && msg.contains(&format!("Ralph-Iteration: {iteration}"))
    })
}

/// Files that differ between two commits.
pub fn changed_between(root: &Path, from: &str, to: &str) -> Result<Vec<String>, GitError> {
    let out = run(root, ["diff", "--name-only", "-z", from, to])?;
    Ok(nul_separated(&out.stdout))
}

/// What changed between two trees (or commits): `(A|M|D|T, path)`, renames split.
pub fn name_status(root: &Path, from: &str, to: &str) -> Result<Vec<(char, String)>, GitError> {
    let out = run(root, ["diff", "--name-status", "--no-renames", "-z", from, to])?;
    let fields = nul_separated(&out.stdout);
    Ok(fields
        .chunks(2)
        .filter_map(|c| match c {
            [kind, path] => Some((kind.chars().next().unwrap_or('M'), path.clone())),
            _ => None,
        })
        .collect())
}

/// The binary-safe patch from one tree to another, limited to `paths`.
pub fn tree_patch(root: &Path, from: &str, to: &str, paths: &[String]) -> Result<Vec<u8>, GitError> {
    let mut args: Vec<&OsStr> = ["diff", "--binary", from, to, "--"].into_iter().map(OsStr::new).collect();
    args.extend(paths.iter().map(OsStr::new));
    Ok(run(root, args)?.stdout)
}

/// Puts one path of the working tree back to its content in `tree` (removed if `tree` has
/// none), leaving the index alone.
pub fn put_back_path(root: &Path, tree: &str, path: &str) -> Result<(), GitError> {
    if run(root, ["cat-file", "-e", &format!("{tree}:{path}")]).is_ok() {
        run(root, ["restore", &format!("--source={tree}"), "--worktree", "--", path]).map(drop)
    } else {
        match std::fs::remove_file(root.join(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(GitError::Spawn(e)),
        }
    }
}

/// The repository's git directory.
pub fn git_dir(root: &Path) -> Option<PathBuf> {
    let out = run(root, ["rev-parse", "--git-dir"]).ok()?;
    Some(root.join(stdout(out)))
}

/// Whether the working tree or HEAD differs from `base` (ignored files and `.ralph/` aside).
pub fn has_changes(root: &Path, base: &str) -> Result<bool, GitError> {
    Ok(head(root)?.as_deref() != Some(base) || !dirty_entries(root)?.is_empty())
}

/// Every branch and tag with the commit it points at.
pub fn refs(root: &Path) -> Result<Vec<(String, String)>, GitError> {
    let out = run(root, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"])?;
    Ok(stdout(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect())
}

/// Points `name` at `sha`, or deletes it.
pub fn update_ref(root: &Path, name: &str, sha: Option<&str>) -> Result<(), GitError> {
    match sha {
        Some(sha) => run(root, ["update-ref", name, sha]).map(drop),
        None => run(root, ["update-ref", "-d", name]).map(drop),
    }
}

/// The paths of a `-z` listing.
fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The staged changes against `base`: kind (A, M, D; renames split) and path.
pub fn staged_changes(root: &Path, base: &str) -> Result<Vec<crate::gates::Change>, GitError> {
    let out = run(root, ["diff", "--cached", "--name-status", "--no-renames", "-z", base])?;
    let fields = nul_separated(&out.stdout);
    Ok(fields
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| crate::gates::Change { kind: c[0].chars().next().unwrap_or('M'), path: c[1].clone() })
        .collect())
}

/// Lines the staged changes add against `base`, with their file (the first few MiB of the diff).
pub fn staged_added_lines(root: &Path, base: &str) -> Result<Vec<(String, String)>, GitError> {
    const MAX_DIFF: usize = 4 * 1024 * 1024;
    let out = run(root, ["diff", "--cached", "-U0", "--no-color", "--no-ext-diff", base])?;
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(MAX_DIFF)]).into_owned();
    let mut file = String::new();
    let mut lines = Vec::new();
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("+++ ") {
            file = p.strip_prefix("b/").unwrap_or(p).to_string();
        } else if let Some(added) = l.strip_prefix('+') {
            lines.push((file.clone(), added.to_string()));
        }
    }
    Ok(lines)
}

/// The working tree (tracked and untracked, ignored files and `.ralph/` aside) as a tree
/// object, through a temporary index; the real index is left alone.
pub fn worktree_tree(root: &Path, tmp_index: &Path) -> Result<String, GitError> {
    let tree = snapshot(root, tmp_index)?;
    Ok(tree)
}

/// Puts the working tree back to `tree` (taken on top of `head`), index reset to `head`.
pub fn restore_worktree_tree(root: &Path, head: &str, tree: &str) -> Result<(), GitError> {
    restore_snapshot(root, head, tree)
}

/// The staged-and-unstaged change against `base` as a reviewer should see it: whitespace-only
/// changes and ralph's own files left out.
pub fn review_diff(root: &Path, base: &str) -> Result<String, GitError> {
    add_all(root)?;
    let out = run(
        root,
        [
            "diff",
            "--cached",
            "-w",
            "--ignore-blank-lines",
            "--no-color",
            "--no-ext-diff",
            base,
            "--",
            ".",
            EXCLUDE_RALPH,
            ":(exclude)AGENTS.md",
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_processs_index_lock_is_waited_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::process::Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        let lock = root.join(".git/index.lock");
        std::fs::write(&lock, "").unwrap();
        let l = lock.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::fs::remove_file(l).unwrap();
        });
        add_all(root).unwrap();
        release.join().unwrap();
        assert_eq!(staged_files(root, "4b825dc642cb6eb9a060e54bf8d69288fbee4904").unwrap(), vec!["a.txt"]);
    }
}
