//! Learnings: what the loop learns, kept so that each fresh context starts smarter, governed so
//! that AGENTS.md does not bloat or teach the wrong thing.
//!
//! The store (`.ralph/learnings.json`) holds every entry with its provenance (task, iteration,
//! run, agent, model, the failure that taught it, the commit) and a count of how often it was
//! learned again. AGENTS.md shows a bounded view of it: the active entries, most confirmed
//! first, within `[learnings] max_bytes`, between two markers under `## Learnings`. Agents
//! propose (`<learning>`, `<learning update="L3">`, `<learning retire="L3">`); they never edit
//! the section (ralph renders it again every time).
//!
//! Admission: near-duplicates merge into the existing entry (its count goes up); rejected, with
//! the reason: entries over the length limit, anything that looks like a secret, advice to
//! weaken the judge (skip or delete tests, `--no-verify`, edit CI or ralph.toml), long copies
//! of the task's spec. At most [`MAX_PROPOSALS`] proposals are taken from one iteration; the
//! rest are rejected as a count, their texts not kept. Admission costs a pass over the store
//! per proposal, with each entry's words computed once. With `require_review`, new entries wait (`pending`) until a person
//! reviews them (`ralph learnings review ID`).

use crate::agent::scan::Findings;
use crate::secrets::Secrets;
use crate::state::{RALPH_DIR, StateError, atomic_write, replace};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The file learnings are shown in, at the repository root.
pub const AGENTS_MD: &str = "AGENTS.md";
/// The section heading.
pub const HEADING: &str = "## Learnings";
/// The markers around the rendered entries.
pub const START: &str =
    "<!-- ralph:learnings:start — rendered from .ralph/learnings.json; change with `ralph learnings` -->";
pub const END: &str = "<!-- ralph:learnings:end -->";
const START_PREFIX: &str = "<!-- ralph:learnings:start";

/// Counted in `agent::scan`, which stops taking proposals there.
pub use crate::agent::scan::MAX_PROPOSALS;

/// The reason given for the proposals past [`MAX_PROPOSALS`].
pub const TOO_MANY: &str = "too many learnings in one iteration";

/// `[learnings]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The most AGENTS.md shows of the store, in bytes.
    pub max_bytes: usize,
    /// The longest entry admitted, in characters.
    pub max_entry_chars: usize,
    /// New entries wait for `ralph learnings review` before they reach AGENTS.md.
    pub require_review: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { max_bytes: 4000, max_entry_chars: 300, require_review: false }
    }
}

/// An entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    Active,
    /// Waiting for review (`require_review`).
    Pending,
    Retired,
}

/// One learning and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub text: String,
    pub status: EntryStatus,
    pub reviewed: bool,
    /// How many times it was learned (a near-duplicate adds one).
    pub count: u32,
    pub task: String,
    pub run_id: String,
    pub iteration: u32,
    pub agent: String,
    pub model: Option<String>,
    /// The first line of the failure the iteration hit, if it failed.
    pub failure: Option<String>,
    /// The commit that carried it into AGENTS.md.
    pub commit: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub retired_reason: Option<String>,
}

/// Where a proposal came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub task: String,
    pub run_id: String,
    pub iteration: u32,
    pub agent: String,
    pub model: Option<String>,
    pub failure: Option<String>,
}

impl Provenance {
    /// An iteration's proposals, as its record tells: the agent that ran it (a fallback's name,
    /// else `agent`'s), the model it said it ran, the first line of its failure.
    pub fn of(agent: &crate::agent::AgentConfig, rec: &crate::record::IterationRecord, run_id: &str) -> Self {
        Provenance {
            task: rec.task.clone(),
            run_id: run_id.to_string(),
            iteration: rec.iteration,
            agent: rec.agent.clone().unwrap_or_else(|| agent.name.clone()),
            // The model asked for, when the agent did not say: only if it is that agent's.
            model: rec.model.clone().or_else(|| {
                agent.model.clone().filter(|_| rec.agent.as_deref().is_none_or(|a| a == agent.name))
            }),
            failure: rec.failure.as_deref().and_then(|f| f.lines().next()).map(str::to_string),
        }
    }
}

