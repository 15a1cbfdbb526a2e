//! A markdown checklist plan (`IMPLEMENTATION_PLAN.md`, `fix_plan.md`) as a backlog: every
//! top-level `- [ ]` / `- [x]` item is a task, in file order; lines indented under an item are
//! its details.
//!
//! Invariant: ticking an item changes only the character inside its box; the item is found
//! again by its id (a slug of its text) at write time, so edits made since are kept.

use super::spec::{Origin, Spec, Status};
use std::collections::HashMap;
use std::path::Path;

/// One item: its text, whether ticked, its details, and the 0-based line of its box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub done: bool,
    /// `# title`, a blank line, then the indented details.
    pub body: String,
    line: usize,
    /// Byte offset of the box's inner character in that line.
    mark: usize,
}

const BOXES: &[&str] = &["- [ ] ", "* [ ] ", "- [x] ", "- [X] ", "* [x] ", "* [X] "];

/// Reads the items. Ids are slugs of the item text, made unique with `-2`, `-3`…
pub fn items(text: &str) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let top = indent < 2;
        let item =
            BOXES.iter().find_map(|p| trimmed.strip_prefix(p).map(|rest| (p.contains(['x', 'X']), rest)));
        match item {
            Some((done, rest)) if top => {
                let title: String = rest.trim().chars().take(100).collect();
                let base = super::slug(&title);
                let count = seen.entry(base.clone()).or_insert(0);
                *count += 1;
                let id = if *count == 1 { base } else { format!("{base}-{count}") };
                out.push(Item {
                    id,
                    title: title.clone(),
                    done,
                    body: format!("# {title}\n"),
                    line: n,
                    mark: indent + 3,
                });
            }
            _ => {
                if let Some(last) = out.last_mut()
                    && !trimmed.is_empty()
                    && !top
                {
                    if !last.body.contains("\n\n") {
                        last.body.push('\n');
                    }
                    last.body.push_str(trimmed);
                    last.body.push('\n');
                }
            }
        }
    }
    out
}

/// The plan's items as tasks.
pub fn tasks(text: &str, path: &Path) -> Vec<Spec> {
    items(text)
        .into_iter()
        .enumerate()
        .map(|(i, it)| Spec {
            id: it.id,
            path: path.to_path_buf(),
            origin: Origin::Item,
            order: i,
            title: it.title,
            status: if it.done { Status::Done } else { Status::Todo },
            body: it.body,
            ..Spec::default()
        })
        .collect()
}

/// Returns `text` with item `id` ticked (or unticked), every other byte unchanged; `None` when
/// no item has that id.
pub fn with_ticked(text: &str, id: &str, done: bool) -> Option<String> {
    let item = items(text).into_iter().find(|i| i.id == id)?;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if n == item.line {
            let at = offset + item.mark;
            let mut out = String::with_capacity(text.len());
            out.push_str(&text[..at]);
            out.push(if done { 'x' } else { ' ' });
            out.push_str(&text[at + 1..]);
            return Some(out);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "# Plan\n\n- [x] Set up CI\n- [ ] Parse the config file\n  keep comments\n  - [ ] sub-item stays a detail\n* [ ] Write docs\n- [ ] Write docs\n";

    #[test]
    fn items_are_tasks_in_order() {
        let t = tasks(PLAN, Path::new("fix_plan.md"));
        let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["set-up-ci", "parse-the-config-file", "write-docs", "write-docs-2"]);
        assert_eq!(t[0].status, Status::Done);
        assert_eq!(t[1].body, "# Parse the config file\n\nkeep comments\n- [ ] sub-item stays a detail\n");
        assert_eq!(t[3].order, 3);
    }

    #[test]
    fn ticking_changes_one_character() {
        let done = with_ticked(PLAN, "parse-the-config-file", true).unwrap();
        assert_eq!(done, PLAN.replace("- [ ] Parse", "- [x] Parse"));
        let both = with_ticked(&done, "write-docs", true).unwrap();
        assert!(both.contains("* [x] Write docs\n- [ ] Write docs\n"), "{both}");
        assert_eq!(with_ticked(&done, "parse-the-config-file", false).unwrap(), PLAN);
        assert!(with_ticked(PLAN, "nope", true).is_none());
        let crlf = "- [ ] A\r\n- [ ] B\r\n";
        assert_eq!(with_ticked(crlf, "b", true).unwrap(), "- [ ] A\r\n- [x] B\r\n");
    }
}
