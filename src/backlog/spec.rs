//! One spec file: its front matter, its body, and in-place status updates.
//!
//! Front matter is an optional block at the very top of the file between two `---` lines, in a
//! small YAML subset: `key: value` lines, `#` comments, lists as `[a, b]` or as `- item` lines
//! under `key:`. Values may be quoted. `touches` patterns are checked here and compared in
//! [`super::touches`]. Updating the status rewrites only the `status:` (and
//! `blocked_reason:`) lines and leaves every other byte of the file as it was.

use std::path::{Path, PathBuf};

/// A task's state, as written in its front matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Todo,
    Done,
    Blocked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Todo => "todo",
            Status::Done => "done",
            Status::Blocked => "blocked",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        match s {
            "todo" => Some(Status::Todo),
            "done" => Some(Status::Done),
            "blocked" => Some(Status::Blocked),
            _ => None,
        }
    }
}

/// The front matter keys ralph knows; anything else is an error, so typos are caught.
pub const KNOWN_KEYS: &[&str] = &[
    "id",
    "title",
    "status",
    "priority",
    "depends_on",
    "checks",
    "max_attempts",
    "touches",
    "blocked_reason",
    "agent",
];

/// A parse error with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecParseError {
    pub line: usize,
    pub message: String,
}

/// Where a task lives, which decides how its status is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// Its own `specs/*.md` file; the status is in its front matter.
    #[default]
    File,
    /// One of `userStories` in a `prd.json`; the status is its `passes`.
    Story,
    /// One `- [ ]` item of a checklist plan; the status is its box.
    Item,
}

/// A parsed spec.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The file stem, the front matter's `id`, or the story's or item's id.
    pub id: String,
    /// Path relative to the repository root (shared by every task of a prd.json or plan).
    pub path: PathBuf,
    pub origin: Origin,
    /// Position in its file (stories and items): the order among equal priorities.
    pub order: usize,
    pub title: String,
    pub status: Status,
    /// Lower runs first; a task without one runs after all that have one.
    pub priority: Option<i64>,
    pub depends_on: Vec<String>,
    /// The line of `depends_on`, for error messages.
    pub depends_on_line: usize,
    pub blocked_reason: Option<String>,
    /// The task's own acceptance checks, run after the project's.
    pub checks: Vec<String>,
    /// Overrides `[budget] max_attempts` for this task.
    pub max_attempts: Option<u32>,
    /// Glob patterns of the files the task is likely to change, relative to the repository
    /// root (see [`super::touches`]); empty when unset, and always for stories and items.
    pub touches: Vec<String>,
    /// The agent to run this task with first (`agent: codex`): a name `ralph.toml` knows (the
    /// main agent's, a fallback's, an `[agents.NAME]` table's, a preset's), checked against it
    /// before a run starts; its fallbacks follow it.
    pub agent: Option<String>,
    /// The line of `agent`, for error messages.
    pub agent_line: usize,
    /// The file without its front matter.
    pub body: String,
}

