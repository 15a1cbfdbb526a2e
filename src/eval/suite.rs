//! Folder suites (`ralph eval --suite DIR`): the cases a user writes by hand.
//!
//! A suite folder holds one folder per case, taken in name order; the folder's name is the
//! case's id (letters, digits, `-`, `_` and `.`, as a spec's `id`: it may name a branch or a
//! folder), and folders whose name starts with `.` are skipped, as are files at the top (a
//! README beside the cases); a symbolic link there is an error, never followed. A case folder
//! holds:
//!
//! - `spec.md` (required): the task as the agent is given it; it must parse as a spec does in
//!   `specs/` (front matter allowed).
//! - `check` (required): an executable regular file, run at the scratch checkout's root after
//!   the agent; exit 0 passes. The agent never sees it.
//! - `start` (optional): a text file whose first non-empty line is a git revision, the commit
//!   the case starts from; without it, the repository's HEAD at load time.
//! - `setup` (optional): an executable regular file, run at the scratch checkout's root before
//!   the agent.
//!
//! Invariants: the whole suite is validated before any case is returned (one bad case fails
//! the load, naming its file and, where it applies, the line); every start is a full sha of a
//! commit that exists; the check and setup paths are absolute, and neither is a symbolic link
//! (read through `fsx`, which follows none). Loading changes nothing on disk.

use super::{Case, Check};
use crate::error::{CliError, chain};
use crate::fsx::{self, Kind};
use crate::git::{self, GitError};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The files of a case folder.
const SPEC: &str = "spec.md";
const CHECK: &str = "check";
const START: &str = "start";
const SETUP: &str = "setup";

/// Why a suite could not be loaded. Paths are shown as the user gave the suite's folder.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("the suite folder {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("the suite {} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the suite {} holds no case (a case is a folder with a spec.md and an executable check)", path.display())]
    Empty { path: PathBuf },
    #[error("{} has no {file} (every case needs a spec.md and an executable check)", path.display())]
    MissingFile { path: PathBuf, file: &'static str },
    #[error("{}: a case's folder name may hold only letters, digits, `-`, `_` and `.`", path.display())]
    BadName { path: PathBuf },
    #[error("{}:{line}: {message}", path.display())]
    Spec { path: PathBuf, line: usize, message: String },
    #[error("{} is a symbolic link, which ralph does not follow", path.display())]
    Link { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is not executable (run `chmod +x {}`)", path.display(), path.display())]
    NotExecutable { path: PathBuf },
    #[error("{} names no revision (its first non-empty line is the commit the case starts from)", path.display())]
    NoRevision { path: PathBuf },
    #[error("{}:{line}: `{rev}` names no commit of this repository", path.display())]
    UnknownRevision { path: PathBuf, line: usize, rev: String },
    #[error("{}: the repository has no commit yet, so the case needs a start file", path.display())]
    NoHead { path: PathBuf },
    #[error(transparent)]
    Git(#[from] GitError),
}

// Here rather than in `error.rs`, which sits below `eval` in the layering and names no module
// above it.
impl From<SuiteError> for CliError {
    fn from(e: SuiteError) -> Self {
        match e {
            // git failing to answer is ralph's failure, not bad input.
            SuiteError::Git(e) => e.into(),
            e => CliError::usage(chain(&e)),
        }
    }
}

/// Loads the suite in `dir` (relative to `root` unless absolute) for the repository at `root`:
/// its cases in folder-name order.
pub fn load(root: &Path, dir: &Path) -> Result<Vec<Case>, SuiteError> {
    let full = root.join(dir);
    match std::fs::metadata(&full) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SuiteError::Missing { path: dir.to_path_buf() });
        }
        Err(source) => return Err(SuiteError::Read { path: dir.to_path_buf(), source }),
        Ok(m) if !m.is_dir() => return Err(SuiteError::NotAFolder { path: dir.to_path_buf() }),
        Ok(_) => {}
    }
    // Absolute and without `..`, so the scripts can be run from any checkout.
    let full = full.canonicalize().map_err(|source| SuiteError::Read { path: dir.to_path_buf(), source })?;
    let entries =
        std::fs::read_dir(&full).map_err(|source| SuiteError::Read { path: dir.to_path_buf(), source })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SuiteError::Read { path: dir.to_path_buf(), source })?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let shown = dir.join(&name);
        let kind = entry.file_type().map_err(|source| SuiteError::Read { path: shown.clone(), source })?;
        if kind.is_symlink() {
            return Err(SuiteError::Link { path: shown });
        }
        if !kind.is_dir() {
            continue;
        }
        match name.into_string() {
            Ok(name) if name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
                names.push(name)
            }
            _ => return Err(SuiteError::BadName { path: shown }),
        }
    }
    if names.is_empty() {
        return Err(SuiteError::Empty { path: dir.to_path_buf() });
    }
    names.sort();
    let mut head = None;
    names.into_iter().map(|name| case(root, &full, dir, name, &mut head)).collect()
}

