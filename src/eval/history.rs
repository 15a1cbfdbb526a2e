//! Cases from the history of earlier runs (`ralph eval` without `--suite`): every task a run
//! finished, replayed from where its first iteration started and judged by the checks that
//! passed when it was done.
//!
//! A task is finished by a record with outcome `done` and a `commit` in
//! `.ralph/runs/*/iterations.jsonl` (runs in id order, records in iteration order). Its case:
//!
//! - `start`: the `head_before` of the first iteration on the task (across runs) since it was
//!   last finished before, so that a task done, reopened and done again starts where the work
//!   the finish judges started;
//! - `spec`: the task's text in that commit: its spec file as it was (found by the task's id in
//!   the backlog, else among the `specs/*.md` the finishing commit changed), or the story's or
//!   item's text in its prd.json or checklist plan;
//! - `check`: [`Check::Restored`] with `[checks] commands` from ralph.toml and the spec's own
//!   `checks`, the finishing commit, and the test files ([`crate::gates::is_test_file`]) the
//!   task's commits from start to finish added or modified and the finishing commit still has.
//!
//! Invariants: reads only (the records through `fsx`, git through `git.rs`); every task the
//! records name ends up either a case or one line saying why not; a case's finishing commit is
//! reachable from HEAD and its start is an ancestor of it. Whether the hidden check fails at the
//! start (a case worth running) needs a checkout: the runner decides that, not this module.

use super::{Case, Check};
use crate::backlog::{Backlog, Origin, checklist, prd, spec};
use crate::config::Overrides;
use crate::error::{CliError, chain};
use crate::git;
use crate::logs;
use crate::record::{self, IterationRecord, Outcome};
use std::path::{Path, PathBuf};

/// The cases the history holds, and one line (`<task>: <why>`) for each task left out.
pub fn cases(root: &Path) -> Result<(Vec<Case>, Vec<String>), CliError> {
    let cfg = crate::runner::load_config(root, &Overrides::default())?;
    let mut records = Vec::new();
    for run in logs::run_ids(root) {
        let mut run_records = record::read_all(&logs::records_path(&logs::run_dir(root, &run)));
        // A parallel run appends records as workers end, not in iteration order.
        run_records.sort_by_key(|r| r.iteration);
        records.extend(run_records);
    }
    let backlog = Backlog::load(root, &cfg.source(root)).map_err(|e| chain(&e));
    let head = git::head(root)?;
    let mut cases = Vec::new();
    let mut left_out = Vec::new();
    for task in histories(&records) {
        match case(root, head.as_deref(), &cfg.checks.commands, &backlog, &task)? {
            Ok(c) => cases.push(c),
            Err(why) => left_out.push(format!("{}: {why}", task.id)),
        }
    }
    Ok((cases, left_out))
}

/// One stretch of work on a task that a run finished.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finish {
    /// The `head_before` of the stretch's first iteration that has one.
    start: Option<String>,
    /// The commit of the `done` record that ended it.
    commit: String,
}

/// A task as the records tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskHistory {
    id: String,
    /// Oldest first.
    finishes: Vec<Finish>,
}

/// The tasks the records name, in the order they first appear, each with its finished
/// stretches. `records` are in the order they happened.
fn histories(records: &[IterationRecord]) -> Vec<TaskHistory> {
    let mut tasks: Vec<(TaskHistory, Option<String>)> = Vec::new();
    for r in records {
        let at = match tasks.iter().position(|(t, _)| t.id == r.task) {
            Some(at) => at,
            None => {
                tasks.push((TaskHistory { id: r.task.clone(), finishes: Vec::new() }, None));
                tasks.len() - 1
            }
        };
        let (task, start) = &mut tasks[at];
        if start.is_none() {
            start.clone_from(&r.head_before);
        }
        if r.outcome == Outcome::Done
            && let Some(commit) = &r.commit
        {
            task.finishes.push(Finish { start: start.take(), commit: commit.clone() });
        }
    }
    tasks.into_iter().map(|(t, _)| t).collect()
}