/// A proposal that was not admitted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub text: String,
    pub reason: String,
}

/// What one iteration's proposals did to the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admitted {
    /// Texts of new entries.
    pub added: Vec<String>,
    /// Ids whose count went up (near-duplicates).
    pub merged: Vec<String>,
    pub updated: Vec<String>,
    pub retired: Vec<String>,
    pub rejected: Vec<Rejected>,
}

impl Admitted {
    /// Whether the store changed.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty()
            && self.merged.is_empty()
            && self.updated.is_empty()
            && self.retired.is_empty())
    }
}

/// The store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Store {
    pub entries: Vec<Entry>,
    #[serde(default)]
    pub next_id: u32,
    /// What people did with `ralph learnings remove` and `review`, oldest first: kept so that
    /// `ralph stats` counts removals and tells their commits from a person's. Absent in stores
    /// written before it was added (their removals are the entries retired "removed by hand").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_hand: Vec<ByHand>,
}

/// What `ralph learnings remove` or `review` did to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandAction {
    Remove,
    Review,
}

/// One `ralph learnings remove` or `review`: which entry, when, and the commit of AGENTS.md it
/// made (on `parent`), if it made one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByHand {
    pub action: HandAction,
    pub id: String,
    /// RFC 3339.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<crate::state::OwnCommit>,
}

/// The reason `ralph learnings remove` gives an entry it retires.
pub const REMOVED_BY_HAND: &str = "removed by hand";

fn store_path(root: &Path) -> PathBuf {
    root.join(RALPH_DIR).join("learnings.json")
}

/// Lower-case words, for comparing entries.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '_' && c != '-')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Near-duplicates: the same words, or word sets that overlap by 80% (Jaccard).
fn similar(wa: &BTreeSet<String>, wb: &BTreeSet<String>) -> bool {
    if wa.is_empty() || wb.is_empty() {
        return false;
    }
    let common = wa.intersection(wb).count() as f64;
    let all = (wa.len() + wb.len()) as f64 - common;
    common / all >= 0.8
}

/// Advice that would weaken the judge. Matched on lower-case text.
const WEAKENING: &[&str] = &[
    "skip the test",
    "skip tests",
    "skip test",
    "skip failing",
    "delete the test",
    "delete tests",
    "delete failing",
    "remove the test",
    "remove tests",
    "remove failing test",
    "disable the test",
    "disable tests",
    "comment out the test",
    "comment out tests",
    "#[ignore]",
    "@pytest.mark.skip",
    "pytest.skip",
    "it.skip",
    "test.skip",
    "describe.skip",
    "xit(",
    "t.skip(",
    "--no-verify",
    "edit ci",
    "edit the ci",
    "change the ci",
    ".github/workflows",
    ".gitlab-ci",
    "ralph.toml",
    "lower the coverage",
    "loosen the assert",
    "weaken the assert",
];

/// Token prefixes of the common credential formats.
const TOKEN_PREFIXES: &[&str] = &["sk-", "ghp_", "gho_", "github_pat_", "xox", "AKIA", "AIza", "glpat-"];

/// Whether one word (its punctuation trimmed) looks like a credential: a long random-looking
/// token, a credential format's prefix with enough after it (a token's first 20 characters
/// are as much a leak as the whole), or a long enough piece of a known secret.
fn token_like(w: &str, secrets: &Secrets) -> bool {
    let long_token = w.len() >= 32
        && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_+/=".contains(c))
        && w.chars().any(|c| c.is_ascii_digit())
        && w.chars().any(|c| c.is_ascii_alphabetic());
    long_token || (w.len() >= 16 && TOKEN_PREFIXES.iter().any(|p| w.starts_with(p))) || secrets.holds_part(w)
}

fn word_core(w: &str) -> &str {
    w.trim_matches(|c: char| !c.is_alphanumeric())
}

/// Whether a text looks like it carries a credential.
fn looks_secret(text: &str, secrets: &Secrets) -> bool {
    secrets.mask(text) != text || text.split_whitespace().any(|w| token_like(word_core(w), secrets))
}