/// One case folder. `head` is the repository's HEAD, looked up once when a case needs it.
fn case(
    root: &Path,
    suite: &Path,
    shown_suite: &Path,
    name: String,
    head: &mut Option<String>,
) -> Result<Case, SuiteError> {
    let shown = shown_suite.join(&name);
    let full = suite.join(&name);
    let folder =
        fsx::open_dir(&full, false).map_err(|source| SuiteError::Read { path: shown.clone(), source })?;
    let kind = |file: &str| {
        folder.kind(OsStr::new(file)).map_err(|source| SuiteError::Read { path: shown.join(file), source })
    };

    let spec_path = shown.join(SPEC);
    if kind(SPEC)?.is_none() {
        return Err(SuiteError::MissingFile { path: shown, file: SPEC });
    }
    let spec = folder
        .read_input(OsStr::new(SPEC))
        .map_err(|source| SuiteError::Read { path: spec_path.clone(), source })?;
    crate::backlog::spec::parse(&name, &spec_path, &spec).map_err(|e| SuiteError::Spec {
        path: spec_path.clone(),
        line: e.line,
        message: e.message,
    })?;

    let check = executable(&folder, &shown, &full, CHECK)?;
    let setup = match kind(SETUP)? {
        None => None,
        Some(_) => Some(executable(&folder, &shown, &full, SETUP)?),
    };

    let start = match kind(START)? {
        None => match head {
            Some(h) => h.clone(),
            None => {
                let h = git::head(root)?.ok_or_else(|| SuiteError::NoHead { path: shown.clone() })?;
                head.insert(h).clone()
            }
        },
        Some(_) => {
            let path = shown.join(START);
            let text = folder
                .read_input(OsStr::new(START))
                .map_err(|source| SuiteError::Read { path: path.clone(), source })?;
            let Some((line, rev)) =
                text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).find(|(_, l)| !l.is_empty())
            else {
                return Err(SuiteError::NoRevision { path });
            };
            // A revision that starts with `-` would reach git as an option.
            let sha = if rev.starts_with('-') { None } else { git::rev_parse(root, rev)? };
            sha.ok_or_else(|| SuiteError::UnknownRevision { path, line, rev: rev.to_string() })?
        }
    };

    Ok(Case { id: name, start, spec, check: Check::Script(check), setup })
}

