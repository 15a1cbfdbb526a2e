//! snarktank/ralph's `prd.json` as a backlog: each of `userStories` (`id`, `title`,
//! `description`, `acceptanceCriteria`, `priority`, `passes`, `notes`) is a task, done when
//! `passes` is true.
//!
//! Invariant: writing a status changes only the bytes of that story's `passes` value (or adds
//! the key when the story has none); every other byte of the file — formatting, key order,
//! fields ralph does not know — stays as the user (or their tool) wrote it. A story is found
//! again by its id at write time, so edits made to the file since it was read are kept.

use super::spec::{Origin, Spec, Status};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prd {
    #[serde(default)]
    user_stories: Vec<Story>,
}

/// One user story, as the file has it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Story {
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
    pub priority: Option<i64>,
    #[serde(default)]
    pub passes: bool,
    #[serde(default)]
    pub notes: String,
}

/// Why a prd.json cannot be read: a JSON error with its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrdError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Reads the stories.
pub fn stories(text: &str) -> Result<Vec<Story>, PrdError> {
    let prd: Prd = serde_json::from_str(text).map_err(|e| PrdError {
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
    })?;
    Ok(prd.user_stories)
}

/// A story's task id: its `id`, or a slug of its title.
pub fn story_id(s: &Story) -> String {
    s.id.clone().filter(|i| !i.trim().is_empty()).unwrap_or_else(|| super::slug(&s.title))
}

/// A story as a spec body: title, description, acceptance criteria, notes.
pub fn body(s: &Story) -> String {
    let mut body = format!("# {}\n", s.title.trim());
    if !s.description.trim().is_empty() {
        body.push_str(&format!("\n{}\n", s.description.trim()));
    }
    if !s.acceptance_criteria.is_empty() {
        body.push_str("\n## Done when\n\n");
        for c in &s.acceptance_criteria {
            body.push_str(&format!("- {}\n", c.trim()));
        }
    }
    if !s.notes.trim().is_empty() {
        body.push_str(&format!("\n## Notes\n\n{}\n", s.notes.trim()));
    }
    body
}

/// The file's stories as tasks.
pub fn tasks(text: &str, path: &Path) -> Result<Vec<Spec>, PrdError> {
    Ok(stories(text)?
        .iter()
        .enumerate()
        .map(|(i, s)| Spec {
            id: story_id(s),
            path: path.to_path_buf(),
            origin: Origin::Story,
            order: i,
            title: s.title.trim().to_string(),
            status: if s.passes { Status::Done } else { Status::Todo },
            priority: s.priority,
            body: body(s),
            ..Spec::default()
        })
        .collect())
}

