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
const RALPH_PATH: &str = ".ralph";

/// One changed path, as `git diff --name-status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 'A', 'M', 'D' (renames are split into a delete and an add); 'M' also stands for an
    /// addition when only `git add -v` told (it does not say which).
    pub kind: char,
    pub path: String,
}

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No `git` program to run.
    #[error("`git` could not be started (is git installed?)")]
    Missing(#[source] std::io::Error),
    /// git is there but could not be run (no memory, no process slots, no file descriptors).
    #[error("`git {command}` could not be run")]
    Run {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A file ralph reads or writes around a git command (a full disk, a permission).
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {command}` exited with {status}: {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("{0} is not inside a git repository")]
    NotARepo(PathBuf),
}

/// The run's marks (`RALPH_RUN_ID`, `RALPH_ROOT`), set on every git process once a run has
/// started: a git command (and the hook under it) orphaned by a killed ralph is then found
/// and ended by the next run's recovery, like the agent and the checks.
static RUN_ENV: std::sync::RwLock<Option<[(String, String); 2]>> = std::sync::RwLock::new(None);

/// Marks every git process started from now on as run `run_id`'s of repository `root`.
pub fn mark_run(run_id: &str, root: &Path) {
    let marks = [
        ("RALPH_RUN_ID".to_string(), run_id.to_string()),
        ("RALPH_ROOT".to_string(), root.to_string_lossy().into_owned()),
    ];
    *RUN_ENV.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(marks);
}

fn git(root: &Path) -> Command {
    let mut cmd = Command::new("git");
    if let Some(marks) = RUN_ENV.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
        cmd.envs(marks.iter().map(|(k, v)| (k, v)));
    }
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
    output_with_input(root, args, None)
}

/// The least a pipe holds (one page), even when the user's pipe allowance is spent.
const PIPE_BUF: usize = 4096;

/// [`output`] with `input` (if any) on git's stdin.
fn output_with_input(
    root: &Path,
    args: &[std::ffi::OsString],
    input: Option<&[u8]>,
) -> Result<Output, GitError> {
    tracing::debug!(?args, "git");
    let start = std::time::Instant::now();
    loop {
        let out = match input {
            None => git(root).args(args).output(),
            Some(input) => output_fed(git(root).args(args), input),
        }
        .map_err(not_run(args))?;
        if out.status.success() || !lock_contention(&out) || start.elapsed() > LOCK_WAIT {
            return Ok(out);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `cmd`'s output, `input` on its stdin. More than a pipe surely holds is written from a
/// thread of its own: git may read it only after a hook has run and printed more than a pipe
/// holds. git exiting before it reads (an error) closes the pipe: its status says why.
fn output_fed(cmd: &mut Command, input: &[u8]) -> std::io::Result<Output> {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdin = child.stdin.take();
    if input.len() <= PIPE_BUF {
        // A pipe holds at least a page: the write cannot wait for git.
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(input);
        }
        // Only `git commit` is fed: ralph dying here leaves the commit, message in hand, and
        // its hooks running.
        crate::fault::point("git_commit_running");
        return child.wait_with_output();
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(input);
            }
        });
        child.wait_with_output()
    })
}

/// Whether a failed `git add` only complained that `.ralph` is ignored. ralph names it in its
/// exclude pathspec; when the user's own .gitignore ignores it too, git lists it as an
/// ignored path and exits 1, having staged everything else.
fn only_ralph_ignored(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = err.lines();
    out.status.code() == Some(1)
        && lines.next().is_some_and(|l| l.starts_with("The following paths are ignored"))
        && lines
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
            .all(|l| l == RALPH_PATH || l.starts_with(".ralph/"))
}

/// `git add -A` of everything but `.ralph/`, into the index or `GIT_INDEX_FILE = index`; with
/// `verbose`, git lists what it staged on stdout.
fn add_all_into(root: &Path, index: Option<&Path>, verbose: bool) -> Result<Output, GitError> {
    let args: Vec<std::ffi::OsString> = ["add", "-A"]
        .into_iter()
        .chain(verbose.then_some("-v"))
        .chain(["--", ".", EXCLUDE_RALPH])
        .map(Into::into)
        .collect();
    let out = match index {
        None => output(root, &args)?,
        Some(i) => git(root).env("GIT_INDEX_FILE", i).args(&args).output().map_err(not_run(&args))?,
    };
    if out.status.success() || only_ralph_ignored(&out) { Ok(out) } else { Err(failed(&args, &out)) }
}

/// A failure to start git running `args`: a missing program is told from the rest.
fn not_run<S: AsRef<OsStr>>(args: &[S]) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            GitError::Missing(source)
        } else {
            let command = args.iter().map(|a| a.as_ref().to_string_lossy()).collect::<Vec<_>>().join(" ");
            GitError::Run { command, source }
        }
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
    let out = git(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(not_run(&["rev-parse", "--show-toplevel"]))?;
    if !out.status.success() {
        return Err(GitError::NotARepo(dir.to_path_buf()));
    }
    Ok(PathBuf::from(stdout(out)))
}

/// The commit HEAD points to, or `None` in a repository with no commits yet.
pub fn head(root: &Path) -> Result<Option<String>, GitError> {
    if let Some(sha) = Refs::find(root).and_then(|r| r.head()) {
        return Ok(Some(sha));
    }
    let out = git(root).args(["rev-parse", "--verify", "-q", "HEAD"]).output().map_err(not_run(&[
        "rev-parse",
        "--verify",
        "-q",
        "HEAD",
    ]))?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// The checked-out branch, or `None` on a detached HEAD.
pub fn current_branch(root: &Path) -> Result<Option<String>, GitError> {
    if let Some(branch) = Refs::find(root).and_then(|r| r.branch()) {
        return Ok(branch);
    }
    let out = git(root).args(["symbolic-ref", "-q", "--short", "HEAD"]).output().map_err(not_run(&[
        "symbolic-ref",
        "-q",
        "--short",
        "HEAD",
    ]))?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// The full name of the branch HEAD names (`refs/heads/<branch>`), or `None` when detached.
pub fn head_ref(root: &Path) -> Result<Option<String>, GitError> {
    if let Some(head) = Refs::find(root).and_then(|r| r.head_file()) {
        return Ok(head.ok().map(|b| format!("refs/heads/{b}")));
    }
    let out = git(root).args(["symbolic-ref", "-q", "HEAD"]).output().map_err(not_run(&[
        "symbolic-ref",
        "-q",
        "HEAD",
    ]))?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// Uncommitted changes as `XY path` lines (`git status --porcelain`; `XY old -> new` for a
/// rename; paths as they are, not quoted), ignored files and `.ralph/` (which git is not even
/// asked to read) excluded.
pub fn dirty_entries(root: &Path) -> Result<Vec<String>, GitError> {
    let out = run(root, ["status", "--porcelain", "-z", "--untracked-files=all", "--", ".", EXCLUDE_RALPH])?;
    Ok(parse_status(&out.stdout))
}

/// The ignored paths (a folder as a whole, with a trailing `/`), `.ralph/` aside: a cheaper
/// scan than [`dirty_entries`], which also reads every tracked file's metadata.
pub fn ignored(root: &Path) -> Result<Vec<String>, GitError> {
    let out = run(
        root,
        [
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--directory",
            "--",
            ".",
            EXCLUDE_RALPH,
        ],
    )?;
    Ok(nul_separated(&out.stdout))
}

fn parse_status(bytes: &[u8]) -> Vec<String> {
    let mut dirty = Vec::new();
    let mut fields = bytes.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(f) = fields.next() {
        let f = String::from_utf8_lossy(f);
        let (xy, path) = (f.get(..2).unwrap_or_default(), f.get(3..).unwrap_or_default());
        // A rename or copy is followed by its source, as a field of its own.
        if xy.contains(['R', 'C'])
            && let Some(from) = fields.next()
        {
            dirty.push(format!("{xy} {} -> {path}", String::from_utf8_lossy(from)));
            continue;
        }
        dirty.push(f.into_owned());
    }
    dirty
}

/// Stages every change in the working tree, except `.ralph/`.
pub fn add_all(root: &Path) -> Result<(), GitError> {
    add_all_into(root, None, false).map(drop)
}

/// [`add_all`], and what it changed in the index, from `git add -v`: a path it added (new or
/// modified: `M`) or removed (`D`). `None` when a line does not read as git prints them (a
/// path with a newline): the caller asks `git diff`. Against HEAD only when the index matched
/// HEAD before.
pub fn add_all_listed(root: &Path) -> Result<Option<Vec<Change>>, GitError> {
    Ok(parse_added(&add_all_into(root, None, true)?.stdout))
}

fn parse_added(stdout: &[u8]) -> Option<Vec<Change>> {
    let text = std::str::from_utf8(stdout).ok()?;
    let mut changes = Vec::new();
    for line in text.lines() {
        let (kind, rest) = match line.split_once(' ')? {
            ("add", rest) => ('M', rest),
            ("remove", rest) => ('D', rest),
            _ => return None,
        };
        let path = rest.strip_prefix('\'')?.strip_suffix('\'')?;
        changes.push(Change { kind, path: path.to_string() });
    }
    // git's own order (the index's: by bytes), as `git diff` lists them.
    changes.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    changes.dedup_by(|a, b| a.path == b.path);
    Some(changes)
}

/// Stages one path.
pub fn add_path(root: &Path, path: &Path) -> Result<(), GitError> {
    add_paths(root, &[path])
}

/// Stages these paths (a deleted one included), and nothing else.
pub fn add_paths(root: &Path, paths: &[&Path]) -> Result<(), GitError> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("add"), OsStr::new("-A"), OsStr::new("--")];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    run(root, args).map(drop)
}

/// What identifies the index file's version: a write by anyone changes it (git replaces the
/// file through a rename, so its inode changes along with its times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The stamp of `git_dir`'s index, `None` when it cannot be read (no index yet).
pub fn index_stamp(git_dir: &Path) -> Option<IndexStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(git_dir.join("index")).ok()?;
    Some(IndexStamp {
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
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
    // An agent may have staged or committed `.ralph/` (`git add -f`): its entries go back to
    // what `rev` has (none) first, or the hard reset would delete ralph's own files.
    run(root, ["reset", "-q", rev, "--", RALPH_PATH])?;
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
pub fn commit(root: &Path, message: &str) -> Result<CommitResult, GitError> {
    commit_paths(root, message, &[])
}

/// Commits what is staged and `include` (staged by the commit itself: one git process where
/// `git add` and `git commit` would be two), with hooks and signing as usual.
pub fn commit_including(root: &Path, message: &str, include: &[&Path]) -> Result<CommitResult, GitError> {
    if include.is_empty() {
        return commit_paths(root, message, &[]);
    }
    match commit_args(root, message, &["--include"], include)? {
        // `--include` takes only paths the index knows (checked before any hook runs): a file
        // ralph just made (a first AGENTS.md, a spec the agent had deleted) is added first.
        CommitResult::Refused(text) if text.contains("did not match any file(s) known to git") => {
            add_paths(root, include)?;
            commit_paths(root, message, &[])
        }
        done => Ok(done),
    }
}

/// Commits only `path` (whatever else is staged stays staged), with hooks and signing as usual.
pub fn commit_only(root: &Path, message: &str, path: &Path) -> Result<CommitResult, GitError> {
    commit_paths(root, message, &[path])
}

fn commit_paths(root: &Path, message: &str, paths: &[&Path]) -> Result<CommitResult, GitError> {
    commit_args(root, message, &[], paths)
}

fn commit_args(
    root: &Path,
    message: &str,
    flags: &[&str],
    paths: &[&Path],
) -> Result<CommitResult, GitError> {
    // The message goes in on stdin: no file to create and remove per commit. git runs its
    // hooks with no stdin, so none can read it away.
    // git's automatic maintenance after a commit runs within it, not detached: a detached one
    // would re-parent to ralph (the subreaper) and be ended as an escaped process, so the
    // repository would never be packed over a long night.
    let mut args: Vec<std::ffi::OsString> =
        ["-c", "maintenance.autoDetach=false", "-c", "gc.autoDetach=false", "commit", "-q", "-F", "-"]
            .into_iter()
            .map(Into::into)
            .collect();
    args.extend(flags.iter().map(Into::into));
    if !paths.is_empty() {
        args.push("--".into());
        args.extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
    }
    let out = output_with_input(root, &args, Some(message.as_bytes()))?;
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
        .map_err(not_run(&["rev-parse", "--verify"]))?
        .status
        .success();
    if exists {
        run(root, ["checkout", "-q", branch]).map(drop)
    } else {
        run(root, ["checkout", "-q", "-b", branch]).map(drop)
    }
}

/// The URL of remote `name` (`git remote get-url`, `insteadOf` rewrites applied), `None` when
/// there is no such remote.
pub fn remote_url(root: &Path, name: &str) -> Result<Option<String>, GitError> {
    let out = output(root, &["remote".into(), "get-url".into(), name.into()])?;
    Ok(out.status.success().then(|| stdout(out)).filter(|u| !u.is_empty()))
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
        // Into ralph's folder: never through a link planted there (see `fsx`).
        let bytes = std::fs::read(&index).map_err(|source| GitError::Io {
            what: "read",
            path: index.clone(),
            source,
        })?;
        crate::fsx::write(tmp_index, &bytes).map_err(|source| GitError::Io {
            what: "write",
            path: tmp_index.to_path_buf(),
            source,
        })?;
    }
    let with_index = |args: &[&str]| -> Result<Output, GitError> {
        let out = git(root).env("GIT_INDEX_FILE", tmp_index).args(args).output().map_err(not_run(args))?;
        if out.status.success() {
            Ok(out)
        } else {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            Err(failed(&args, &out))
        }
    };
    let result =
        add_all_into(root, Some(tmp_index), false).and_then(|_| with_index(&["write-tree"])).map(stdout);
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

/// The paths under `.ralph/` that the index or `head` holds and `base` does not: ralph's own
/// folder put into git (`git add -f .ralph`, perhaps committed).
pub fn ralph_dir_added(root: &Path, base: &str, head: &str) -> Result<Vec<String>, GitError> {
    let mut paths =
        nul_separated(&run(root, ["diff", "--cached", "--name-only", "-z", base, "--", RALPH_PATH])?.stdout);
    if head != base {
        for p in
            nul_separated(&run(root, ["diff", "--name-only", "-z", base, head, "--", RALPH_PATH])?.stdout)
        {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    Ok(paths)
}

/// The index entries `git add` skips: marked assume-unchanged (`git ls-files -v` tags them in
/// lower case) or skip-worktree (`S`).
pub fn hidden_entries(root: &Path) -> Result<std::collections::BTreeSet<String>, GitError> {
    let out = run(root, ["ls-files", "-v", "-z"])?;
    Ok(nul_separated(&out.stdout)
        .into_iter()
        .filter_map(|e| {
            let (tag, path) = e.split_at_checked(2)?;
            let tag = tag.chars().next()?;
            (tag.is_ascii_lowercase() || tag == 'S').then(|| path.to_string())
        })
        .collect())
}

/// Clears the assume-unchanged and skip-worktree marks of these entries: `git add` and a
/// reset see their files again.
pub fn unhide(root: &Path, paths: &[&str]) -> Result<(), GitError> {
    // One mark per `update-index` (it applies only the first it is given); paths in chunks,
    // within any command line's limit.
    for flag in ["--no-assume-unchanged", "--no-skip-worktree"] {
        for chunk in paths.chunks(500) {
            let mut args = vec!["update-index", flag, "--"];
            args.extend(chunk.iter().copied());
            run(root, args)?;
        }
    }
    Ok(())
}

/// Puts the index's `.ralph/` entries back to `base`'s (none): the files stay, untracked.
pub fn untrack_ralph_dir(root: &Path, base: &str) -> Result<(), GitError> {
    run(root, ["reset", "-q", base, "--", RALPH_PATH]).map(drop)
}

/// Whether `ancestor` is `commit` or one of its ancestors: `false` when the branch was rewound
/// or rewritten under it (or either is unknown).
pub fn is_ancestor(root: &Path, ancestor: &str, commit: &str) -> Result<bool, GitError> {
    let args: Vec<std::ffi::OsString> =
        ["merge-base", "--is-ancestor", ancestor, commit].into_iter().map(Into::into).collect();
    let out = output(root, &args)?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        // 128: an unknown commit (pruned by the agent's gc): it is not in the history either.
        _ if String::from_utf8_lossy(&out.stderr).contains("Not a valid commit") => Ok(false),
        _ => Err(failed(&args, &out)),
    }
}

/// For each of `paths` added in the history of `rev` by a commit of ralph's, the task named by
/// that commit's `Ralph-Task` trailer: who made the file.
pub fn added_by_task(root: &Path, rev: &str, paths: &[&str]) -> Result<Vec<(String, String)>, GitError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<std::ffi::OsString> = [
        "log",
        "--diff-filter=A",
        "--no-renames",
        "--format=%x01%(trailers:key=Ralph-Task,valueonly=true,separator=%x2C)",
        "--name-only",
        "-z",
        rev,
        "--",
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    args.extend(paths.iter().map(|p| format!(":(literal){p}").into()));
    let out = run(root, &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found: Vec<(String, String)> = Vec::new();
    for commit in text.split('\u{1}').filter(|c| !c.is_empty()) {
        let mut fields = commit.split('\0');
        let task = fields.next().unwrap_or("").trim().to_string();
        for path in fields.map(|f| f.trim_start_matches('\n')).filter(|f| !f.is_empty()) {
            // The log runs newest first: the first adder seen is the one whose file it is now.
            if !found.iter().any(|(p, _)| p == path) {
                found.push((path.to_string(), task.clone()));
            }
        }
    }
    // A file last added by a commit that is not ralph's is nobody's task result.
    found.retain(|(_, task)| !task.is_empty());
    Ok(found)
}

/// One commit's share of a task's work: what [`changes_by_task`] reports of each commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCommit {
    pub sha: String,
    /// The task its `Ralph-Task` trailer names; empty for a commit that is not ralph's.
    pub task: String,
    /// The files it added or modified (not those it deleted), renames split.
    pub files: Vec<String>,
}

/// Every commit from `from` (excluded) to `to`, newest first, with the task it worked on and
/// the files it added or modified. Merge commits list no file (their sides' commits do).
pub fn changes_by_task(root: &Path, from: &str, to: &str) -> Result<Vec<TaskCommit>, GitError> {
    let out = run(
        root,
        [
            "log",
            "--no-renames",
            "--diff-filter=AM",
            "--name-only",
            "-z",
            "--format=%x01%H%x00%(trailers:key=Ralph-Task,valueonly=true,separator=%x2C)",
            &format!("{from}..{to}"),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split('\u{1}')
        .filter(|c| !c.is_empty())
        .filter_map(|commit| {
            let mut fields = commit.split('\0');
            let sha = fields.next()?.trim().to_string();
            let task = fields.next().unwrap_or("").trim().to_string();
            let files = fields
                .map(|f| f.trim_start_matches('\n'))
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect();
            (!sha.is_empty()).then_some(TaskCommit { sha, task, files })
        })
        .collect())
}

/// The file `path` as it is in `rev`, `None` when `rev` has no such file (or `rev` is unknown).
pub fn file_at(root: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let object = format!("{rev}:{path}");
    let args: Vec<std::ffi::OsString> = ["cat-file", "-e", &object].into_iter().map(Into::into).collect();
    if !output(root, &args)?.status.success() {
        return Ok(None);
    }
    Ok(Some(run(root, ["cat-file", "blob", &object])?.stdout))
}

/// Which of `paths` are files in `rev`.
pub fn files_in(root: &Path, rev: &str, paths: &[String]) -> Result<Vec<String>, GitError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<std::ffi::OsString> =
        ["ls-tree", "-r", "--name-only", "-z", rev, "--"].into_iter().map(Into::into).collect();
    args.extend(paths.iter().map(|p| format!(":(literal){p}").into()));
    Ok(nul_separated(&run(root, &args)?.stdout))
}

/// The commits on the first-parent line from `from` (excluded) to `to`, oldest first, each
/// with its committer time (seconds since the epoch).
pub fn first_parent_commits(root: &Path, from: &str, to: &str) -> Result<Vec<(String, i64)>, GitError> {
    let out = run(root, ["log", "--first-parent", "--reverse", "--format=%H %ct", &format!("{from}..{to}")])?;
    Ok(stdout(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, t)| (sha.to_string(), t.parse().unwrap_or(i64::MAX)))
        .collect())
}

/// The commits on the first-parent line from `from` (excluded) to `to` that carry ralph's
/// trailers, newest first: each one's sha, `Ralph-Run` and `Ralph-Iteration`.
pub fn ralph_commits_between(root: &Path, from: &str, to: &str) -> Result<Vec<[String; 3]>, GitError> {
    let out = run(
        root,
        [
            "log",
            "--first-parent",
            "--format=%H%x00%(trailers:key=Ralph-Run,valueonly=true,separator=%x2C)%x00%(trailers:key=Ralph-Iteration,valueonly=true,separator=%x2C)%x01",
            &format!("{from}..{to}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\u{1}')
        .filter_map(|c| {
            let mut f = c.trim_start_matches('\n').split('\0').map(|s| s.trim().to_string());
            let (sha, run, iteration) = (f.next()?, f.next()?, f.next()?);
            (!sha.is_empty() && !run.is_empty()).then_some([sha, run, iteration])
        })
        .collect())
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
            Err(source) => Err(GitError::Io { what: "remove", path: root.join(path), source }),
        }
    }
}

/// A git operation the working tree is in the middle of: a commit now would land inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Rebase,
    Am,
    Merge,
    CherryPick,
    Revert,
    Bisect,
}

impl Operation {
    /// What it is, for "... is in progress".
    pub fn name(self) -> &'static str {
        match self {
            Operation::Rebase => "a rebase",
            Operation::Am => "a `git am`",
            Operation::Merge => "a merge",
            Operation::CherryPick => "a cherry-pick",
            Operation::Revert => "a revert",
            Operation::Bisect => "a bisect",
        }
    }

    /// How to finish or abandon it.
    pub fn way_out(self) -> &'static str {
        match self {
            Operation::Rebase => "finish it (`git rebase --continue`) or abandon it (`git rebase --abort`)",
            Operation::Am => "finish it (`git am --continue`) or abandon it (`git am --abort`)",
            Operation::Merge => "finish it (`git commit`) or abandon it (`git merge --abort`)",
            Operation::CherryPick => {
                "finish it (`git cherry-pick --continue`) or abandon it (`git cherry-pick --abort`)"
            }
            Operation::Revert => "finish it (`git revert --continue`) or abandon it (`git revert --abort`)",
            Operation::Bisect => "end it with `git bisect reset`",
        }
    }
}

/// The operation in progress in the working tree, read from the marker files git leaves in
/// its directory (never through a link).
pub fn operation_in_progress(root: &Path) -> Option<Operation> {
    let dir = git_dir(root)?;
    let there = |name: &str| std::fs::symlink_metadata(dir.join(name)).is_ok();
    if there("rebase-merge") {
        Some(Operation::Rebase)
    } else if there("rebase-apply") {
        Some(if there("rebase-apply/applying") { Operation::Am } else { Operation::Rebase })
    } else if there("MERGE_HEAD") {
        Some(Operation::Merge)
    } else if there("CHERRY_PICK_HEAD") {
        Some(Operation::CherryPick)
    } else if there("REVERT_HEAD") {
        Some(Operation::Revert)
    } else if there("BISECT_LOG") {
        Some(Operation::Bisect)
    } else {
        None
    }
}

/// The repository's git directory.
pub fn git_dir(root: &Path) -> Option<PathBuf> {
    if let Some(r) = Refs::find(root) {
        return Some(r.git_dir);
    }
    let out = run(root, ["rev-parse", "--git-dir"]).ok()?;
    Some(root.join(stdout(out)))
}

/// The folder the repository's worktrees share (refs, hooks, config): the git directory but
/// in a linked worktree.
pub fn common_dir(root: &Path) -> Option<PathBuf> {
    if let Some(r) = Refs::find(root) {
        return Some(r.common_dir);
    }
    let out = run(root, ["rev-parse", "--git-common-dir"]).ok()?;
    Some(root.join(stdout(out)))
}

/// Whether the working tree or HEAD differs from `base` (ignored files and `.ralph/` aside).
pub fn has_changes(root: &Path, base: &str) -> Result<bool, GitError> {
    Ok(head(root)?.as_deref() != Some(base) || !dirty_entries(root)?.is_empty())
}

/// Every branch and tag with the commit it points at.
pub fn refs(root: &Path) -> Result<Vec<(String, String)>, GitError> {
    if let Some(list) = Refs::find(root).and_then(|r| r.list()) {
        return Ok(list);
    }
    let mut args = vec!["for-each-ref", "--format=%(refname) %(objectname)"];
    args.extend(FRAMED_REFS);
    let out = run(root, args)?;
    Ok(stdout(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect())
}

/// The refs the frame keeps: branches, tags, and the replacements (`git replace`), which
/// would make git show other commits in place of the real ones.
pub const FRAMED_REFS: [&str; 3] = ["refs/heads", "refs/tags", "refs/replace"];

/// Points `name` at `sha`, or deletes it.
pub fn update_ref(root: &Path, name: &str, sha: Option<&str>) -> Result<(), GitError> {
    match sha {
        Some(sha) => run(root, ["update-ref", name, sha]).map(drop),
        None => run(root, ["update-ref", "-d", name]).map(drop),
    }
}

/// A checkout of the repository, as `git worktree list --porcelain` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeEntry {
    pub path: PathBuf,
    /// `refs/heads/...`, or none when detached.
    pub branch: Option<String>,
    pub locked: bool,
}

/// Every checkout of the repository (the main one first).
pub fn worktrees(root: &Path) -> Result<Vec<WorktreeEntry>, GitError> {
    let out = run(root, ["worktree", "list", "--porcelain", "-z"])?;
    let mut list = Vec::new();
    let mut cur: Option<WorktreeEntry> = None;
    for field in out.stdout.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(p) = field.strip_prefix("worktree ") {
            list.extend(cur.take());
            cur = Some(WorktreeEntry { path: PathBuf::from(p), branch: None, locked: false });
        } else if let Some(b) = field.strip_prefix("branch ") {
            if let Some(c) = cur.as_mut() {
                c.branch = Some(b.to_string());
            }
        } else if (field == "locked" || field.starts_with("locked "))
            && let Some(c) = cur.as_mut()
        {
            c.locked = true;
        }
    }
    list.extend(cur);
    Ok(list)
}

/// Adds a checkout at `path` on a new (or reset) `branch` at `rev`, locked with `reason` so
/// that `git worktree prune` leaves it alone while it is in use.
pub fn worktree_add(root: &Path, path: &Path, branch: &str, rev: &str, reason: &str) -> Result<(), GitError> {
    let args: Vec<&OsStr> = vec![
        OsStr::new("worktree"),
        OsStr::new("add"),
        OsStr::new("-q"),
        OsStr::new("--lock"),
        OsStr::new("--reason"),
        OsStr::new(reason),
        OsStr::new("-B"),
        OsStr::new(branch),
        path.as_os_str(),
        OsStr::new(rev),
    ];
    run(root, args).map(drop)
}

/// Removes every checkout of the repository under `dir` (ralph's slots or scratch checkouts);
/// the ones it could not remove, with why.
pub fn remove_worktrees_under(root: &Path, dir: &Path) -> Vec<(PathBuf, GitError)> {
    let mut failed = Vec::new();
    for w in worktrees(root).unwrap_or_default() {
        if w.path.starts_with(dir)
            && let Err(e) = worktree_remove(root, &w.path)
        {
            failed.push((w.path, e));
        }
    }
    failed
}

/// Removes the checkout at `path` (locked or not, changes and all), and what git keeps of it.
pub fn worktree_remove(root: &Path, path: &Path) -> Result<(), GitError> {
    let _ = run(root, [OsStr::new("worktree"), OsStr::new("unlock"), path.as_os_str()]);
    let removed = run(
        root,
        [
            OsStr::new("worktree"),
            OsStr::new("remove"),
            OsStr::new("--force"),
            OsStr::new("--force"),
            path.as_os_str(),
        ],
    );
    run(root, ["worktree", "prune"])?;
    removed.map(drop)
}

/// Puts a slot's checkout on `branch` at `rev`, its tree and index matching, untracked files
/// gone; ignored files (build caches) and `.ralph/` stay.
pub fn reset_checkout(slot: &Path, branch: &str, rev: &str) -> Result<(), GitError> {
    // An operation the agent left half done (a rebase, a merge) would hold the checkout.
    for abort in [["rebase", "--abort"], ["merge", "--abort"], ["cherry-pick", "--abort"]] {
        if operation_in_progress(slot).is_some() {
            let _ = run(slot, abort);
        }
    }
    run(slot, ["checkout", "-q", "-f", "-B", branch, rev])?;
    run(slot, ["reset", "-q", "--hard", rev])?;
    run(slot, ["clean", "-fdq", "-e", ".ralph"]).map(drop)
}

/// The commit `rev` names, if it names one.
pub fn rev_parse(root: &Path, rev: &str) -> Result<Option<String>, GitError> {
    let out = output(
        root,
        &["rev-parse".into(), "-q".into(), "--verify".into(), format!("{rev}^{{commit}}").into()],
    )?;
    Ok(out.status.success().then(|| stdout(out)))
}

/// Rebases the checked-out branch of `slot` onto `onto`. `Err` text when it does not apply
/// (the rebase is aborted: the branch and tree are as before).
pub fn rebase(slot: &Path, onto: &str) -> Result<Result<(), String>, GitError> {
    let out = output(slot, &["rebase".into(), "-q".into(), onto.into()])?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = run(slot, ["rebase", "--abort"]);
    Ok(Err(text))
}

/// Amends HEAD's commit with what is staged, its message kept; hooks run.
pub fn amend(root: &Path) -> Result<CommitResult, GitError> {
    let message = stdout(run(root, ["log", "-1", "--format=%B"])?);
    commit_args(root, &format!("{message}\n"), &["--amend"], &[])
}

/// Puts `path` in HEAD back to its content in `rev`, amending: the AGENTS.md a landing
/// rendered, taken out (back to the work's own) before the work is rebased onto a tip whose
/// AGENTS.md moved too (it is rendered again there; rebased, it would conflict).
pub fn put_back_in_head(root: &Path, rev: &str, path: &str) -> Result<CommitResult, GitError> {
    put_back_path(root, rev, path)?;
    add_paths(root, &[Path::new(path)])?;
    amend(root)
}

/// Moves `name` from `old` to `new` only if it still points at `old` (a compare-and-swap);
/// false when it moved meanwhile.
pub fn update_ref_from(root: &Path, name: &str, new: &str, old: &str) -> Result<bool, GitError> {
    let out = output(root, &["update-ref".into(), name.into(), new.into(), old.into()])?;
    Ok(out.status.success())
}

/// Fast-forwards the checked-out branch of `root` to `rev`, tree and index with it, as
/// `git merge --ff-only` does; `Err` text when it cannot (not a fast-forward, or local changes
/// in the way).
pub fn fast_forward(root: &Path, rev: &str) -> Result<Result<(), String>, GitError> {
    let out =
        output(root, &["merge".into(), "-q".into(), "--ff-only".into(), "--no-edit".into(), rev.into()])?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Err(text))
}

/// Branches whose name starts with `prefix` (e.g. `ralph/slot-`), with their commits.
pub fn branches(root: &Path, prefix: &str) -> Result<Vec<(String, String)>, GitError> {
    // for-each-ref matches a pattern whole or up to a slash: the prefix's folder, then filtered.
    let folder = prefix.rsplit_once('/').map_or("", |(d, _)| d);
    let out = run(
        root,
        ["for-each-ref", "--format=%(refname:short) %(objectname)", &format!("refs/heads/{folder}")],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(n, s)| (n.to_string(), s.to_string())))
        .filter(|(n, _)| n.starts_with(prefix))
        .collect())
}

/// The bytes of the files in `rev`'s tree (what a checkout of it writes, about).
pub fn tree_size(root: &Path, rev: &str) -> Result<u64, GitError> {
    let out = run(root, ["ls-tree", "-r", "-l", rev])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum())
}

/// Applies `patch` to `slot`'s working tree with a three-way merge where it does not apply
/// cleanly (conflict markers left in the files), nothing staged. The files it left with
/// conflicts; `Err` text when it could not apply at all.
pub fn apply_3way(slot: &Path, patch: &Path) -> Result<Result<Vec<String>, String>, GitError> {
    let out = output(
        slot,
        &["apply".into(), "--3way".into(), "--whitespace=nowarn".into(), patch.as_os_str().to_os_string()],
    )?;
    let conflicted = nul_separated(&run(slot, ["diff", "--name-only", "-z", "--diff-filter=U"])?.stdout);
    let changed = !dirty_entries(slot)?.is_empty();
    run(slot, ["reset", "-q"])?;
    if !out.status.success() && !changed {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Ok(Err(text));
    }
    Ok(Ok(conflicted))
}

/// Commits everything in a scratch checkout (`.ralph/` aside) without hooks or signing: ralph's
/// own setup commit of an evaluation case, on a branch it deletes afterwards, never the user's.
pub fn commit_scratch(root: &Path, message: &str) -> Result<(), GitError> {
    run(root, ["add", "-A", "--", ".", EXCLUDE_RALPH])?;
    run(root, ["-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "--allow-empty", "-m", message])
        .map(drop)
}

/// Puts `files` back as they are at `commit` (index and working tree).
pub fn checkout_files(root: &Path, commit: &str, files: &[String]) -> Result<(), GitError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut args: Vec<&str> = vec!["checkout", commit, "--"];
    args.extend(files.iter().map(String::as_str));
    run(root, args).map(drop)
}

/// The unified diff of two files outside any repository (`git diff --no-index`), empty when
/// they are the same or cannot be read.
pub fn diff_files(root: &Path, a: &Path, b: &Path) -> String {
    let args: Vec<std::ffi::OsString> = vec![
        "diff".into(),
        "--no-index".into(),
        "--no-color".into(),
        a.as_os_str().into(),
        b.as_os_str().into(),
    ];
    output(root, &args).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// Fetches `refspecs` from `remote`, pruning what it no longer has under their destinations.
pub fn fetch(root: &Path, remote: &str, refspecs: &[String]) -> Result<(), GitError> {
    let mut args: Vec<&str> = vec!["fetch", "-q", "--prune", "--no-tags", remote];
    args.extend(refspecs.iter().map(String::as_str));
    run(root, args).map(drop)
}

/// A commit of `rev`'s tree with `message` and optionally `parent`, made without touching the
/// index, the tree or any ref (a claim's commit).
pub fn commit_tree(root: &Path, rev: &str, parent: Option<&str>, message: &str) -> Result<String, GitError> {
    let tree = format!("{rev}^{{tree}}");
    let mut args: Vec<std::ffi::OsString> = vec!["commit-tree".into(), tree.into()];
    if let Some(p) = parent {
        args.push("-p".into());
        args.push(p.into());
    }
    let out = output_with_input(root, &args, Some(message.as_bytes()))?;
    if !out.status.success() {
        return Err(failed(&args, &out));
    }
    Ok(stdout(out))
}

/// A commit whose tree holds one file, `name` with `bytes`, on `parent` if any: made without
/// touching the index, the worktree or any ref (the remote workers' learnings store).
pub fn commit_file(
    root: &Path,
    name: &str,
    bytes: &[u8],
    parent: Option<&str>,
    message: &str,
) -> Result<String, GitError> {
    let plumb = |args: Vec<std::ffi::OsString>, input: &[u8]| -> Result<String, GitError> {
        let out = output_with_input(root, &args, Some(input))?;
        if !out.status.success() {
            return Err(failed(&args, &out));
        }
        Ok(stdout(out))
    };
    let blob = plumb(vec!["hash-object".into(), "-w".into(), "--stdin".into()], bytes)?;
    let tree = plumb(vec!["mktree".into()], format!("100644 blob {blob}\t{name}\n").as_bytes())?;
    let mut args: Vec<std::ffi::OsString> = vec!["commit-tree".into(), tree.into()];
    if let Some(p) = parent {
        args.push("-p".into());
        args.push(p.into());
    }
    plumb(args, message.as_bytes())
}

/// `git push` to `remote` with `args` (refspecs and `--force-with-lease=` leases); `Err` text
/// when the remote refused (a lease that did not hold, a rejected update).
pub fn push(root: &Path, remote: &str, args: &[String]) -> Result<Result<(), String>, GitError> {
    let mut all: Vec<std::ffi::OsString> =
        vec!["push".into(), "-q".into(), "--porcelain".into(), remote.into()];
    all.extend(args.iter().map(Into::into));
    let out = output(root, &all)?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Err(text))
}

/// The refs under `folder` (e.g. `refs/ralph/remote-claims/`), by the rest of their name.
pub fn refs_under(root: &Path, folder: &str) -> Result<Vec<(String, String)>, GitError> {
    let out = run(root, ["for-each-ref", "--format=%(refname) %(objectname)", folder.trim_end_matches('/')])?;
    Ok(stdout(out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(r, s)| Some((r.strip_prefix(folder)?.to_string(), s.to_string())))
        .collect())
}

/// A commit's message.
pub fn commit_message(root: &Path, commit: &str) -> Result<String, GitError> {
    Ok(stdout(run(root, ["log", "-1", "--format=%B", commit])?))
}

/// Amends HEAD's message (hooks run, as for any commit).
pub fn amend_message(root: &Path, message: &str) -> Result<CommitResult, GitError> {
    commit_args(root, message, &["--amend"], &[])
}

/// A commit's subject and its `Ralph-*` trailers (key, value).
pub type Trailed = (String, Vec<(String, String)>);

/// Every commit of `rev`'s history with its subject and its `Ralph-*` trailers.
pub fn ralph_trailers(root: &Path, rev: &str) -> Result<Vec<Trailed>, GitError> {
    let out = run(root, ["log", "--format=%s%x1f%(trailers:only,unfold)%x00", rev])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|c| {
            let (subject, trailers) = c.trim_start_matches('\n').split_once('\x1f')?;
            let pairs = trailers
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(k, _)| k.starts_with("Ralph-"))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
            Some((subject.to_string(), pairs))
        })
        .collect())
}

/// The messages of `commit` and its ancestors, newest first.
pub fn messages(root: &Path, commit: &str) -> Result<Vec<String>, GitError> {
    let out = run(root, ["log", "--format=%B%x00", commit])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect())
}

/// The binary-safe patch from `from` to `to`.
pub fn diff_between(root: &Path, from: &str, to: &str) -> Result<Vec<u8>, GitError> {
    Ok(run(root, ["diff", "--binary", from, to])?.stdout)
}

/// The paths of a `-z` listing.
fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The staged changes against `base`, as the gates judge them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Staged {
    /// Kind (A, M, D, T; renames split into D and A) and path of each changed file.
    pub changes: Vec<Change>,
    /// The lines the changes add, with their file (from the first few MiB of the patch).
    pub added: Vec<(String, String)>,
}

/// The staged changes against `base`, in one `git diff`: the raw list (exact paths, NUL
/// separated) followed by the `-U0` patch (the added lines).
pub fn staged(root: &Path, base: &str) -> Result<Staged, GitError> {
    const ARGS: [&str; 8] =
        ["diff", "--cached", "--no-renames", "--no-color", "--no-ext-diff", "-U0", "--raw", "-p"];
    let out = run(root, ARGS.into_iter().chain(["-z", base]))?;
    let (mut staged, binary) = parse_staged(&out.stdout);
    // A file git shows as binary shows no added lines: an attribute (`*.py -diff` in
    // .gitattributes) or a NUL byte would hide a skip marker from the gates. The small ones
    // (sources, not assets) are diffed again as text.
    const MAX_TEXT: u64 = 1024 * 1024;
    let mut budget = 4 * MAX_TEXT;
    let small: Vec<String> = binary
        .into_iter()
        .filter(|p| {
            let len = std::fs::symlink_metadata(root.join(p)).ok().filter(|m| m.is_file()).map(|m| m.len());
            let fits = len.is_some_and(|l| l <= MAX_TEXT && l <= budget);
            budget -= if fits { len.unwrap_or(0) } else { 0 };
            fits
        })
        .map(|p| format!(":(literal){p}"))
        .collect();
    if !small.is_empty() {
        let args = ARGS.into_iter().chain(["--text", "-z", base, "--"]).map(str::to_string).chain(small);
        let (text, _) = parse_staged(&run(root, args)?.stdout);
        staged.added.extend(text.added);
    }
    Ok(staged)
}

/// The changes and added lines of a `git diff --raw -p -z`, and the files it showed as binary.
fn parse_staged(bytes: &[u8]) -> (Staged, Vec<String>) {
    const MAX_DIFF: usize = 4 * 1024 * 1024;
    let mut staged = Staged::default();
    // The raw part: ":<modes> <ids> <kind>\0<path>\0" per file, then one more NUL.
    let mut rest = bytes;
    while rest.first() == Some(&b':') {
        let mut fields = rest.splitn(3, |&b| b == 0);
        let (Some(meta), Some(path)) = (fields.next(), fields.next()) else { break };
        let kind = meta.last().map_or('M', |&b| char::from(b));
        staged.changes.push(Change { kind, path: String::from_utf8_lossy(path).into_owned() });
        rest = fields.next().unwrap_or_default();
    }
    let patch = rest.strip_prefix(b"\0").unwrap_or(rest);
    let text = String::from_utf8_lossy(&patch[..patch.len().min(MAX_DIFF)]);
    // The patch has one `diff --git` section per file of the raw part, in the same order: the
    // path comes from there, exact, instead of from the quoted `+++ b/...` line.
    let (mut section, mut in_hunk) = (None::<usize>, false);
    let mut binary = Vec::new();
    for l in text.lines() {
        if l.starts_with("diff --git ") {
            section = Some(section.map_or(0, |s| s + 1));
            in_hunk = false;
        } else if !in_hunk
            && l.starts_with("Binary files ")
            && let Some(c) = section.and_then(|s| staged.changes.get(s))
            && c.kind != 'D'
        {
            binary.push(c.path.clone());
        } else if l.starts_with("@@ ") {
            in_hunk = true;
        } else if in_hunk
            && let Some(added) = l.strip_prefix('+')
            && let Some(c) = section.and_then(|s| staged.changes.get(s))
        {
            staged.added.push((c.path.clone(), added.to_string()));
        }
    }
    (staged, binary)
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

/// HEAD and the branch it names, read from the files git keeps them in rather than by starting
/// git: ralph asks several times per iteration, and each `git` process costs a millisecond or
/// more. Only the plain layout is read (the `files` ref backend, HEAD naming a branch whose
/// loose ref file holds the commit); anything else (a packed or missing ref, a symbolic ref,
/// reftable, `GIT_DIR` in the environment) answers `None` and the caller asks git, so the
/// answer is always git's.
struct Refs {
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl Refs {
    fn find(root: &Path) -> Option<Refs> {
        if std::env::var_os("GIT_DIR").is_some() || std::env::var_os("GIT_COMMON_DIR").is_some() {
            return None;
        }
        // Found once per root: a repository's layout does not change under a running ralph,
        // and HEAD is read several times an iteration.
        static FOUND: std::sync::LazyLock<
            std::sync::Mutex<std::collections::HashMap<PathBuf, (PathBuf, PathBuf)>>,
        > = std::sync::LazyLock::new(Default::default);
        let mut found = FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((git_dir, common_dir)) = found.get(root) {
            return Some(Refs { git_dir: git_dir.clone(), common_dir: common_dir.clone() });
        }
        let refs = Self::look(root)?;
        found.insert(root.to_path_buf(), (refs.git_dir.clone(), refs.common_dir.clone()));
        Some(refs)
    }

    fn look(root: &Path) -> Option<Refs> {
        let dot = root.join(".git");
        let meta = std::fs::metadata(&dot).ok()?;
        let git_dir = if meta.is_dir() {
            dot
        } else {
            // A linked worktree or a submodule: `.git` is a file naming the git directory.
            let text = std::fs::read_to_string(&dot).ok()?;
            root.join(text.strip_prefix("gitdir: ")?.trim_end())
        };
        let common_dir = match std::fs::read_to_string(git_dir.join("commondir")) {
            Ok(c) => git_dir.join(c.trim_end()),
            Err(_) => git_dir.clone(),
        };
        if common_dir.join("reftable").exists() || !common_dir.join("refs/heads").is_dir() {
            return None;
        }
        Some(Refs { git_dir, common_dir })
    }

    /// What HEAD holds: `Ok(branch)` for `ref: refs/heads/<branch>`, `Err(sha)` when detached.
    fn head_file(&self) -> Option<Result<String, String>> {
        let text = std::fs::read_to_string(self.git_dir.join("HEAD")).ok()?;
        let text = text.trim_end();
        match text.strip_prefix("ref: ") {
            Some(r) => r.strip_prefix("refs/heads/").filter(|b| !b.is_empty()).map(|b| Ok(b.to_string())),
            None => object_id(text).map(Err),
        }
    }

    fn head(&self) -> Option<String> {
        match self.head_file()? {
            Ok(branch) => {
                let text = std::fs::read_to_string(self.common_dir.join("refs/heads").join(branch)).ok()?;
                object_id(text.trim_end())
            }
            Err(sha) => Some(sha),
        }
    }

    /// The branch as `git symbolic-ref --short HEAD` names it, `Some(None)` when detached.
    fn branch(&self) -> Option<Option<String>> {
        match self.head_file()? {
            // git shortens to `heads/<name>` when `<name>` alone could mean something else.
            Ok(b) if self.ambiguous(&b) => None,
            Ok(b) => Some(Some(b)),
            Err(_) => Some(None),
        }
    }

    /// Every branch, tag and replacement, as `git for-each-ref` lists [`FRAMED_REFS`] (sorted by
    /// name, annotated tags as their tag object): packed-refs, overridden by the loose files.
    fn list(&self) -> Option<Vec<(String, String)>> {
        let mut refs = std::collections::BTreeMap::new();
        match std::fs::read_to_string(self.common_dir.join("packed-refs")) {
            Ok(text) => {
                // "# pack-refs with: ..." heads the file; "^<sha>" peels the tag above it.
                for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('^')) {
                    let (sha, name) = line.split_once(' ')?;
                    if FRAMED_REFS
                        .iter()
                        .any(|top| name.strip_prefix(top).is_some_and(|n| n.starts_with('/')))
                    {
                        refs.insert(name.to_string(), object_id(sha)?);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        for top in FRAMED_REFS {
            loose_refs(&self.common_dir.join(top), top, &mut refs)?;
        }
        Some(refs.into_iter().collect())
    }

    /// Whether a ref named `<name>`, `refs/<name>` or `refs/tags/<name>` exists, or may.
    fn ambiguous(&self, name: &str) -> bool {
        let packed = std::fs::read_to_string(self.common_dir.join("packed-refs")).unwrap_or_default();
        self.git_dir.join(name).exists()
            || self.common_dir.join(name).exists()
            || self.common_dir.join("refs").join(name).exists()
            || self.common_dir.join("refs/tags").join(name).exists()
            || packed.contains(&format!(" refs/tags/{name}\n"))
            || packed.contains(&format!(" refs/{name}\n"))
    }
}

/// Adds the loose ref files under `dir` (named `prefix/...`) to `refs`; `None` on anything
/// but plain files holding an object id (a symbolic ref, a symlink), which git must resolve.
fn loose_refs(dir: &Path, prefix: &str, refs: &mut std::collections::BTreeMap<String, String>) -> Option<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(()),
        Err(_) => return None,
    };
    for entry in entries {
        let entry = entry.ok()?;
        let name = format!("{prefix}/{}", entry.file_name().into_string().ok()?);
        let kind = entry.file_type().ok()?;
        if kind.is_dir() {
            loose_refs(&entry.path(), &name, refs)?;
        } else if !kind.is_file() {
            return None;
        } else if !name.ends_with(".lock") {
            // `.lock` files are updates in progress, never refs (git skips them too).
            let text = std::fs::read_to_string(entry.path()).ok()?;
            refs.insert(name, object_id(text.trim_end())?);
        }
    }
    Some(())
}

/// `s` if it is a full object id (SHA-1 or SHA-256, lowercase hex).
fn object_id(s: &str) -> Option<String> {
    let hex = s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ((s.len() == 40 || s.len() == 64) && hex).then(|| s.to_string())
}

/// For unit tests elsewhere: runs git in `dir` with no user or system configuration, and
/// asserts it succeeded.
#[cfg(test)]
pub(crate) fn test_git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_git_is_told_from_a_failure_to_run_it() {
        let missing = not_run(&["status"])(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(matches!(missing, GitError::Missing(_)));
        assert!(missing.to_string().contains("is git installed?"));
        let busy = not_run(&["add", "-A"])(std::io::Error::from_raw_os_error(11));
        assert!(matches!(&busy, GitError::Run { command, .. } if command == "add -A"), "{busy:?}");
        assert!(!busy.to_string().contains("installed"), "{busy}");
    }

    #[test]
    fn a_file_ralph_cannot_write_is_named_not_blamed_on_git() {
        let dir = staged_repo();
        let root = dir.path();
        // The snapshot's temporary index where no file can be made: its folder is missing.
        let tmp = root.join("no-such-folder").join("snapshot-index");
        let e = snapshot(root, &tmp).unwrap_err();
        assert!(matches!(&e, GitError::Io { what: "write", path, .. } if *path == tmp), "{e:?}");
        assert!(e.to_string().contains("no-such-folder"), "{e}");
        assert!(!e.to_string().contains("installed"), "{e}");
    }

    fn change(kind: char, path: &str) -> Change {
        Change { kind, path: path.to_string() }
    }

    /// A repository with a committed file of each kind the parsers must tell apart, then
    /// changes staged: a modification, a deletion, a new file whose name needs quoting in a
    /// patch, a binary file and a rename.
    fn staged_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sh(root, &["init", "-q"]);
        std::fs::write(root.join("f.txt"), "a\nb\n").unwrap();
        std::fs::write(root.join("del.rs"), "q\n").unwrap();
        std::fs::write(root.join("old.txt"), "moved\n").unwrap();
        sh(root, &["add", "-A"]);
        sh(root, &["commit", "-qm", "i"]);
        std::fs::write(root.join("f.txt"), "a\nB\n+++ not a header\n#[ignore]\n").unwrap();
        std::fs::remove_file(root.join("del.rs")).unwrap();
        std::fs::write(root.join("n\"ew tab\t.txt"), "new\n").unwrap();
        std::fs::write(root.join("bin.dat"), b"\0bin").unwrap();
        std::fs::rename(root.join("old.txt"), root.join("new.txt")).unwrap();
        dir
    }

    #[test]
    fn one_diff_gives_the_exact_paths_and_the_added_lines() {
        let dir = staged_repo();
        let root = dir.path();
        sh(root, &["add", "-A"]);
        let head = sh(root, &["rev-parse", "HEAD"]);
        let staged = staged(root, &head).unwrap();
        assert_eq!(
            staged.changes,
            vec![
                change('A', "bin.dat"),
                change('D', "del.rs"),
                change('M', "f.txt"),
                change('A', "n\"ew tab\t.txt"),
                change('A', "new.txt"),
                change('D', "old.txt"),
            ]
        );
        let added: Vec<(&str, &str)> = staged.added.iter().map(|(p, l)| (p.as_str(), l.as_str())).collect();
        assert_eq!(
            added,
            vec![
                ("f.txt", "B"),
                ("f.txt", "+++ not a header"),
                ("f.txt", "#[ignore]"),
                ("n\"ew tab\t.txt", "new"),
                ("new.txt", "moved"),
                // A small file git shows as binary is diffed again as text.
                ("bin.dat", "\0bin"),
            ]
        );
    }

    #[test]
    fn add_v_lists_what_changed_against_an_index_that_held_head() {
        let dir = staged_repo();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), ".ralph\n").unwrap();
        std::fs::create_dir_all(root.join(".ralph")).unwrap();
        std::fs::write(root.join(".ralph/x"), "x").unwrap();
        let listed = add_all_listed(root).unwrap().unwrap();
        let head = sh(root, &["rev-parse", "HEAD"]);
        let from_diff: Vec<String> =
            staged(root, &head).unwrap().changes.into_iter().map(|c| c.path).collect();
        let paths: Vec<String> = listed.iter().map(|c| c.path.clone()).collect();
        assert_eq!(paths, from_diff, "the same files, in the same order");
        let deleted: Vec<&str> = listed.iter().filter(|c| c.kind == 'D').map(|c| c.path.as_str()).collect();
        assert_eq!(deleted, vec!["del.rs", "old.txt"]);
        // Touched but not changed: not listed.
        sh(root, &["commit", "-qm", "all"]);
        std::fs::write(root.join("f.txt"), std::fs::read(root.join("f.txt")).unwrap()).unwrap();
        assert_eq!(add_all_listed(root).unwrap(), Some(vec![]));
        assert_eq!(parse_added(b"add 'a'\nweird line\n"), None);
    }

    #[test]
    fn status_lists_changes_renames_and_ignored_folders_unquoted() {
        let dir = staged_repo();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        std::fs::write(root.join("target/debug/x"), "x").unwrap();
        std::fs::create_dir_all(root.join(".ralph/runs")).unwrap();
        std::fs::write(root.join(".ralph/runs/r"), "x").unwrap();
        sh(root, &["add", "new.txt", "old.txt"]);
        assert_eq!(ignored(root).unwrap(), vec!["target/"]);
        let dirty = dirty_entries(root).unwrap();
        assert!(dirty.contains(&"R  old.txt -> new.txt".to_string()), "{dirty:?}");
        assert!(dirty.contains(&"?? n\"ew tab\t.txt".to_string()), "{dirty:?}");
        assert!(dirty.contains(&" D del.rs".to_string()), "{dirty:?}");
        assert!(!dirty.iter().any(|l| l.contains(".ralph")), "{dirty:?}");
    }

    fn sh(root: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// HEAD, the branch and the refs as git itself answers, next to ralph's reads.
    fn assert_agrees_with_git(root: &Path) {
        let git_head = git(root).args(["rev-parse", "--verify", "-q", "HEAD"]).output().unwrap();
        let git_head = git_head.status.success().then(|| stdout(git_head));
        let git_branch = git(root).args(["symbolic-ref", "-q", "--short", "HEAD"]).output().unwrap();
        let git_branch = git_branch.status.success().then(|| stdout(git_branch));
        let git_refs =
            run(root, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"])
                .map(stdout)
                .unwrap();
        let listed: Vec<String> = refs(root).unwrap().into_iter().map(|(r, s)| format!("{r} {s}")).collect();
        assert_eq!(head(root).unwrap(), git_head, "HEAD in {}", root.display());
        assert_eq!(current_branch(root).unwrap(), git_branch, "branch in {}", root.display());
        assert_eq!(listed.join("\n"), git_refs, "refs in {}", root.display());
    }

    #[test]
    fn heads_branches_and_refs_read_from_files_agree_with_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        sh(&root, &["init", "-q", "-b", "main"]);
        std::fs::write(root.join("a.txt"), "a").unwrap();
        sh(&root, &["add", "-A"]);
        sh(&root, &["commit", "-qm", "one"]);
        sh(&root, &["branch", "feature/deep/x"]);
        sh(&root, &["tag", "light"]);
        sh(&root, &["tag", "-a", "-m", "annotated", "v1"]);
        // Loose refs: read without git.
        assert!(Refs::find(&root).and_then(|r| r.head()).is_some());
        assert!(Refs::find(&root).and_then(|r| r.list()).is_some());
        assert_agrees_with_git(&root);

        // Packed refs, then a loose ref newer than its packed line.
        sh(&root, &["pack-refs", "--all"]);
        assert_agrees_with_git(&root);
        std::fs::write(root.join("a.txt"), "b").unwrap();
        sh(&root, &["commit", "-qam", "two"]);
        assert_agrees_with_git(&root);

        // A worktree: HEAD in its own git folder, branches in the common one.
        let wt = dir.path().join("wt");
        sh(&root, &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()]);
        assert!(Refs::find(&wt).and_then(|r| r.head()).is_some());
        assert_agrees_with_git(&wt);

        // A tag named like the branch: git names the branch `heads/main`.
        sh(&root, &["tag", "main"]);
        assert_agrees_with_git(&root);
        sh(&root, &["tag", "-d", "main"]);

        // Detached, then a branch with no commit yet.
        let sha = sh(&root, &["rev-parse", "HEAD"]);
        sh(&root, &["checkout", "-q", &sha]);
        assert_agrees_with_git(&root);
        sh(&root, &["checkout", "-q", "--orphan", "empty"]);
        assert_agrees_with_git(&root);

        // A symbolic ref among the branches: git resolves it.
        sh(&root, &["symbolic-ref", "refs/heads/alias", "refs/heads/main"]);
        assert!(Refs::find(&root).and_then(|r| r.list()).is_none());
        assert_agrees_with_git(&root);
    }

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
