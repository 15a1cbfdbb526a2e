//! `ralph import FILE`: turns a backlog kept in another tool's format into specs, one file per
//! task, for the user to review and commit. Reads snarktank/ralph's `prd.json` (`userStories`
//! with `id`, `title`, `description`, `acceptanceCriteria`, `priority`, `passes`, `notes`) and
//! markdown checklist plans (`IMPLEMENTATION_PLAN.md`, `fix_plan.md`: `- [ ]` / `- [x]` items).
//! Existing spec files are never overwritten.

use crate::backlog::{SPECS_DIR, checklist, prd, slug};
use crate::error::CliError;
use crate::state::atomic_write;
use std::path::Path;

/// A task about to become a spec.
#[derive(Debug, PartialEq, Eq)]
pub struct Imported {
    pub id: Option<String>,
    pub title: String,
    pub done: bool,
    pub priority: Option<i64>,
    pub body: String,
}

/// Reads `prd.json` text.
pub fn from_prd(text: &str, path: &str) -> Result<Vec<Imported>, CliError> {
    let stories = prd::stories(text)
        .map_err(|e| CliError::usage(format!("{path}:{}:{}: {}", e.line, e.column, e.message)))?;
    Ok(stories
        .iter()
        .map(|s| Imported {
            id: s.id.clone(),
            title: s.title.clone(),
            done: s.passes,
            priority: s.priority,
            body: prd::body(s),
        })
        .collect())
}

/// Reads a checklist plan: every top-level `- [ ]` / `- [x]` item is a task; lines indented
/// under it are its details.
pub fn from_checklist(text: &str) -> Vec<Imported> {
    checklist::items(text)
        .into_iter()
        .map(|i| Imported { id: None, title: i.title, done: i.done, priority: None, body: i.body })
        .collect()
}

/// The spec text for an imported task.
fn spec_text(t: &Imported) -> String {
    let mut fm = String::new();
    if let Some(id) = &t.id {
        fm.push_str(&format!("id: {id}\n"));
    }
    fm.push_str(&format!("status: {}\n", if t.done { "done" } else { "todo" }));
    if let Some(p) = t.priority {
        fm.push_str(&format!("priority: {p}\n"));
    }
    format!("---\n{fm}---\n{}", t.body)
}

/// Runs `ralph import FILE`.
pub fn run(cwd: &Path, file: &Path) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let path = if file.is_absolute() { file.to_path_buf() } else { cwd.join(file) };
    let shown = file.display().to_string();
    let text =
        std::fs::read_to_string(&path).map_err(|e| CliError::usage(format!("cannot read {shown}: {e}")))?;
    let tasks = if path.extension().is_some_and(|e| e == "json") {
        from_prd(&text, &shown)?
    } else {
        from_checklist(&text)
    };
    if tasks.is_empty() {
        return Err(CliError::usage(format!("{shown}: no tasks found"))
            .hint("prd.json needs `userStories`; a checklist needs `- [ ] item` lines"));
    }
    let dir = root.join(SPECS_DIR);
    let taken: usize = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let names: Vec<String> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{:03}-{}.md", (taken + i + 1) * 10, slug(&t.title)))
        .collect();
    // All or nothing: no file is written if one would overwrite a spec.
    if let Some(n) = names.iter().find(|n| dir.join(n).exists()) {
        return Err(CliError::usage(format!("specs/{n} exists already; nothing was imported")));
    }
    let mut written = Vec::new();
    for (name, t) in names.into_iter().zip(&tasks) {
        atomic_write(&dir.join(&name), spec_text(t).as_bytes())?;
        written.push(name);
    }
    for w in &written {
        crate::outln!("created   specs/{w}");
    }
    crate::outln!(
        "\n{} task(s) imported from {shown}. Review them, commit, then `ralph run`.",
        written.len()
    );
    if let Some(f) = crate::config::backlog_source(&root).file() {
        crate::outln!(
            "note: ralph.toml's [backlog] file still names {}: remove that line to run the specs",
            f.display()
        );
    }
    // The result must be a valid backlog (an imported id may clash with an existing one).
    crate::backlog::Backlog::load(&root, &crate::backlog::Source::Specs)?;
    Ok(crate::exit_code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prd_json_becomes_specs() {
        let prd = r#"{"branchName":"ralph/x","userStories":[
          {"id":"US-001","title":"Add login","description":"A login page.","acceptanceCriteria":["Form posts","Typecheck passes"],"priority":1,"passes":false},
          {"id":"US-002","title":"Logout","acceptanceCriteria":[],"priority":2,"passes":true,"notes":"Done in sprint 3"}]}"#;
        let t = from_prd(prd, "prd.json").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            spec_text(&t[0]),
            "---\nid: US-001\nstatus: todo\npriority: 1\n---\n# Add login\n\nA login page.\n\n## Done when\n\n- Form posts\n- Typecheck passes\n"
        );
        assert!(t[1].done);
        assert!(t[1].body.contains("## Notes\n\nDone in sprint 3"));
        let e = from_prd("{\n\"userStories\": [}", "prd.json").unwrap_err();
        assert!(e.message.starts_with("prd.json:2:"), "{}", e.message);
    }

    #[test]
    fn checklists_become_specs() {
        let plan = "# Plan\n\n- [x] Set up CI\n- [ ] Parse the config file\n  keep comments\n  - [ ] sub-item stays a detail\n* [ ] Write docs\n";
        let t = from_checklist(plan);
        assert_eq!(t.len(), 3);
        assert!(t[0].done && !t[1].done);
        assert_eq!(t[1].body, "# Parse the config file\n\nkeep comments\n- [ ] sub-item stays a detail\n");
        assert_eq!(slug("Parse the config file!"), "parse-the-config-file");
    }
}