/// The absolute path of `file` in a case folder, once it is known to be an executable regular
/// file (never a link: the run would follow it wherever it points).
fn executable(
    folder: &fsx::Dir,
    shown: &Path,
    full: &Path,
    file: &'static str,
) -> Result<PathBuf, SuiteError> {
    let path = shown.join(file);
    match folder.kind(OsStr::new(file)).map_err(|source| SuiteError::Read { path: path.clone(), source })? {
        Some(Kind::File) => {}
        Some(Kind::Link) => return Err(SuiteError::Link { path }),
        None => return Err(SuiteError::MissingFile { path: shown.to_path_buf(), file }),
        Some(_) => return Err(SuiteError::NotAFile { path }),
    }
    match folder.mode_of(OsStr::new(file)) {
        Some(mode) if mode & 0o111 != 0 => Ok(full.join(file)),
        _ => Err(SuiteError::NotExecutable { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A repository with two commits (the first tagged `first`) and an empty `evals/` folder.
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let git = |args: &[&str]| git::test_git(&root, args);
        git(&["init", "-q"]);
        git(&["config", "user.name", "t"]);
        git(&["config", "user.email", "t@example.invalid"]);
        git(&["config", "commit.gpgsign", "false"]);
        std::fs::write(root.join("a.txt"), "1\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", "one"]);
        git(&["tag", "first"]);
        std::fs::write(root.join("a.txt"), "2\n").unwrap();
        git(&["commit", "-qam", "two"]);
        std::fs::create_dir(root.join("evals")).unwrap();
        (dir, root)
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A case folder with a spec and an executable check.
    fn good_case(root: &Path, name: &str) {
        let case = root.join("evals").join(name);
        write(&case.join("spec.md"), &format!("---\nchecks: [./t]\n---\n# Do {name}\n"), 0o644);
        write(&case.join("check"), "#!/bin/sh\nexit 0\n", 0o755);
    }

    fn load_err(root: &Path) -> String {
        let e = load(root, Path::new("evals")).unwrap_err();
        let cli: CliError = e.into();
        assert_eq!(cli.code, crate::exit_code::USAGE, "{}", cli.message);
        cli.message
    }

    #[test]
    fn a_suite_is_its_case_folders_in_name_order() {
        let (_dir, root) = repo();
        good_case(&root, "b-second");
        good_case(&root, "a-first");
        // Skipped: a dot-folder (even a broken one) and a file beside the cases.
        std::fs::create_dir_all(root.join("evals/.cache")).unwrap();
        write(&root.join("evals/README.md"), "how to add a case\n", 0o644);
        write(&root.join("evals/b-second/start"), "\n\n  first  \nHEAD\n", 0o644);
        write(&root.join("evals/b-second/setup"), "#!/bin/sh\n", 0o700);

        let cases = load(&root, Path::new("evals")).unwrap();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a-first", "b-second"]);

        let head = git::head(&root).unwrap().unwrap();
        let first = git::rev_parse(&root, "first").unwrap().unwrap();
        assert_ne!(head, first);
        // No start file: HEAD; a start file: its first non-empty line, as a full sha.
        assert_eq!(cases[0].start, head);
        assert_eq!(cases[1].start, first);
        assert_eq!(cases[0].spec, "---\nchecks: [./t]\n---\n# Do a-first\n");
        let suite = root.canonicalize().unwrap().join("evals");
        assert_eq!(cases[0].check, Check::Script(suite.join("a-first/check")));
        assert!(matches!(&cases[0].check, Check::Script(p) if p.is_absolute()));
        assert_eq!(cases[0].setup, None);
        assert_eq!(cases[1].setup, Some(suite.join("b-second/setup")));

        // An absolute folder loads the same.
        assert_eq!(load(&root, &root.join("evals")).unwrap(), cases);
    }

    #[test]
    fn a_missing_or_empty_suite_is_named() {
        let (_dir, root) = repo();
        let e = load(&root, Path::new("nowhere")).unwrap_err().to_string();
        assert_eq!(e, "the suite folder nowhere does not exist");
        write(&root.join("file"), "x", 0o644);
        let e = load(&root, Path::new("file")).unwrap_err().to_string();
        assert_eq!(e, "the suite file is not a folder");
        std::fs::create_dir(root.join("evals/a case")).unwrap();
        assert_eq!(
            load_err(&root),
            "evals/a case: a case's folder name may hold only letters, digits, `-`, `_` and `.`"
        );
        std::fs::remove_dir(root.join("evals/a case")).unwrap();
        std::os::unix::fs::symlink(root.join("evals"), root.join("evals/loop")).unwrap();
        assert_eq!(load_err(&root), "evals/loop is a symbolic link, which ralph does not follow");
        std::fs::remove_file(root.join("evals/loop")).unwrap();
        std::fs::create_dir(root.join("evals/.hidden")).unwrap();
        write(&root.join("evals/notes.txt"), "x", 0o644);
        assert!(load_err(&root).starts_with("the suite evals holds no case"), "{}", load_err(&root));
    }

    #[test]
    fn a_case_without_its_spec_or_check_is_named() {
        let (_dir, root) = repo();
        good_case(&root, "a");
        std::fs::remove_file(root.join("evals/a/check")).unwrap();
        assert!(load_err(&root).starts_with("evals/a has no check"), "{}", load_err(&root));
        good_case(&root, "a");
        std::fs::remove_file(root.join("evals/a/spec.md")).unwrap();
        assert!(load_err(&root).starts_with("evals/a has no spec.md"), "{}", load_err(&root));
    }

    #[test]
    fn a_bad_spec_is_named_with_its_line() {
        let (_dir, root) = repo();
        good_case(&root, "a");
        write(&root.join("evals/a/spec.md"), "---\ntitle: x\nstatus: maybe\n---\n", 0o644);
        let e = load_err(&root);
        assert!(e.starts_with("evals/a/spec.md:3: unknown status `maybe`"), "{e}");
    }

    #[test]
    fn a_check_must_be_an_executable_file_not_a_link() {
        let (_dir, root) = repo();
        good_case(&root, "a");
        std::fs::set_permissions(root.join("evals/a/check"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_err(&root), "evals/a/check is not executable (run `chmod +x evals/a/check`)");

        std::fs::remove_file(root.join("evals/a/check")).unwrap();
        write(&root.join("real-check"), "#!/bin/sh\n", 0o755);
        std::os::unix::fs::symlink(root.join("real-check"), root.join("evals/a/check")).unwrap();
        assert_eq!(load_err(&root), "evals/a/check is a symbolic link, which ralph does not follow");

        std::fs::remove_file(root.join("evals/a/check")).unwrap();
        std::fs::create_dir(root.join("evals/a/check")).unwrap();
        assert_eq!(load_err(&root), "evals/a/check is not a regular file");

        // The setup, when there is one, follows the same rules.
        std::fs::remove_dir(root.join("evals/a/check")).unwrap();
        good_case(&root, "a");
        write(&root.join("evals/a/setup"), "#!/bin/sh\n", 0o600);
        assert_eq!(load_err(&root), "evals/a/setup is not executable (run `chmod +x evals/a/setup`)");
    }

    #[test]
    fn a_start_that_names_no_commit_is_named_with_its_line() {
        let (_dir, root) = repo();
        good_case(&root, "a");
        write(&root.join("evals/a/start"), "\nno-such-branch\n", 0o644);
        assert_eq!(load_err(&root), "evals/a/start:2: `no-such-branch` names no commit of this repository");
        write(&root.join("evals/a/start"), "--all\n", 0o644);
        assert_eq!(load_err(&root), "evals/a/start:1: `--all` names no commit of this repository");
        write(&root.join("evals/a/start"), "\n \n", 0o644);
        assert!(load_err(&root).starts_with("evals/a/start names no revision"), "{}", load_err(&root));
    }

    #[test]
    fn a_case_needs_a_start_in_a_repository_without_commits() {
        let dir = tempfile::tempdir().unwrap();
        git::test_git(dir.path(), &["init", "-q"]);
        good_case(dir.path(), "a");
        assert_eq!(
            load_err(dir.path()),
            "evals/a: the repository has no commit yet, so the case needs a start file"
        );
    }
}