/// Parses a spec's text. `id` and `path` come from the file name.
pub fn parse(id: &str, path: &Path, text: &str) -> Result<Spec, SpecParseError> {
    let (fm, body) = split_front_matter(text)?;
    let mut status = Status::Todo;
    let mut priority = None;
    let mut depends_on = Vec::new();
    let mut depends_on_line = 0;
    let mut title = None;
    let mut blocked_reason = None;
    let mut checks = Vec::new();
    let mut max_attempts = None;
    let mut touches = Vec::new();
    let mut agent = None;
    let mut agent_line = 0;
    let mut id_override: Option<String> = None;
    if let Some(fm) = fm {
        for entry in parse_entries(&fm)? {
            let err = |message: String| SpecParseError { line: entry.line, message };
            match entry.key.as_str() {
                "status" => {
                    let v = entry.scalar().map_err(err)?;
                    status = Status::parse(&v).ok_or_else(|| SpecParseError {
                        line: entry.line,
                        message: format!("unknown status `{v}` (expected todo, done or blocked)"),
                    })?;
                }
                "priority" => {
                    let v = entry.scalar().map_err(err)?;
                    priority = Some(v.parse::<i64>().map_err(|_| SpecParseError {
                        line: entry.line,
                        message: format!("priority `{v}` is not a whole number"),
                    })?);
                }
                "depends_on" => {
                    depends_on = entry.list();
                    depends_on_line = entry.line;
                }
                "title" => title = Some(entry.scalar().map_err(err)?),
                "id" => {
                    let v = entry.scalar().map_err(err)?;
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                        return Err(SpecParseError {
                            line: entry.line,
                            message: format!("id `{v}` may hold only letters, digits, `-`, `_` and `.`"),
                        });
                    }
                    id_override = Some(v);
                }
                "max_attempts" => {
                    let v = entry.scalar().map_err(err)?;
                    match v.parse::<u32>() {
                        Ok(n) if n >= 1 => max_attempts = Some(n),
                        _ => {
                            return Err(SpecParseError {
                                line: entry.line,
                                message: format!("max_attempts `{v}` is not a whole number of at least 1"),
                            });
                        }
                    }
                }
                "checks" => {
                    checks = entry.list();
                    if checks.is_empty() {
                        return Err(SpecParseError { line: entry.line, message: "`checks` is empty".into() });
                    }
                }
                "touches" => {
                    // Empty patterns are kept to be refused: `[a, ""]` is a slip, not `[a]`.
                    touches = entry.list_keeping_empty();
                    if touches.is_empty() {
                        return Err(err("`touches` is empty (leave the key out for no constraint)".into()));
                    }
                    for pattern in &touches {
                        super::touches::validate(pattern).map_err(err)?;
                    }
                }
                "blocked_reason" => blocked_reason = Some(entry.scalar().map_err(err)?),
                "agent" => {
                    let v = entry.scalar().map_err(err)?;
                    if v.is_empty() {
                        return Err(err(
                            "`agent` is empty (leave the key out for the configured agent)".into()
                        ));
                    }
                    agent = Some(v);
                    agent_line = entry.line;
                }
                other => {
                    return Err(SpecParseError {
                        line: entry.line,
                        message: format!(
                            "unknown front matter key `{other}` (known: {})",
                            KNOWN_KEYS.join(", ")
                        ),
                    });
                }
            }
        }
    }
    let title = title
        .filter(|t| !t.is_empty())
        .or_else(|| body.lines().find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string())))
        .unwrap_or_else(|| id.to_string());
    Ok(Spec {
        id: id_override.unwrap_or_else(|| id.to_string()),
        path: path.to_path_buf(),
        origin: Origin::File,
        order: 0,
        title,
        status,
        priority,
        depends_on,
        depends_on_line,
        blocked_reason,
        checks,
        max_attempts,
        touches,
        agent,
        agent_line,
        body: body.to_string(),
    })
}

/// Front matter lines (with their 1-based line numbers) and the body.
struct FrontMatter {
    lines: Vec<(usize, String)>,
}

fn split_front_matter(text: &str) -> Result<(Option<FrontMatter>, &str), SpecParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let Some(first) = lines.next() else { return Ok((None, text)) };
    if first.trim_end() != "---" {
        return Ok((None, text));
    }
    let mut offset = first.len();
    let mut fm = Vec::new();
    for (i, line) in lines.enumerate() {
        offset += line.len();
        if line.trim_end() == "---" {
            return Ok((Some(FrontMatter { lines: fm }), &text[offset..]));
        }
        fm.push((i + 2, line.trim_end_matches(['\n', '\r']).to_string()));
    }
    Err(SpecParseError {
        line: 1,
        message: "front matter starts with `---` but has no closing `---` line".into(),
    })
}

struct Entry {
    line: usize,
    key: String,
    value: String,
    items: Vec<String>,
}

impl Entry {
    fn scalar(&self) -> Result<String, String> {
        if !self.items.is_empty() || self.value.starts_with('[') {
            return Err(format!("`{}` takes one value, not a list", self.key));
        }
        Ok(unquote(&self.value))
    }

    fn list(&self) -> Vec<String> {
        self.list_keeping_empty().into_iter().filter(|s| !s.is_empty()).collect()
    }

    /// The list with quoted empty values (`""`, `- ''`) and bare `-` items kept; only the
    /// nothing of `[]` or of a trailing comma is dropped.
    fn list_keeping_empty(&self) -> Vec<String> {
        if !self.items.is_empty() {
            return self.items.iter().map(|s| unquote(s)).collect();
        }
        let v = self.value.trim();
        let inner = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(v);
        inner.split(',').map(str::trim).filter(|s| !s.is_empty()).map(unquote).collect()
    }
}

