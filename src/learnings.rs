//! Learnings: what an agent reports inside `<learning>...</learning>` is kept in AGENTS.md
//! under a `## Learnings` section, one bullet per entry tagged with its task:
//! `- [010-add-login] Run the migrations before the tests.`
//!
//! Invariants: entries are deduplicated (case, spacing and a final full stop do not make a new
//! entry); secrets are masked; everything outside the section is left byte for byte; writes
//! are atomic. Learnings are kept even when the iteration's code is reverted.

use crate::secrets::Secrets;
use crate::state::{StateError, atomic_write};
use std::path::Path;

/// The file learnings go to, at the repository root.
pub const AGENTS_MD: &str = "AGENTS.md";
/// The section heading.
pub const HEADING: &str = "## Learnings";
/// Longest entry kept; longer ones are cut with an ellipsis.
pub const MAX_ENTRY_CHARS: usize = 500;

fn key(text: &str) -> String {
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    t.trim_end_matches(['.', '!', ';']).to_string()
}

/// The entry text of a bullet line, without its `- [task] ` prefix.
fn entry_text(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("- ")?;
    if let Some(after) = rest.strip_prefix('[')
        && let Some(i) = after.find("] ")
    {
        return Some(&after[i + 2..]);
    }
    Some(rest)
}

/// Returns the new file text and the entries actually added.
pub fn merge(existing: &str, task: &str, learnings: &[String], secrets: &Secrets) -> (String, Vec<String>) {
    let lines: Vec<&str> = existing.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == HEADING);
    let end = start.map(|s| {
        lines[s + 1..]
            .iter()
            .position(|l| l.starts_with("# ") || l.starts_with("## "))
            .map_or(lines.len(), |i| s + 1 + i)
    });
    let mut seen: Vec<String> = match (start, end) {
        (Some(s), Some(e)) => lines[s + 1..e].iter().filter_map(|l| entry_text(l)).map(key).collect(),
        _ => Vec::new(),
    };
    let mut added = Vec::new();
    for l in learnings {
        let mut text = secrets.mask(&l.split_whitespace().collect::<Vec<_>>().join(" "));
        if text.chars().count() > MAX_ENTRY_CHARS {
            text = text.chars().take(MAX_ENTRY_CHARS).collect::<String>() + "…";
        }
        let k = key(&text);
        if k.is_empty() || seen.contains(&k) {
            continue;
        }
        seen.push(k);
        added.push(text);
    }
    if added.is_empty() {
        return (existing.to_string(), added);
    }
    let bullets: Vec<String> = added.iter().map(|t| format!("- [{task}] {t}")).collect();
    let out = match (start, end) {
        (Some(_), Some(e)) => {
            // Insert after the section's last non-blank line.
            let mut insert_at = e;
            while insert_at > 0
                && lines[insert_at - 1].trim().is_empty()
                && insert_at - 1 > start.unwrap_or(0)
            {
                insert_at -= 1;
            }
            let mut v: Vec<String> = lines[..insert_at].iter().map(|s| s.to_string()).collect();
            if insert_at == start.unwrap_or(0) + 1 {
                v.push(String::new());
            }
            v.extend(bullets);
            if insert_at < lines.len() {
                v.push(String::new());
                v.extend(
                    lines[insert_at..].iter().skip_while(|l| l.trim().is_empty()).map(|s| s.to_string()),
                );
            }
            v.join("\n") + "\n"
        }
        _ => {
            let mut s = existing.trim_end().to_string();
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            s.push_str(HEADING);
            s.push_str("\n\n");
            s.push_str(&bullets.join("\n"));
            s.push('\n');
            s
        }
    };
    (out, added)
}

/// Adds `learnings` from `task` to `root/AGENTS.md`; returns the entries added.
pub fn record(
    root: &Path,
    task: &str,
    learnings: &[String],
    secrets: &Secrets,
) -> Result<Vec<String>, StateError> {
    if learnings.is_empty() {
        return Ok(Vec::new());
    }
    let path = root.join(AGENTS_MD);
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let (text, added) = merge(&existing, task, learnings, secrets);
    if !added.is_empty() {
        atomic_write(&path, text.as_bytes())?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(existing: &str, new: &[&str]) -> (String, Vec<String>) {
        let new: Vec<String> = new.iter().map(|s| s.to_string()).collect();
        merge(existing, "t1", &new, &Secrets::default())
    }

    #[test]
    fn creates_the_section_and_keeps_the_rest() {
        let (out, added) = m("# Project\n\nRules.\n", &["Use make."]);
        assert_eq!(out, "# Project\n\nRules.\n\n## Learnings\n\n- [t1] Use make.\n");
        assert_eq!(added, vec!["Use make."]);
    }

    #[test]
    fn appends_inside_the_section_before_the_next_heading() {
        let existing = "# P\n\n## Learnings\n\n- [t0] Old one.\n\n## Other\n\nText.\n";
        let (out, _) = m(existing, &["New one"]);
        assert_eq!(out, "# P\n\n## Learnings\n\n- [t0] Old one.\n- [t1] New one\n\n## Other\n\nText.\n");
    }

    #[test]
    fn duplicates_are_dropped() {
        let existing = "## Learnings\n\n- [t0] Run   make gen first.\n";
        let (out, added) = m(existing, &["run make gen first", "Other", "other."]);
        assert_eq!(added, vec!["Other"]);
        assert_eq!(out, "## Learnings\n\n- [t0] Run   make gen first.\n- [t1] Other\n");
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secrets::from_vars([("API_KEY", "sk-secret-value")]);
        let (out, _) = merge("", "t", &["key is sk-secret-value".into()], &s);
        assert!(!out.contains("sk-secret-value"));
        assert!(out.contains("[MASKED]"));
    }
}