/// `text` with every credential in it masked: the known secrets and every word that
/// [`looks_secret`] would catch, so a rejected proposal keeps no part of one in the record.
fn redact(text: &str, secrets: &Secrets) -> String {
    let masked = secrets.mask(text);
    let mut out = String::with_capacity(masked.len());
    let mut rest = masked.as_str();
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        let core = word_core(word);
        if !core.is_empty() && token_like(core, secrets) {
            out.push_str(&word.replacen(core, crate::secrets::MASK, 1));
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out
}

/// Whether `text` copies a long run (over 60 characters) of `spec` word for word.
fn copies(text: &str, spec: &str) -> bool {
    const RUN: usize = 60;
    let t: String = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let s: String = spec.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    if t.len() < RUN {
        return false;
    }
    let chars: Vec<char> = t.chars().collect();
    (0..=chars.len() - RUN).step_by(10).any(|i| s.contains(&chars[i..i + RUN].iter().collect::<String>()))
}

impl Store {
    /// Reads the store. Without one, entries already in AGENTS.md's `## Learnings` (written by
    /// an older ralph or by hand) are taken in, so nothing is lost.
    pub fn load(root: &Path) -> Result<Store, StateError> {
        match crate::state::load_json(&store_path(root))? {
            Some(store) => Ok(store),
            None => {
                let text = crate::fsx::read_input_following(&root.join(AGENTS_MD)).unwrap_or_default();
                Ok(Store::import(&text))
            }
        }
    }

    fn import(agents_md: &str) -> Store {
        let mut store = Store::default();
        let now = crate::logs::now_rfc3339();
        let mut in_section = false;
        for line in agents_md.lines() {
            if line.trim_end() == HEADING {
                in_section = true;
                continue;
            }
            if in_section && (line.starts_with("# ") || line.starts_with("## ")) {
                break;
            }
            let Some(rest) = line.strip_prefix("- ").filter(|_| in_section) else { continue };
            // "- [task] text" (older ralph) or "- [L3] text (task)" (this one) or "- text".
            let (tag, text) = match rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
                Some((tag, text)) => (tag.to_string(), text.to_string()),
                None => (String::new(), rest.to_string()),
            };
            let (text, task) = match text.rsplit_once(" (") {
                Some((t, task)) if task.ends_with(')') && !task.contains(' ') => {
                    (t.to_string(), task.trim_end_matches(')').to_string())
                }
                _ => (
                    text,
                    if tag.starts_with('L') && tag[1..].chars().all(|c| c.is_ascii_digit()) {
                        String::new()
                    } else {
                        tag
                    },
                ),
            };
            store.next_id += 1;
            store.entries.push(Entry {
                id: format!("L{}", store.next_id),
                text,
                status: EntryStatus::Active,
                reviewed: false,
                count: 1,
                task,
                run_id: String::new(),
                iteration: 0,
                agent: "imported from AGENTS.md".into(),
                model: None,
                failure: None,
                commit: None,
                created_at: now.clone(),
                updated_at: now.clone(),
                retired_reason: None,
            });
        }
        store
    }

    /// A store kept somewhere other than `.ralph/` (the remote workers' store ref): its JSON,
    /// or, when there is none yet, the entries AGENTS.md already shows (as [`Store::load`]).
    pub fn from_bytes(bytes: Option<&[u8]>, agents_md: &str) -> Result<Store, serde_json::Error> {
        match bytes {
            Some(b) => serde_json::from_slice(b),
            None => Ok(Store::import(agents_md)),
        }
    }

    /// The store as [`Store::save`] writes it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// Writes the store atomically.
    pub fn save(&self, root: &Path) -> Result<(), StateError> {
        let path = store_path(root);
        let bytes = self
            .to_bytes()
            .map_err(|e| StateError::Corrupt { path: path.clone(), message: e.to_string() })?;
        replace(&path, &bytes)
    }

    /// The learnings removed by hand, with when: the store's record of them, and for a store
    /// written before it kept one, the entries retired "removed by hand" (at their last update).
    pub fn removals(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .by_hand
            .iter()
            .filter(|h| h.action == HandAction::Remove)
            .map(|h| (h.id.as_str(), h.at.as_str()))
            .collect();
        for e in &self.entries {
            if e.status == EntryStatus::Retired
                && e.retired_reason.as_deref() == Some(REMOVED_BY_HAND)
                && !out.iter().any(|(id, _)| *id == e.id)
            {
                out.push((&e.id, &e.updated_at));
            }
        }
        out
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id.eq_ignore_ascii_case(id))
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id.eq_ignore_ascii_case(id))
    }

    /// Takes in an iteration's proposals.
    pub fn admit(
        &mut self,
        f: &Findings,
        prov: &Provenance,
        spec: &str,
        secrets: &Secrets,
        cfg: &Settings,
    ) -> Admitted {
        let mut out = Admitted::default();
        let now = crate::logs::now_rfc3339();
        // The secret test comes first: a proposal that holds one is reported as such whatever
        // else is wrong with it.
        let check = |text: &str| -> Option<String> {
            if looks_secret(text, secrets) {
                return Some("looks like it holds a secret".into());
            }
            if text.chars().count() > cfg.max_entry_chars {
                return Some(format!("longer than {} characters", cfg.max_entry_chars));
            }
            let lower = text.to_lowercase();
            if let Some(p) = WEAKENING.iter().find(|p| lower.contains(*p)) {
                return Some(format!("tells future agents to weaken the checks (`{p}`)"));
            }
            if copies(text, spec) {
                return Some("copies the task's spec".into());
            }
            None
        };
        // Each entry's words once, not once per proposal; an identical word set is found by
        // hashing, a near one by one pass over the sets.
        let mut sets: Vec<(usize, BTreeSet<String>)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status != EntryStatus::Retired)
            .map(|(i, e)| (i, words(&e.text)))
            .collect();
        let mut exact: HashMap<BTreeSet<String>, usize> = HashMap::new();
        for (i, w) in sets.iter().rev() {
            if !w.is_empty() {
                exact.insert(w.clone(), *i);
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut taken = 0;
        let mut over = f.learnings_over_cap;
        for text in &f.learnings {
            let text = text.trim();
            if !seen.insert(text) {
                continue;
            }
            if taken == MAX_PROPOSALS {
                over += 1;
                continue;
            }
            taken += 1;
            if let Some(reason) = check(text) {
                out.rejected.push(Rejected { text: redact(text, secrets), reason });
                continue;
            }
            let w = words(text);
            let like =
                exact.get(&w).copied().or_else(|| sets.iter().find(|(_, s)| similar(s, &w)).map(|(i, _)| *i));
            if let Some(i) = like {
                let e = &mut self.entries[i];
                e.count += 1;
                e.updated_at = now.clone();
                out.merged.push(e.id.clone());
                continue;
            }
            self.next_id += 1;
            let status = if cfg.require_review { EntryStatus::Pending } else { EntryStatus::Active };
            self.entries.push(Entry {
                id: format!("L{}", self.next_id),
                text: text.to_string(),
                status,
                reviewed: false,
                count: 1,
                task: prov.task.clone(),
                run_id: prov.run_id.clone(),
                iteration: prov.iteration,
                agent: prov.agent.clone(),
                model: prov.model.clone(),
                failure: prov.failure.as_ref().map(|f| secrets.mask(f)),
                commit: None,
                created_at: now.clone(),
                updated_at: now.clone(),
                retired_reason: None,
            });
            out.added.push(text.to_string());
            let i = self.entries.len() - 1;
            if !w.is_empty() {
                exact.entry(w.clone()).or_insert(i);
            }
            sets.push((i, w));
        }
        for (id, text) in &f.learning_updates {
            if taken == MAX_PROPOSALS {
                over += 1;
                continue;
            }
            taken += 1;
            if let Some(reason) = check(text) {
                out.rejected.push(Rejected { text: redact(text, secrets), reason });
                continue;
            }
            match self.get_mut(id) {
                Some(e) if e.status != EntryStatus::Retired => {
                    e.text = text.trim().to_string();
                    e.updated_at = now.clone();
                    if cfg.require_review {
                        e.status = EntryStatus::Pending;
                        e.reviewed = false;
                    }
                    out.updated.push(e.id.clone());
                }
                _ => out.rejected.push(Rejected {
                    text: redact(text, secrets),
                    reason: format!("no active learning {id} to update"),
                }),
            }
        }
        for (id, reason) in &f.learning_retirements {
            if taken == MAX_PROPOSALS {
                over += 1;
                continue;
            }
            taken += 1;
            match self.get_mut(id) {
                Some(e) if e.status != EntryStatus::Retired => {
                    e.status = EntryStatus::Retired;
                    e.retired_reason = Some(format!(
                        "retired by the agent in {} iteration {}: {reason}",
                        prov.task, prov.iteration
                    ));
                    e.updated_at = now.clone();
                    out.retired.push(e.id.clone());
                }
                _ => out.rejected.push(Rejected {
                    text: redact(reason, secrets),
                    reason: format!("no active learning {id} to retire"),
                }),
            }
        }
        if over > 0 {
            out.rejected.push(Rejected {
                text: format!("{over} more proposals, not read"),
                reason: format!("{TOO_MANY} (at most {MAX_PROPOSALS} are taken)"),
            });
        }
        out
    }

    /// Notes the commit that carried these entries.
    pub fn set_commit(&mut self, texts: &[String], commit: &str) {
        for e in self.entries.iter_mut().filter(|e| e.commit.is_none() && texts.contains(&e.text)) {
            e.commit = Some(commit.to_string());
        }
    }

    /// The entries AGENTS.md shows, in order: active ones, most confirmed first, then newest.
    fn shown(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.iter().filter(|e| e.status == EntryStatus::Active).collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.updated_at.cmp(&a.updated_at)).then(a.id.cmp(&b.id)));
        v
    }

    /// The section's body: the bullets within the size cap, and a note of what did not fit.
    fn render_block(&self, cfg: &Settings) -> String {
        let mut out = String::new();
        let shown = self.shown();
        let mut left = shown.len();
        for e in &shown {
            let task = if e.task.is_empty() { String::new() } else { format!(" ({})", e.task) };
            let line = format!("- [{}] {}{task}\n", e.id, e.text);
            if out.len() + line.len() > cfg.max_bytes {
                break;
            }
            out.push_str(&line);
            left -= 1;
        }
        if left > 0 {
            out.push_str(&format!("- ({left} more in `ralph learnings`: fewer confirmations)\n"));
        }
        out
    }

    /// `agents_md` with the section rendered from the store; every other byte kept.
    pub fn render(&self, agents_md: &str, cfg: &Settings) -> String {
        let block = format!("{START}\n{}{END}\n", self.render_block(cfg));
        let lines: Vec<&str> = agents_md.split_inclusive('\n').collect();
        let heading = lines.iter().position(|l| l.trim_end() == HEADING);
        let Some(h) = heading else {
            if self.shown().is_empty() {
                return agents_md.to_string();
            }
            let mut s = agents_md.trim_end().to_string();
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            return format!("{s}{HEADING}\n\n{block}");
        };
        // The section runs to the next heading (or to the end marker, if one is there).
        let end = lines[h + 1..]
            .iter()
            .position(|l| l.starts_with("# ") || l.starts_with("## "))
            .map_or(lines.len(), |i| h + 1 + i);
        let body = &lines[h + 1..end];
        let start_marker = body.iter().position(|l| l.starts_with(START_PREFIX));
        let end_marker = body.iter().position(|l| l.trim_end() == END);
        let (keep_before, keep_after): (Vec<&str>, Vec<&str>) = match (start_marker, end_marker) {
            // Text the user wrote around the markers stays.
            (Some(a), Some(b)) if a < b => (body[..a].to_vec(), body[b + 1..].to_vec()),
            // No markers yet: the section's old bullets are in the store (imported).
            _ => (body.iter().copied().filter(|l| !l.starts_with("- ")).collect(), Vec::new()),
        };
        let mut out: String = lines[..=h].concat();
        let before: String = keep_before.concat();
        let before = before.trim_end();
        out.push('\n');
        if !before.trim().is_empty() {
            out.push_str(before.trim_start_matches('\n'));
            out.push_str("\n\n");
        }
        out.push_str(&block);
        let after: String = keep_after.concat();
        if !after.trim().is_empty() {
            out.push_str(&after);
        }
        if end < lines.len() {
            out.push('\n');
            out.push_str(&lines[end..].concat());
        }
        out
    }
}