/// The first 7 characters of a sha, for messages.
fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The case of one task, or why there is none.
fn case(
    root: &Path,
    head: Option<&str>,
    project_checks: &[String],
    backlog: &Result<Backlog, String>,
    task: &TaskHistory,
) -> Result<Result<Case, String>, CliError> {
    if task.finishes.is_empty() {
        return Ok(Err("no run finished it (no `done` record with a commit)".into()));
    }
    let Some(head) = head else { return Ok(Err("the repository has no commit at HEAD".into())) };
    let mut finish = None;
    for f in &task.finishes {
        if git::is_ancestor(root, &f.commit, head)? {
            finish = Some(f);
            break;
        }
    }
    let Some(finish) = finish else {
        let commits: Vec<&str> = task.finishes.iter().map(|f| short(&f.commit)).collect();
        return Ok(Err(format!(
            "its finishing commit ({}) is no longer reachable from HEAD",
            commits.join(", ")
        )));
    };
    let Some(start) = &finish.start else {
        return Ok(Err("no record of its iterations names the commit it started from".into()));
    };
    let Some(start) = git::rev_parse(root, start)? else {
        return Ok(Err(format!("the commit it started from, {}, no longer exists", short(start))));
    };
    if start == finish.commit || !git::is_ancestor(root, &start, &finish.commit)? {
        return Ok(Err(format!(
            "the commit it started from, {}, is not an ancestor of its finishing commit {}",
            short(&start),
            short(&finish.commit)
        )));
    }
    let (spec, own_checks) = match find_spec(root, backlog, &task.id, &start, &finish.commit)? {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    let commands: Vec<String> = project_checks.iter().chain(&own_checks).cloned().collect();
    if commands.is_empty() {
        return Ok(Err(
            "it has no check to run (no `[checks] commands` in ralph.toml, no `checks` in its spec)".into(),
        ));
    }
    let mut files: Vec<String> = git::changes_by_task(root, &start, &finish.commit)?
        .into_iter()
        .filter(|c| c.task == task.id || c.sha == finish.commit)
        .flat_map(|c| c.files)
        .filter(|f| crate::gates::is_test_file(f))
        .collect();
    files.sort();
    files.dedup();
    // A test file the task made and later removed is not put back.
    let mut files = git::files_in(root, &finish.commit, &files)?;
    files.sort();
    Ok(Ok(Case {
        id: task.id.clone(),
        start,
        spec,
        check: Check::Restored { commands, commit: finish.commit.clone(), files },
        setup: None,
    }))
}

/// The task's text at `start` and its own checks, or why it was not found: looked up at its
/// place in the backlog, then among the specs the finishing commit changed (a task since
/// removed from the backlog, or one whose spec moved).
fn find_spec(
    root: &Path,
    backlog: &Result<Backlog, String>,
    id: &str,
    start: &str,
    finish: &str,
) -> Result<Result<(String, Vec<String>), String>, CliError> {
    let mut places: Vec<(PathBuf, Origin)> = Vec::new();
    if let Ok(b) = backlog
        && let Some(t) = b.get(id)
    {
        places.push((t.path.clone(), t.origin));
    }
    for path in git::changed_between(root, &format!("{finish}^"), finish)? {
        let path = PathBuf::from(path);
        let in_specs = path.parent() == Some(Path::new(crate::backlog::SPECS_DIR));
        if in_specs && path.extension().is_some_and(|e| e == "md") && !places.iter().any(|(p, _)| *p == path)
        {
            places.push((path, Origin::File));
        }
    }
    for (path, origin) in places {
        let Some(bytes) = git::file_at(root, start, &path.to_string_lossy())? else { continue };
        let at = format!("{} (at {})", path.display(), short(start));
        if bytes.len() as u64 > crate::fsx::MAX_INPUT_BYTES {
            return Ok(Err(format!("{at} is larger than {} KiB", crate::fsx::MAX_INPUT_BYTES / 1024)));
        }
        let Ok(text) = String::from_utf8(bytes) else { return Ok(Err(format!("{at} is not UTF-8"))) };
        match origin {
            Origin::File => {
                let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
                match spec::parse(&stem, &path, &text) {
                    Ok(s) if s.id == id => return Ok(Ok((text, s.checks))),
                    Ok(_) => {}
                    Err(e) => return Ok(Err(format!("{at}:{}: {}", e.line, e.message))),
                }
            }
            Origin::Story => {
                if let Ok(tasks) = prd::tasks(&text, &path)
                    && let Some(t) = tasks.into_iter().find(|t| t.id == id)
                {
                    return Ok(Ok((t.body, Vec::new())));
                }
            }
            Origin::Item => {
                if let Some(t) = checklist::tasks(&text, &path).into_iter().find(|t| t.id == id) {
                    return Ok(Ok((t.body, Vec::new())));
                }
            }
        }
    }
    let mut why = format!("its spec was not found at the commit it started from, {}", short(start));
    if let Err(e) = backlog {
        why.push_str(&format!(" (the backlog does not load: {e})"));
    }
    Ok(Err(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        iteration: u32,
        task: &str,
        outcome: Outcome,
        head_before: Option<&str>,
        commit: Option<&str>,
    ) -> IterationRecord {
        IterationRecord {
            head_before: head_before.map(String::from),
            commit: commit.map(String::from),
            ..IterationRecord::new("r", iteration, task, outcome)
        }
    }

    #[test]
    fn a_finish_starts_where_the_work_it_judges_started() {
        let records = [
            rec(1, "a", Outcome::ChecksFailed, None, None),
            rec(2, "a", Outcome::ChecksFailed, Some("s1"), None),
            rec(3, "b", Outcome::AgentFailed, Some("s1"), None),
            rec(4, "a", Outcome::Progress, Some("s1"), Some("p1")),
            // Done without a commit finishes nothing.
            rec(5, "a", Outcome::Done, Some("p1"), None),
            rec(6, "a", Outcome::Done, Some("p1"), Some("f1")),
            // Reopened and done again: the second finish starts after the first.
            rec(7, "a", Outcome::Done, Some("s2"), Some("f2")),
        ];
        let h = histories(&records);
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].id.as_str(), h[1].id.as_str()), ("a", "b"));
        assert_eq!(
            h[0].finishes,
            [
                Finish { start: Some("s1".into()), commit: "f1".into() },
                Finish { start: Some("s2".into()), commit: "f2".into() },
            ]
        );
        assert!(h[1].finishes.is_empty());
    }

    /// A repository with ralph.toml, as ralph's runs left it, and a helper that commits
    /// everything as task `task`'s iteration (or as the user, with an empty task).
    struct Repo {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Repo {
        fn new() -> Repo {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let repo = Repo { _dir: dir, root };
            repo.git(&["init", "-q"]);
            repo.git(&["config", "user.name", "t"]);
            repo.git(&["config", "user.email", "t@example.invalid"]);
            repo.git(&["config", "commit.gpgsign", "false"]);
            repo.write(".gitignore", ".ralph/\n");
            repo.write(
                "ralph.toml",
                "[agent]\ncommand = [\"true\"]\n[checks]\ncommands = [\"cargo test\"]\n",
            );
            repo
        }

        fn git(&self, args: &[&str]) {
            git::test_git(&self.root, args);
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn remove(&self, path: &str) {
            std::fs::remove_file(self.root.join(path)).unwrap();
        }

        fn commit(&self, task: &str) -> String {
            self.git(&["add", "-A"]);
            let message = if task.is_empty() {
                "by hand".to_string()
            } else {
                format!("ralph({task}): work\n\nRalph-Task: {task}\nRalph-Run: r\nRalph-Iteration: 1\n")
            };
            self.git(&["commit", "-qm", &message]);
            git::head(&self.root).unwrap().unwrap()
        }

        fn records(&self, run: &str, records: &[IterationRecord]) {
            let dir = logs::run_dir(&self.root, run);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("run.json"), "{}").unwrap();
            for r in records {
                record::append(&logs::records_path(&dir), r).unwrap();
            }
        }
    }

    #[test]
    fn every_finished_task_is_a_case_or_a_reason() {
        let repo = Repo::new();
        let a_spec = "---\nchecks: [./a-check]\n---\n# A\n";
        repo.write("specs/010-a.md", a_spec);
        repo.write("specs/020-b.md", "# B\n");
        repo.write("specs/040-d.md", "# D\n");
        let c0 = repo.commit("");
        // Task a's progress: a test file, a Go test, code, and a test file it later removes.
        repo.write("tests/a.rs", "#[test] fn a() {}\n");
        repo.write("pkg/x_test.go", "package pkg\n");
        repo.write("src/a.rs", "fn a() {}\n");
        repo.write("tests/gone.rs", "\n");
        let c1 = repo.commit("010-a");
        // Task b, done in between: its test file is not a's.
        repo.write("tests/b.rs", "#[test] fn b() {}\n");
        repo.write("specs/020-b.md", "---\nstatus: done\n---\n# B\n");
        let cb = repo.commit("020-b");
        // The user's own change to a test file between: not a's either.
        repo.write("tests/user.rs", "\n");
        repo.commit("");
        // a's finish: its test grows, the removed one goes, its status is done.
        repo.write("tests/a.rs", "#[test] fn a() {}\n#[test] fn a2() {}\n");
        repo.remove("tests/gone.rs");
        repo.write("specs/010-a.md", &a_spec.replace("---\n#", "status: done\n---\n#"));
        let c2 = repo.commit("010-a");
        // e: finished by a commit that touches no spec, and no spec names it.
        repo.write("other.txt", "e\n");
        let ce = repo.commit("050-e");
        // b's spec leaves the backlog: found through its finishing commit.
        repo.remove("specs/020-b.md");
        repo.commit("");
        // c: finished on a line of history since thrown away.
        let keep = git::head(&repo.root).unwrap().unwrap();
        repo.write("c.txt", "c\n");
        let cc = repo.commit("030-c");
        repo.git(&["reset", "-q", "--hard", &keep]);

        // Written out of order, as a parallel run's workers end.
        repo.records(
            "20260101-000000",
            &[
                rec(5, "050-e", Outcome::Done, Some(&c2), Some(&ce)),
                rec(4, "010-a", Outcome::Done, Some(&cb), Some(&c2)),
                rec(3, "020-b", Outcome::Done, Some(&c1), Some(&cb)),
                rec(2, "010-a", Outcome::Progress, Some(&c0), Some(&c1)),
                rec(1, "010-a", Outcome::ChecksFailed, Some(&c0), None),
            ],
        );
        repo.records(
            "20260102-000000",
            &[
                rec(1, "030-c", Outcome::Done, Some(&keep), Some(&cc)),
                rec(2, "040-d", Outcome::ChecksFailed, Some(&keep), None),
            ],
        );

        let (found, left_out) = cases(&repo.root).unwrap();
        assert_eq!(
            found,
            [
                Case {
                    id: "010-a".into(),
                    start: c0.clone(),
                    spec: a_spec.into(),
                    check: Check::Restored {
                        commands: vec!["cargo test".into(), "./a-check".into()],
                        commit: c2.clone(),
                        files: vec!["pkg/x_test.go".into(), "tests/a.rs".into()],
                    },
                    setup: None,
                },
                Case {
                    id: "020-b".into(),
                    start: c1,
                    spec: "# B\n".into(),
                    check: Check::Restored {
                        commands: vec!["cargo test".into()],
                        commit: cb,
                        files: vec!["tests/b.rs".into()],
                    },
                    setup: None,
                },
            ]
        );
        assert_eq!(
            left_out,
            [
                format!("050-e: its spec was not found at the commit it started from, {}", &c2[..7]),
                format!("030-c: its finishing commit ({}) is no longer reachable from HEAD", &cc[..7]),
                "040-d: no run finished it (no `done` record with a commit)".to_string(),
            ]
        );
    }

    #[test]
    fn a_task_without_a_check_to_run_is_left_out() {
        let repo = Repo::new();
        repo.remove("ralph.toml");
        let e = cases(&repo.root).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (crate::exit_code::USAGE, "ralph.toml not found"));
        repo.write("ralph.toml", "[agent]\ncommand = [\"true\"]\n");
        repo.write("specs/a.md", "# A\n");
        let c0 = repo.commit("");
        repo.write("src/a.rs", "\n");
        let c1 = repo.commit("a");
        repo.records("20260101-000000", &[rec(1, "a", Outcome::Done, Some(&c0), Some(&c1))]);
        let (found, left_out) = cases(&repo.root).unwrap();
        assert!(found.is_empty());
        assert_eq!(
            left_out,
            ["a: it has no check to run (no `[checks] commands` in ralph.toml, no `checks` in its spec)"]
        );
        // A task with checks of its own is a case, even with no file to put back.
        repo.write("specs/b.md", "---\nchecks: [make test]\n---\n# B\n");
        let c2 = repo.commit("");
        repo.write("src/b.rs", "\n");
        let c3 = repo.commit("b");
        repo.records("20260102-000000", &[rec(1, "b", Outcome::Done, Some(&c2), Some(&c3))]);
        let (found, left_out) = cases(&repo.root).unwrap();
        assert_eq!(left_out.len(), 1, "{left_out:?}");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id.as_str(), found[0].start.as_str()), ("b", c2.as_str()));
        assert_eq!(
            found[0].check,
            Check::Restored { commands: vec!["make test".into()], commit: c3, files: Vec::new() }
        );
    }
}
