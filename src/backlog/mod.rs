//! The backlog: every `specs/*.md` file is one task. The id is the file stem, the order is the
//! file name, and the front matter (see [`spec`]) carries status, priority and dependencies.
//!
//! Invariants: ids are unique; every `depends_on` names an existing task; dependencies have no
//! cycle. The runner picks the next task from here, never the agent.

pub mod spec;

pub use spec::{Spec, Status};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The folder of specs, relative to the repository root.
pub const SPECS_DIR: &str = "specs";

/// Why the backlog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Spec { path: PathBuf, line: usize, message: String },
    #[error("{path}:{line}: depends_on names `{dep}`, but there is no specs/{dep}.md")]
    UnknownDependency { path: PathBuf, line: usize, dep: String },
    #[error("dependency cycle: {0}")]
    Cycle(String),
    #[error("{second}: the task id `{id}` is already {first}'s")]
    DuplicateId { id: String, first: PathBuf, second: PathBuf },
}

/// All tasks, in file-name order.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub tasks: Vec<Spec>,
}

/// What the backlog has to offer next.
#[derive(Debug)]
pub enum Next<'a> {
    /// Run this task.
    Task(&'a Spec),
    /// Every task is done.
    AllDone,
    /// Tasks remain, but each is blocked or waits on a blocked one.
    OnlyBlocked,
}

