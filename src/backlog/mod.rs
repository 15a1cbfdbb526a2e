//! The backlog: every `specs/*.md` file is one task (the id is the file stem, the order is the
//! file name, the front matter — see [`spec`] — carries status, priority, dependencies and the
//! files a task [`touches`]), or, where the user keeps one instead, the stories of a `prd.json`
//! ([`prd`]) or the items of a checklist plan ([`checklist`]), read in place and kept up to date.
//!
//! Invariants: ids are unique; every `depends_on` names an existing task; dependencies have no
//! cycle. The runner picks the next task from here, never the agent. A status is written back
//! into the task's own file without touching any other byte of it.

pub mod checklist;
pub mod prd;
pub mod spec;
pub mod touches;

pub use spec::{Origin, Spec, Status};
pub use touches::may_conflict;

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
    #[error("{path}:{line}:{column}: {message}")]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Where the tasks are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// `specs/*.md`, one file per task.
    #[default]
    Specs,
    /// A snarktank/ralph `prd.json` (path relative to the repository root).
    Prd(PathBuf),
    /// A markdown checklist plan.
    Checklist(PathBuf),
}

/// Files taken as the backlog when `specs/` holds no spec and ralph.toml names none.
pub const DETECTED: &[&str] = &["prd.json", "IMPLEMENTATION_PLAN.md", "fix_plan.md"];

impl Source {
    /// The source a file stands for: `.json` is a prd, anything else a checklist.
    pub fn of_file(path: &Path) -> Source {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            Source::Prd(path.to_path_buf())
        } else {
            Source::Checklist(path.to_path_buf())
        }
    }

    /// `[backlog] file` if set; otherwise `specs/` when it holds a spec, else the first of
    /// [`DETECTED`] that exists, else `specs/`.
    pub fn resolve(root: &Path, configured: Option<&Path>) -> Source {
        if let Some(p) = configured {
            return Source::of_file(p);
        }
        let has_specs = std::fs::read_dir(root.join(SPECS_DIR)).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".md") && !n.starts_with('.')))
        });
        if has_specs {
            return Source::Specs;
        }
        DETECTED.iter().map(Path::new).find(|p| root.join(p).is_file()).map_or(Source::Specs, Source::of_file)
    }

    /// The file holding every task, for a prd or a plan.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::Specs => None,
            Source::Prd(p) | Source::Checklist(p) => Some(p),
        }
    }

    /// "specs/" or the file's path, for messages.
    pub fn describe(&self) -> String {
        match self.file() {
            None => format!("{SPECS_DIR}/"),
            Some(p) => p.display().to_string(),
        }
    }
}