/// Returns `text` with the story `id`'s `passes` set, every other byte unchanged; `None` when
/// no story has that id (the user removed it).
pub fn with_passes(text: &str, id: &str, passes: bool) -> Option<String> {
    let index = stories(text).ok()?.iter().position(|s| story_id(s) == id)?;
    let b = text.as_bytes();
    let root = Scan::new(b).object_members(skip_ws(b, 0))?;
    let (_, arr) = root.into_iter().find(|(k, _)| k == "userStories")?;
    let elems = Scan::new(b).array_elements(arr.0)?;
    let (start, end) = *elems.get(index)?;
    let value = if passes { "true" } else { "false" };
    let members = Scan::new(b).object_members(start)?;
    let mut out = String::with_capacity(text.len() + 16);
    if let Some((_, (vs, ve))) = members.iter().find(|(k, _)| k == "passes") {
        out.push_str(&text[..*vs]);
        out.push_str(value);
        out.push_str(&text[*ve..]);
    } else {
        // No `passes` yet: add it before the story's closing brace.
        let close = end - 1;
        let sep = if members.is_empty() { "" } else { ", " };
        out.push_str(text[..close].trim_end());
        out.push_str(&format!("{sep}\"passes\": {value}"));
        out.push_str(&text[text[..close].trim_end().len()..]);
    }
    Some(out)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Just enough of a JSON scanner to find byte spans in a document serde_json already
/// accepted: members of an object and elements of an array, as (start, end) offsets.
struct Scan<'a> {
    b: &'a [u8],
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scan { b }
    }

    /// The end of the value starting at `i` (after leading whitespace).
    fn value_end(&self, i: usize) -> Option<usize> {
        let b = self.b;
        match *b.get(i)? {
            b'"' => self.string_end(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = self.string_end(j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let mut j = i;
                while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace() {
                    j += 1;
                }
                Some(j)
            }
        }
    }

    fn string_end(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        while j < self.b.len() {
            match self.b[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    }

    fn object_members(&self, i: usize) -> Option<Vec<(String, (usize, usize))>> {
        let b = self.b;
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let mut out = Vec::new();
        let mut j = skip_ws(b, i + 1);
        while b.get(j)? != &b'}' {
            let key_end = self.string_end(j)?;
            let key: String = serde_json::from_slice(&b[j..key_end]).ok()?;
            j = skip_ws(b, key_end);
            if b.get(j)? != &b':' {
                return None;
            }
            let vs = skip_ws(b, j + 1);
            let ve = self.value_end(vs)?;
            out.push((key, (vs, ve)));
            j = skip_ws(b, ve);
            if b.get(j)? == &b',' {
                j = skip_ws(b, j + 1);
            }
        }
        Some(out)
    }

    fn array_elements(&self, i: usize) -> Option<Vec<(usize, usize)>> {
        let b = self.b;
        if b.get(i) != Some(&b'[') {
            return None;
        }
        let mut out = Vec::new();
        let mut j = skip_ws(b, i + 1);
        while b.get(j)? != &b']' {
            let end = self.value_end(j)?;
            out.push((j, end));
            j = skip_ws(b, end);
            if b.get(j)? == &b',' {
                j = skip_ws(b, j + 1);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRD: &str = r#"{
  "project": "shop",
  "branchName": "ralph/login",
  "userStories": [
    {
      "id": "US-001",
      "title": "Add login",
      "description": "A login page, with \"quotes\" and {braces}.",
      "acceptanceCriteria": ["Form posts", "Typecheck passes"],
      "priority": 1,
      "passes": false,
      "notes": ""
    },
    { "title": "Log out", "priority": 2 }
  ]
}
"#;

    #[test]
    fn stories_are_tasks() {
        let t = tasks(PRD, Path::new("prd.json")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id.as_str(), t[0].status, t[0].priority), ("US-001", Status::Todo, Some(1)));
        assert!(t[0].body.contains("## Done when\n\n- Form posts\n- Typecheck passes\n"), "{}", t[0].body);
        assert_eq!(t[1].id, "log-out");
        assert_eq!(t[1].origin, Origin::Story);
    }

    #[test]
    fn passes_is_the_only_byte_that_changes() {
        let done = with_passes(PRD, "US-001", true).unwrap();
        assert_eq!(done, PRD.replace("\"passes\": false", "\"passes\": true"));
        let added = with_passes(&done, "log-out", true).unwrap();
        assert!(added.contains(r#"{ "title": "Log out", "priority": 2, "passes": true }"#), "{added}");
        let t = tasks(&added, Path::new("prd.json")).unwrap();
        assert!(t.iter().all(|t| t.status == Status::Done));
        // Back to todo, and a story that is gone.
        assert_eq!(with_passes(&done, "US-001", false).unwrap(), PRD);
        assert!(with_passes(PRD, "US-404", true).is_none());
    }

    #[test]
    fn errors_have_a_line_and_column() {
        let e = stories("{\n  \"userStories\": [}\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.column > 0);
        let e = stories("{\"userStories\": [{\"id\": \"x\"}]}").unwrap_err();
        assert!(e.message.contains("missing field `title`"), "{}", e.message);
    }
}