fn parse_entries(fm: &FrontMatter) -> Result<Vec<Entry>, SpecParseError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (line_no, raw) in &fm.lines {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ").or(if trimmed == "-" { Some("") } else { None }) {
            match entries.last_mut() {
                Some(e) if e.value.is_empty() => {
                    e.items.push(item.trim().to_string());
                    continue;
                }
                _ => {
                    return Err(SpecParseError {
                        line: *line_no,
                        message: "list item `- ...` must follow a `key:` line with no value".into(),
                    });
                }
            }
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(SpecParseError {
                line: *line_no,
                message: format!("expected `key: value`, found `{trimmed}`"),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) || line.starts_with(char::is_whitespace) {
            return Err(SpecParseError {
                line: *line_no,
                message: format!("expected `key: value`, found `{trimmed}`"),
            });
        }
        if entries.iter().any(|e| e.key == key) {
            return Err(SpecParseError { line: *line_no, message: format!("`{key}` is set twice") });
        }
        entries.push(Entry {
            line: *line_no,
            key: key.to_string(),
            value: strip_comment(value.trim()).to_string(),
            items: Vec::new(),
        });
    }
    Ok(entries)
}

fn strip_comment(v: &str) -> &str {
    if v.starts_with('"') || v.starts_with('\'') {
        return v;
    }
    match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None => v,
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.replace("\\\"", "\"");
        }
    }
    s.to_string()
}