/// "Add login page!" → "add-login-page": ids for stories without one and checklist items.
pub fn slug(title: &str) -> String {
    let mut s = String::new();
    for w in title.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if s.len() + w.len() + 1 > 40 {
            break;
        }
        if !s.is_empty() {
            s.push('-');
        }
        s.push_str(&w.to_lowercase());
    }
    if s.is_empty() { "task".into() } else { s }
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
    /// Reads the backlog from `source`. A missing `specs/` folder is an empty backlog; a
    /// missing prd or plan named by ralph.toml is an error.
    pub fn load(root: &Path, source: &Source) -> Result<Backlog, BacklogError> {
        let backlog = match source {
            Source::Specs => Self::load_specs(root)?,
            Source::Prd(rel) => {
                let text = read(root, rel)?;
                let tasks = prd::tasks(&text, rel).map_err(|e| BacklogError::Json {
                    path: rel.clone(),
                    line: e.line,
                    column: e.column,
                    message: e.message,
                })?;
                Backlog { tasks }
            }
            Source::Checklist(rel) => Backlog { tasks: checklist::tasks(&read(root, rel)?, rel) },
        };
        backlog.validate()?;
        Ok(backlog)
    }

    /// Reads `root/specs/*.md`.
    fn load_specs(root: &Path) -> Result<Backlog, BacklogError> {
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
            // Anything but a folder is read, so that a link or a FIFO is named as an error
            // (`fsx::read_input`), not skipped unseen.
            let is_file = entry.file_type().map(|t| !t.is_dir()).unwrap_or(false);
            if is_file {
                files.push(name.to_string());
            }
        }
        files.sort();
        let folder =
            crate::fsx::open_dir(&dir, false).map_err(|source| BacklogError::Read { path: dir, source })?;
        let mut tasks = Vec::with_capacity(files.len());
        for name in files {
            let rel = Path::new(SPECS_DIR).join(&name);
            let text = folder
                .read_input(name.as_ref())
                .map_err(|source| BacklogError::Read { path: rel.clone(), source })?;
            let id = name.trim_end_matches(".md");
            let spec = spec::parse(id, &rel, &text).map_err(|e| BacklogError::Spec {
                path: rel.clone(),
                line: e.line,
                message: e.message,
            })?;
            tasks.push(spec);
        }
        Ok(Backlog { tasks })
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
        match self.runnable().into_iter().next() {
            Some(t) => Next::Task(t),
            None if self.tasks.iter().all(|t| t.status == Status::Done) => Next::AllDone,
            None => Next::OnlyBlocked,
        }
    }

    /// Every task that could start now, in the order [`Backlog::next`] takes them: todo, its
    /// `depends_on` tasks done (parallel workers and remote workers start several).
    pub fn runnable(&self) -> Vec<&Spec> {
        let status: BTreeMap<&str, Status> = self.tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
        let mut ready: Vec<&Spec> = self
            .tasks
            .iter()
            .filter(|t| t.status == Status::Todo)
            .filter(|t| t.depends_on.iter().all(|d| status.get(d.as_str()) == Some(&Status::Done)))
            .collect();
        // Stable, keyed by reference: the first of equals is the first in the backlog.
        ready.sort_by(|a, b| {
            (a.priority.is_none(), a.priority, &a.path, a.order).cmp(&(
                b.priority.is_none(),
                b.priority,
                &b.path,
                b.order,
            ))
        });
        ready
    }

    /// Every task in the order ralph would take them if each succeeded: done ones first, then
    /// the runnable ones one after another, then those held back by a blocked task.
    pub fn in_order(&self) -> Vec<&Spec> {
        let mut done: std::collections::HashSet<&str> =
            self.tasks.iter().filter(|t| t.status == Status::Done).map(|t| t.id.as_str()).collect();
        let mut out: Vec<&Spec> = self.tasks.iter().filter(|t| t.status == Status::Done).collect();
        loop {
            let next = self
                .tasks
                .iter()
                .filter(|t| t.status == Status::Todo && !done.contains(t.id.as_str()))
                .filter(|t| t.depends_on.iter().all(|d| done.contains(d.as_str())))
                .min_by_key(|t| (t.priority.is_none(), t.priority, t.path.clone(), t.order));
            let Some(t) = next else { break };
            done.insert(&t.id);
            out.push(t);
        }
        out.extend(self.tasks.iter().filter(|t| !done.contains(t.id.as_str())));
        out
    }

    /// Where to read the other tasks, for the prompt: a spec's path, or a story's or item's
    /// id and title in its file.
    pub fn other_paths(&self, id: &str) -> Vec<(String, Status)> {
        self.tasks.iter().filter(|t| t.id != id).map(|t| (t.label(), t.status)).collect()
    }

    /// Marks ralph's blocks on stories and items (which have no place for one in their file):
    /// a task ralph blocked stays blocked until its text changes.
    pub fn apply_blocks(&mut self, blocks: &BTreeMap<String, (String, String)>) {
        for t in &mut self.tasks {
            if t.origin != Origin::File
                && t.status == Status::Todo
                && let Some((reason, hash)) = blocks.get(&t.id)
                && *hash == spec::fingerprint(&t.body)
            {
                t.status = Status::Blocked;
                t.blocked_reason = Some(reason.clone());
            }
        }
    }
}

impl Spec {
    /// The status its file records: a story or an item blocked in ralph's state is `todo` in
    /// its file.
    pub fn file_status(&self) -> Status {
        match (self.origin, self.status) {
            (Origin::Story | Origin::Item, Status::Blocked) => Status::Todo,
            (_, s) => s,
        }
    }

    /// The spec's path, or `prd.json › US-001: Title` for a story or an item.
    pub fn label(&self) -> String {
        match self.origin {
            Origin::File => self.path.to_string_lossy().into_owned(),
            Origin::Story | Origin::Item => format!("{} › {}: {}", self.path.display(), self.id, self.title),
        }
    }
}

/// Writes `status` (and a block's reason) into the task's file: a spec's front matter, a
/// story's `passes`, an item's box. `before` is the file at the iteration's start, restored
/// when it is gone. Returns whether the file changed. A story or an item has no place for a
/// block: the caller keeps those in ralph's state (see [`Backlog::apply_blocks`]).
pub fn set_status(
    root: &Path,
    task: &Spec,
    before: &str,
    status: Status,
    reason: Option<&str>,
) -> Result<bool, BacklogError> {
    write_status(root, task, before, status, reason, crate::state::atomic_write)
}