impl Backlog {
    /// Reads `root/specs/*.md`. A missing folder is an empty backlog.
    pub fn load(root: &Path) -> Result<Backlog, BacklogError> {
        let dir = root.join(SPECS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Backlog::default()),
            Err(source) => return Err(BacklogError::Read { path: dir, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| BacklogError::Read { path: dir.clone(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with(".md") || name.starts_with('.') {
                continue;
            }
            let is_file = entry.file_type().map(|t| t.is_file() || t.is_symlink()).unwrap_or(false);
            if is_file {
                files.push(name.to_string());
            }
        }
        files.sort();
        let mut tasks = Vec::with_capacity(files.len());
        for name in files {
            let rel = Path::new(SPECS_DIR).join(&name);
            let abs = root.join(&rel);
            let text = std::fs::read_to_string(&abs)
                .map_err(|source| BacklogError::Read { path: rel.clone(), source })?;
            let id = name.trim_end_matches(".md");
            let spec = spec::parse(id, &rel, &text).map_err(|e| BacklogError::Spec {
                path: rel.clone(),
                line: e.line,
                message: e.message,
            })?;
            tasks.push(spec);
        }
        let backlog = Backlog { tasks };
        backlog.validate()?;
        Ok(backlog)
    }

    fn validate(&self) -> Result<(), BacklogError> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if let Some(&first) = ids.get(t.id.as_str()) {
                return Err(BacklogError::DuplicateId {
                    id: t.id.clone(),
                    first: self.tasks[first].path.clone(),
                    second: t.path.clone(),
                });
            }
            ids.insert(&t.id, i);
        }
        for t in &self.tasks {
            for dep in &t.depends_on {
                if !ids.contains_key(dep.as_str()) {
                    return Err(BacklogError::UnknownDependency {
                        path: t.path.clone(),
                        line: t.depends_on_line,
                        dep: dep.clone(),
                    });
                }
            }
        }
        // Depth-first search with colours; the first back edge found names the cycle.
        let mut colour = vec![0u8; self.tasks.len()];
        let mut stack: Vec<usize> = Vec::new();
        fn visit(
            i: usize,
            tasks: &[Spec],
            ids: &HashMap<&str, usize>,
            colour: &mut [u8],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            colour[i] = 1;
            stack.push(i);
            for dep in &tasks[i].depends_on {
                let j = ids[dep.as_str()];
                if colour[j] == 1 {
                    let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(j);
                    return Some(cycle);
                }
                if colour[j] == 0
                    && let Some(c) = visit(j, tasks, ids, colour, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            colour[i] = 2;
            None
        }
        for i in 0..self.tasks.len() {
            if colour[i] == 0
                && let Some(cycle) = visit(i, &self.tasks, &ids, &mut colour, &mut stack)
            {
                let names: Vec<&str> = cycle.iter().map(|&k| self.tasks[k].id.as_str()).collect();
                return Err(BacklogError::Cycle(names.join(" -> ")));
            }
        }
        Ok(())
    }

    /// Finds a task by id.
    pub fn get(&self, id: &str) -> Option<&Spec> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The next runnable task: status `todo`, every dependency `done`; lowest priority first,
    /// tasks without a priority after those with one, then by file name.
    pub fn next(&self) -> Next<'_> {
        let status: BTreeMap<&str, Status> = self.tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
        let runnable = self
            .tasks
            .iter()
            .filter(|t| t.status == Status::Todo)
            .filter(|t| t.depends_on.iter().all(|d| status.get(d.as_str()) == Some(&Status::Done)))
            .min_by_key(|t| (t.priority.is_none(), t.priority, t.path.clone()));
        match runnable {
            Some(t) => Next::Task(t),
            None if self.tasks.iter().all(|t| t.status == Status::Done) => Next::AllDone,
            None => Next::OnlyBlocked,
        }
    }

    /// Paths of the other tasks' specs, for the prompt.
    pub fn other_paths(&self, id: &str) -> Vec<(String, Status)> {
        self.tasks
            .iter()
            .filter(|t| t.id != id)
            .map(|t| (t.path.to_string_lossy().into_owned(), t.status))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(files: &[(&str, &str)]) -> Result<Backlog, BacklogError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("specs")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("specs").join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("specs").join("notes.txt"), "not a spec").unwrap();
        Backlog::load(dir.path())
    }

    fn next_id(b: &Backlog) -> Option<String> {
        match b.next() {
            Next::Task(t) => Some(t.id.clone()),
            _ => None,
        }
    }

    #[test]
    fn order_is_file_name_then_priority() {
        let b = backlog(&[("020-b.md", "# B\n"), ("010-a.md", "# A\n")]).unwrap();
        assert_eq!(next_id(&b).as_deref(), Some("010-a"));
        let b = backlog(&[("020-b.md", "---\npriority: 1\n---\n"), ("010-a.md", "# A\n")]).unwrap();
        assert_eq!(next_id(&b).as_deref(), Some("020-b"));
    }

    #[test]
    fn dependencies_hold_tasks_back() {
        let b = backlog(&[
            ("010-a.md", "---\ndepends_on: [020-b]\n---\n"),
            ("020-b.md", "---\nstatus: blocked\n---\n"),
        ])
        .unwrap();
        assert!(matches!(b.next(), Next::OnlyBlocked));
        let b = backlog(&[
            ("010-a.md", "---\ndepends_on: [020-b]\n---\n"),
            ("020-b.md", "---\nstatus: done\n---\n"),
        ])
        .unwrap();
        assert_eq!(next_id(&b).as_deref(), Some("010-a"));
        let b = backlog(&[("010-a.md", "---\nstatus: done\n---\n")]).unwrap();
        assert!(matches!(b.next(), Next::AllDone));
    }

    #[test]
    fn ids_can_be_set_but_not_twice() {
        let b = backlog(&[
            ("010-a.md", "---\nid: login\n---\n"),
            ("020-b.md", "---\ndepends_on: [login]\n---\n"),
        ])
        .unwrap();
        assert_eq!(b.tasks[0].id, "login");
        let e =
            backlog(&[("010-a.md", "---\nid: 020-b\n---\n"), ("020-b.md", "# B\n")]).unwrap_err().to_string();
        assert_eq!(e, "specs/020-b.md: the task id `020-b` is already specs/010-a.md's");
    }

    #[test]
    fn bad_backlogs_are_named() {
        let e =
            backlog(&[("010-a.md", "---\nstatus: todo\ndepends_on: [nope]\n---\n")]).unwrap_err().to_string();
        assert_eq!(e, "specs/010-a.md:3: depends_on names `nope`, but there is no specs/nope.md");
        let e = backlog(&[("a.md", "---\ndepends_on: [b]\n---\n"), ("b.md", "---\ndepends_on: [a]\n---\n")])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "dependency cycle: a -> b -> a");
        let e = backlog(&[("a.md", "---\nstatus: maybe\n---\n")]).unwrap_err().to_string();
        assert!(e.starts_with("specs/a.md:2: unknown status"), "{e}");
    }
}