/// Renders the store into `root/AGENTS.md`; returns whether the file changed.
pub fn write_agents_md(
    root: &Path,
    store: &Store,
    cfg: &Settings,
    secrets: &crate::secrets::Secrets,
) -> Result<bool, StateError> {
    let path = root.join(AGENTS_MD);
    // What cannot be read (too large, not a file) is not rewritten from nothing.
    let old = match crate::fsx::read_input_following(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    // The whole file masked, not only ralph's section: an agent may have written a secret from
    // its environment into it, and AGENTS.md is committed and read by every later agent.
    let new = secrets.mask(&store.render(&old, cfg));
    if new == old {
        return Ok(false);
    }
    atomic_write(&path, new.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(adds: &[&str]) -> Findings {
        Findings { learnings: adds.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn removals_by_hand_are_kept_and_read_from_old_stores_too() {
        // A store written before `by_hand`: L1 removed by hand, L2 retired by an agent.
        let old = r#"{"entries":[
            {"id":"L1","text":"a","status":"retired","reviewed":false,"count":1,"task":"t","run_id":"r","iteration":1,"agent":"x","model":null,"failure":null,"commit":null,"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-02T00:00:00.000Z","retired_reason":"removed by hand"},
            {"id":"L2","text":"b","status":"retired","reviewed":false,"count":1,"task":"t","run_id":"r","iteration":1,"agent":"x","model":null,"failure":null,"commit":null,"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-03T00:00:00.000Z","retired_reason":"retired by the agent in t iteration 2: stale"},
            {"id":"L3","text":"c","status":"active","reviewed":false,"count":1,"task":"t","run_id":"r","iteration":1,"agent":"x","model":null,"failure":null,"commit":null,"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}
        ],"next_id":3}"#;
        let mut store: Store = serde_json::from_str(old).unwrap();
        assert_eq!(store.removals(), [("L1", "2026-01-02T00:00:00.000Z")]);
        // Nothing by hand yet: the file stays as an older ralph wrote it.
        assert!(!serde_json::to_string(&store).unwrap().contains("by_hand"));
        // Removed now, with its trace: counted once, at the trace's time.
        store.entries[2].status = EntryStatus::Retired;
        store.entries[2].retired_reason = Some(REMOVED_BY_HAND.into());
        store.by_hand.push(ByHand {
            action: HandAction::Remove,
            id: "L3".into(),
            at: "2026-01-05T00:00:00.000Z".into(),
            commit: Some(crate::state::OwnCommit { commit: "c2".into(), parent: "c1".into() }),
        });
        store.by_hand.push(ByHand {
            action: HandAction::Review,
            id: "L1".into(),
            at: "2026-01-06T00:00:00.000Z".into(),
            commit: None,
        });
        let again: Store = serde_json::from_str(&serde_json::to_string(&store).unwrap()).unwrap();
        assert_eq!(
            again.removals(),
            [("L3", "2026-01-05T00:00:00.000Z"), ("L1", "2026-01-02T00:00:00.000Z")]
        );
        assert_eq!(again.by_hand, store.by_hand);
    }

    fn prov() -> Provenance {
        Provenance {
            task: "010-a".into(),
            run_id: "r".into(),
            iteration: 2,
            agent: "claude".into(),
            ..Default::default()
        }
    }

    #[test]
    fn near_duplicates_merge_and_count() {
        let mut s = Store::default();
        let cfg = Settings::default();
        let a =
            s.admit(&findings(&["Run `make gen` before the tests."]), &prov(), "", &Secrets::default(), &cfg);
        assert_eq!(a.added.len(), 1);
        let a = s.admit(
            &findings(&["run make gen before the tests", "Something else entirely"]),
            &prov(),
            "",
            &Secrets::default(),
            &cfg,
        );
        assert_eq!(a.merged, vec!["L1"]);
        assert_eq!(a.added, vec!["Something else entirely"]);
        assert_eq!(s.get("L1").unwrap().count, 2);
        assert_eq!(s.get("l1").unwrap().task, "010-a");
    }

    #[test]
    fn admission_rejects_with_reasons() {
        let mut s = Store::default();
        let cfg = Settings { max_entry_chars: 50, ..Settings::default() };
        let secrets = Secrets::from_vars([("MY_TOKEN", "tok-123456789")]);
        let spec = "The parser must accept nested lists of arbitrary depth and report the line of every syntax error it finds.";
        let f = findings(&[
            &"x".repeat(60),
            "the key is tok-123456789",
            "use sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789 for auth",
            "If a test fails, skip the test with #[ignore]",
            "Commit with --no-verify when hooks are slow",
            "the parser must accept nested lists of arbitrary depth and report the line",
        ]);
        let cfg2 = Settings { max_entry_chars: 500, ..cfg.clone() };
        let a = s.admit(&findings(&[f.learnings[0].as_str()]), &prov(), spec, &secrets, &cfg);
        assert!(a.rejected[0].reason.contains("longer than 50"));
        let a = s.admit(
            &Findings { learnings: f.learnings[1..].to_vec(), ..Default::default() },
            &prov(),
            spec,
            &secrets,
            &cfg2,
        );
        let reasons: Vec<&str> = a.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].contains("secret") && reasons[1].contains("secret"));
        assert!(reasons[2].contains("weaken") && reasons[3].contains("--no-verify"));
        assert!(reasons[4].contains("copies the task's spec"));
        assert!(!a.rejected[0].text.contains("tok-123456789"), "a rejected secret is not logged in clear");
        assert!(s.entries.is_empty());
    }

    #[test]
    fn a_rejected_learning_keeps_no_part_of_a_secret() {
        let mut s = Store::default();
        let cfg = Settings { max_entry_chars: 120, ..Settings::default() };
        let token = "ghp_ABCDEFGHIJKLMNOP0123456789abcdefghij";
        let plain = "zq81mwpx77abcdefghij0123";
        let secrets = Secrets::from_vars([("GITHUB_TOKEN", token), ("DEPLOY_SECRET", plain)]);
        let f = Findings {
            learnings: vec![
                // A token's first 20 characters, not the whole token.
                format!("the CI token starts with {}, do not rotate it", &token[..20]),
                // The first 20 characters of a secret of no known format.
                format!("deploys use \"{}\" as the password", &plain[..20]),
                // Too long as well: still no part of the token in the record.
                format!("{} and the token is {token}", "words ".repeat(30)),
            ],
            // An update of a missing entry and an unknown retirement, each holding a token.
            learning_updates: vec![("L7".into(), format!("use {token}"))],
            learning_retirements: vec![("L8".into(), format!("it was {token}"))],
            ..Default::default()
        };
        let a = s.admit(&f, &prov(), "", &secrets, &cfg);
        assert!(s.entries.is_empty(), "{:?}", s.entries);
        assert_eq!(a.rejected.len(), 5, "{:?}", a.rejected);
        for r in &a.rejected {
            assert!(!r.text.contains(&token[..12]) && !r.text.contains(&plain[..12]), "{r:?}");
        }
        assert_eq!(a.rejected[0].text, "the CI token starts with [MASKED], do not rotate it");
        assert_eq!(a.rejected[1].text, "deploys use \"[MASKED]\" as the password");
        assert!(a.rejected[..3].iter().all(|r| r.reason.contains("secret")), "{:?}", a.rejected);
    }

    #[test]
    fn a_flood_of_proposals_is_capped_and_counted() {
        let mut s = Store::default();
        let cfg = Settings::default();
        s.admit(&findings(&["alpha beta gamma delta"]), &prov(), "", &Secrets::default(), &cfg);
        let mut texts: Vec<String> = (0..20_000).map(|i| format!("distinct fact number {i}")).collect();
        texts[1] = "Alpha beta gamma delta".into(); // merges into L1
        texts[2] = "skip the test when it is flaky".into(); // rejected
        texts[3] = texts[0].clone(); // a repeat within the iteration: not a new proposal
        let f = Findings {
            learnings: texts,
            learning_retirements: vec![("L1".into(), "past the cap".into())],
            ..Default::default()
        };
        let a = s.admit(&f, &prov(), "", &Secrets::default(), &cfg);
        assert_eq!(a.merged, vec!["L1"]);
        assert_eq!(a.added.len(), MAX_PROPOSALS - 2);
        assert_eq!(a.added.last().unwrap(), &format!("distinct fact number {}", MAX_PROPOSALS));
        assert!(a.retired.is_empty());
        assert_eq!(a.rejected.len(), 2, "{:?}", a.rejected);
        assert!(a.rejected[0].reason.contains("weaken"));
        // Everything past the cap, the retirement included, as one count and no texts.
        let over = 20_000 - 1 - MAX_PROPOSALS + 1;
        assert_eq!(a.rejected[1].text, format!("{over} more proposals, not read"));
        assert!(a.rejected[1].reason.starts_with(TOO_MANY));
        assert_eq!(s.entries.len(), MAX_PROPOSALS - 1);
        assert_eq!(s.get("L1").unwrap().count, 2);
        assert_eq!(s.get("L1").unwrap().status, EntryStatus::Active);
    }

    #[test]
    fn updates_retirements_and_review() {
        let mut s = Store::default();
        let cfg = Settings { require_review: true, ..Settings::default() };
        s.admit(&findings(&["first"]), &prov(), "", &Secrets::default(), &cfg);
        assert_eq!(s.get("L1").unwrap().status, EntryStatus::Pending);
        assert!(!s.render("", &cfg).contains("first"), "pending entries are not shown");
        s.get_mut("L1").unwrap().status = EntryStatus::Active;
        let f = Findings {
            learning_updates: vec![("L1".into(), "first, better".into())],
            learning_retirements: vec![("L9".into(), "gone".into())],
            ..Default::default()
        };
        let a = s.admit(&f, &prov(), "", &Secrets::default(), &Settings::default());
        assert_eq!(a.updated, vec!["L1"]);
        assert!(a.rejected[0].reason.contains("no active learning L9"));
        let f =
            Findings { learning_retirements: vec![("L1".into(), "obsolete".into())], ..Default::default() };
        s.admit(&f, &prov(), "", &Secrets::default(), &Settings::default());
        assert_eq!(s.get("L1").unwrap().status, EntryStatus::Retired);
    }

    #[test]
    fn rendering_keeps_the_rest_of_the_file_and_respects_the_cap() {
        let mut s = Store::default();
        let cfg = Settings { max_bytes: 60, ..Settings::default() };
        s.admit(
            &findings(&["one thing", "another thing to know", "a third thing"]),
            &prov(),
            "",
            &Secrets::default(),
            &cfg,
        );
        let md = "# Project\n\nRules.\n\n## Learnings\n\nSome words of mine.\n\n- [010-a] old bullet\n\n## Other\n\nText.\n";
        let out = s.render(md, &cfg);
        assert!(
            out.starts_with(
                "# Project\n\nRules.\n\n## Learnings\n\nSome words of mine.\n\n<!-- ralph:learnings:start"
            ),
            "{out}"
        );
        assert!(out.contains("- [L1] one thing (010-a)\n"), "{out}");
        assert!(out.contains("more in `ralph learnings`"), "{out}");
        assert!(out.ends_with("<!-- ralph:learnings:end -->\n\n## Other\n\nText.\n"), "{out}");
        assert!(!out.contains("old bullet"));
        // Rendering again changes nothing.
        assert_eq!(s.render(&out, &cfg), out);
    }

    #[test]
    fn old_sections_are_imported() {
        let s = Store::import("## Learnings\n\n- [010-fix] value.txt must hold right\n- plain one\n");
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].task, "010-fix");
        assert_eq!(s.entries[0].text, "value.txt must hold right");
        assert_eq!(s.entries[1].text, "plain one");
    }
}