/// A stable fingerprint of a spec's body (FNV-1a over the trimmed text): the same text gives
/// the same value on every machine and ralph version.
pub fn fingerprint(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.trim().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Returns `text` with its front matter's `status` set (and `blocked_reason` set or removed),
/// every other line unchanged. Adds a front matter block when the file has none.
pub fn with_status(text: &str, status: Status, blocked_reason: Option<&str>) -> String {
    let reason_line = blocked_reason.map(|r| {
        let one_line: String = r.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("blocked_reason: \"{}\"", one_line.replace('"', "'"))
    });
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let has_fm = text.lines().next().is_some_and(|l| l.trim_end() == "---")
        && text.lines().skip(1).any(|l| l.trim_end() == "---");
    if !has_fm {
        let mut out = format!("---{nl}status: {}{nl}", status.as_str());
        if let Some(r) = &reason_line {
            out.push_str(r);
            out.push_str(nl);
        }
        out.push_str("---");
        out.push_str(nl);
        out.push_str(text);
        return out;
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut in_fm = false;
    let mut closed = false;
    let mut wrote_status = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if i == 0 {
            in_fm = true;
            out.push_str(line);
            continue;
        }
        if in_fm && !closed {
            if bare == "---" {
                if !wrote_status {
                    out.push_str(&format!("status: {}{nl}", status.as_str()));
                }
                if let Some(r) = &reason_line {
                    out.push_str(r);
                    out.push_str(nl);
                }
                closed = true;
                out.push_str(line);
                continue;
            }
            if bare.starts_with("status:") {
                out.push_str(&format!("status: {}{nl}", status.as_str()));
                wrote_status = true;
                continue;
            }
            if bare.starts_with("blocked_reason:") {
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Spec, SpecParseError> {
        parse("010-x", Path::new("specs/010-x.md"), text)
    }

    #[test]
    fn the_agent_key_names_the_task_s_agent_and_its_line() {
        let s = p("---\nstatus: todo\nagent: codex\n---\n# X\n").unwrap();
        assert_eq!((s.agent.as_deref(), s.agent_line), (Some("codex"), 3));
        assert_eq!(p("# X\n").unwrap().agent, None);
        let e = p("---\nagent: \"\"\n---\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`agent` is empty"), "{e:?}");
        assert!(p("---\nagent: [a, b]\n---\n").unwrap_err().message.contains("takes one value"));
    }

    #[test]
    fn no_front_matter_is_a_todo_titled_by_its_heading() {
        let s = p("# Add login\n\nBody.\n").unwrap();
        assert_eq!(s.status, Status::Todo);
        assert_eq!(s.title, "Add login");
        assert_eq!(s.body, "# Add login\n\nBody.\n");
    }

    #[test]
    fn front_matter_fields() {
        let s = p("---\nstatus: done\npriority: 2 # soon\ndepends_on: [a, \"b\"]\n---\n# T\n").unwrap();
        assert_eq!(s.status, Status::Done);
        assert_eq!(s.priority, Some(2));
        assert_eq!(s.depends_on, vec!["a", "b"]);
        assert_eq!(s.depends_on_line, 4);
        assert_eq!(s.body, "# T\n");

        let s = p("---\ndepends_on:\n  - a\n  - b\n---\n").unwrap();
        assert_eq!(s.depends_on, vec!["a", "b"]);
    }

    #[test]
    fn a_task_names_its_own_checks() {
        let s = p("---\nchecks:\n  - cargo test -p parser\n  - \"./check-docs.sh\"\n---\n").unwrap();
        assert_eq!(s.checks, vec!["cargo test -p parser", "./check-docs.sh"]);
        assert_eq!(p("---\nchecks: []\n---\n").unwrap_err().line, 2);
    }

    #[test]
    fn touches_is_a_list_of_patterns() {
        let s = p("---\ntouches: [src/parser/**, \"Cargo.toml\"]\n---\n").unwrap();
        assert_eq!(s.touches, vec!["src/parser/**", "Cargo.toml"]);
        let s = p("---\ntouches:\n  - src/*.rs\n  - 'docs/**'\n---\n").unwrap();
        assert_eq!(s.touches, vec!["src/*.rs", "docs/**"]);
        let s = p("---\ntouches: [a/**,]\n---\n").unwrap();
        assert_eq!(s.touches, vec!["a/**"]);
        assert!(p("---\nstatus: todo\n---\n").unwrap().touches.is_empty());
    }

    #[test]
    fn bad_touches_name_their_line() {
        let bad = |text: &str, line: usize, says: &str| {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(says), "{text:?}: {e:?}");
        };
        bad("---\ntouches: []\n---\n", 2, "empty");
        bad("---\nstatus: todo\ntouches:\n---\n", 3, "empty");
        bad("---\n\ntouches: [src/**, \"\"]\n---\n", 3, "empty pattern");
        bad("---\ntouches:\n  - src/**\n  -\n---\n", 2, "empty pattern");
        bad("---\ntouches: [/etc/passwd]\n---\n", 2, "absolute");
        bad("---\nid: a\ntouches: [src/**, ../other/**]\n---\n", 3, "`..`");
        bad("---\ntouches: [src/../../x]\n---\n", 2, "`..`");
        bad("---\ntouches: x\ntouches: y\n---\n", 3, "twice");
    }

    #[test]
    fn id_and_max_attempts() {
        let s = p("---\nid: login\nmax_attempts: 5\n---\n").unwrap();
        assert_eq!(s.id, "login");
        assert_eq!(s.max_attempts, Some(5));
        assert_eq!(p("---\nmax_attempts: 0\n---\n").unwrap_err().line, 2);
        assert_eq!(p("---\n\nid: a b\n---\n").unwrap_err().line, 3);
    }

    #[test]
    fn errors_carry_the_line() {
        assert_eq!(p("---\nstatus: doing\n---\n").unwrap_err().line, 2);
        assert_eq!(p("---\n\npriority: high\n---\n").unwrap_err().line, 3);
        assert_eq!(p("---\nstatus todo\n---\n").unwrap_err().line, 2);
        assert_eq!(p("---\nowner: me\n---\n").unwrap_err().line, 2);
        let e = p("---\nstatus: todo\n");
        assert!(e.unwrap_err().message.contains("no closing"));
    }

    #[test]
    fn status_update_keeps_everything_else() {
        let text = "---\npriority: 1\nstatus: todo\n---\n# T\n\n---\nnot front matter\n";
        let out = with_status(text, Status::Done, None);
        assert_eq!(out, "---\npriority: 1\nstatus: done\n---\n# T\n\n---\nnot front matter\n");
        let blocked = with_status(&out, Status::Blocked, Some("3 failed\nattempts"));
        assert_eq!(
            blocked,
            "---\npriority: 1\nstatus: blocked\nblocked_reason: \"3 failed attempts\"\n---\n# T\n\n---\nnot front matter\n"
        );
        let back = with_status(&blocked, Status::Todo, None);
        assert_eq!(back, "---\npriority: 1\nstatus: todo\n---\n# T\n\n---\nnot front matter\n");
        let s = p(&blocked).unwrap();
        assert_eq!(s.blocked_reason.as_deref(), Some("3 failed attempts"));
    }

    #[test]
    fn status_update_adds_front_matter() {
        let out = with_status("# T\n", Status::Done, None);
        assert_eq!(out, "---\nstatus: done\n---\n# T\n");
        assert_eq!(p(&out).unwrap().status, Status::Done);
    }
}