/// [`set_status`] for a file committed right after: written atomically as ever, its sync left
/// to the write-behind thread (within a second) instead of the loop waiting for the disk, as
/// git's own objects are. A green iteration's one synced write less.
pub fn set_status_for_commit(
    root: &Path,
    task: &Spec,
    before: &str,
    status: Status,
) -> Result<bool, BacklogError> {
    write_status(root, task, before, status, None, crate::state::atomic_write_later)
}

fn write_status(
    root: &Path,
    task: &Spec,
    before: &str,
    status: Status,
    reason: Option<&str>,
    write: fn(&Path, &[u8]) -> Result<(), crate::state::StateError>,
) -> Result<bool, BacklogError> {
    let path = root.join(&task.path);
    let exists = path.exists();
    let text = crate::fsx::read_input(&path).unwrap_or_else(|_| before.to_string());
    let new = match task.origin {
        Origin::File => {
            let current = spec::parse("", &task.path, &text).ok();
            if exists
                && reason.is_none()
                && current.is_some_and(|c| c.status == status && c.blocked_reason.is_none())
            {
                return Ok(false);
            }
            spec::with_status(&text, status, reason)
        }
        Origin::Story => match status {
            Status::Blocked => text.clone(),
            s => prd::with_passes(&text, &task.id, s == Status::Done).unwrap_or_else(|| text.clone()),
        },
        Origin::Item => match status {
            Status::Blocked => text.clone(),
            s => checklist::with_ticked(&text, &task.id, s == Status::Done).unwrap_or_else(|| text.clone()),
        },
    };
    if new == text && exists {
        return Ok(false);
    }
    write(&path, new.as_bytes())?;
    Ok(true)
}

/// A task's text as its file has it now: `None` when the task (or its file) is gone, the whole
/// file when it no longer parses.
pub fn current_body(root: &Path, t: &Spec) -> Option<String> {
    current_tasks(root, std::slice::from_ref(t)).into_values().next().map(|(body, _)| body)
}

/// [`current_body`] of many tasks, by id, with the status their file gives them now (`None`
/// when it no longer parses); each file is read and parsed once (the stories of one prd.json
/// share it).
pub fn current_tasks<'a>(
    root: &Path,
    tasks: impl IntoIterator<Item = &'a Spec>,
) -> BTreeMap<String, (String, Option<Status>)> {
    let mut by_file: BTreeMap<&Path, Vec<&Spec>> = BTreeMap::new();
    for t in tasks {
        by_file.entry(t.path.as_path()).or_default().push(t);
    }
    let mut out = BTreeMap::new();
    // Each folder opened once (the specs share one).
    let mut folders: BTreeMap<&Path, Option<crate::fsx::Dir>> = BTreeMap::new();
    for (path, tasks) in by_file {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { continue };
        let folder =
            folders.entry(parent).or_insert_with(|| crate::fsx::open_dir(&root.join(parent), false).ok());
        let Some(Ok(text)) = folder.as_ref().map(|d| d.read_input(name)) else { continue };
        let parsed: Result<Vec<Spec>, ()> = match tasks[0].origin {
            Origin::File => spec::parse("", path, &text)
                .map(|s| vec![Spec { id: tasks[0].id.clone(), ..s }])
                .map_err(drop),
            Origin::Story => prd::tasks(&text, path).map_err(drop),
            Origin::Item => Ok(checklist::tasks(&text, path)),
        };
        match parsed {
            Ok(now) => {
                for t in &tasks {
                    if let Some(s) = now.iter().find(|s| s.id == t.id) {
                        out.insert(t.id.clone(), (s.body.clone(), Some(s.status)));
                    }
                }
            }
            Err(()) => {
                for t in &tasks {
                    out.insert(t.id.clone(), (text.clone(), None));
                }
            }
        }
    }
    out
}

fn read(root: &Path, rel: &Path) -> Result<String, BacklogError> {
    crate::fsx::read_input(&root.join(rel))
        .map_err(|source| BacklogError::Read { path: rel.to_path_buf(), source })
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
        Backlog::load(dir.path(), &Source::Specs)
    }

    fn next_id(b: &Backlog) -> Option<String> {
        match b.next() {
            Next::Task(t) => Some(t.id.clone()),
            _ => None,
        }
    }

    /// A backlog file the agent made a link to `/dev/zero` is named, never read.
    #[test]
    fn a_backlog_file_that_is_a_link_is_named_not_read() {
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in
            [("prd.json", Source::Prd("prd.json".into())), ("PLAN.md", Source::Checklist("PLAN.md".into()))]
        {
            std::os::unix::fs::symlink("/dev/zero", dir.path().join(name)).unwrap();
            let e = crate::error::chain(&Backlog::load(dir.path(), &source).unwrap_err());
            assert!(e.contains(&format!("{name} is a symbolic link")), "{e}");
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
