//! Reads the agent's output as it streams: the completion promise, `<learning>` entries, the
//! `<progress>` note, and a bounded tail.
//!
//! Only what the agent wrote counts. A line that also appears in the prompt is an echo (some
//! CLIs print their input) and is skipped, so the promise quoted by the prompt never completes
//! a task. The default template therefore never puts the promise alone on a line. Memory is
//! bounded whatever the agent prints: lines are cut at [`MAX_LINE`], tags at [`MAX_TAG`], and
//! the learning proposals taken at [`MAX_PROPOSALS`] (the rest are only counted).

pub use crate::text::strip_ansi;
use std::collections::HashSet;

/// The default completion promise the agent prints when the task is done.
pub const DEFAULT_PROMISE: &str = "<promise>COMPLETE</promise>";

/// The most learning proposals (new entries, updates and retirements together) taken from one
/// iteration. An agent that floods `<learning>` tags gets the first ones considered and the
/// rest rejected as one count: an iteration rarely teaches more than a few things, and each
/// proposal costs a pass over the store.
pub const MAX_PROPOSALS: usize = 20;

/// Longest line examined; the rest of a longer line is ignored (still logged).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest learning or progress note kept.
pub const MAX_TAG: usize = 4 * 1024;
/// Bytes of output kept for the failure summary.
pub const TAIL_BYTES: usize = 4 * 1024;

/// What the scanner found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Findings {
    pub promise: bool,
    /// New learnings, `<learning>text</learning>`.
    pub learnings: Vec<String>,
    /// `<learning update="L3">new text</learning>`: (id, text).
    pub learning_updates: Vec<(String, String)>,
    /// `<learning retire="L3">why</learning>`: (id, reason).
    pub learning_retirements: Vec<(String, String)>,
    /// Proposals past [`MAX_PROPOSALS`]: counted, their texts not kept.
    pub learnings_over_cap: usize,
    pub progress: Option<String>,
    /// The last [`TAIL_BYTES`] of output (echo lines included), for failure summaries.
    pub tail: String,
}

/// What an opening `<learning ...>` tag asks for.
#[derive(Debug, Clone)]
enum LearningKind {
    Add,
    Update(String),
    Retire(String),
}

#[derive(Debug)]
enum Open {
    Learning(LearningKind, String),
    Progress(String),
}

/// Parses what follows `<learning` up to `>`: nothing, ` update="L3"` or ` retire="L3"`.
/// Returns the kind and the bytes the tag took, or `None` if it is not a learning tag.
fn learning_tag(rest: &str) -> Option<(LearningKind, usize)> {
    let end = rest.find('>')?;
    let attrs = rest[..end].trim();
    if attrs.is_empty() {
        return Some((LearningKind::Add, end + 1));
    }
    let (name, value) = attrs.split_once('=')?;
    let id = value.trim().trim_matches(['"', '\'']).to_string();
    if id.is_empty() || id.len() > 16 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    match name.trim() {
        "update" => Some((LearningKind::Update(id), end + 1)),
        "retire" => Some((LearningKind::Retire(id), end + 1)),
        _ => None,
    }
}

/// Incremental scanner over one agent's stdout.
#[derive(Debug)]
pub struct Scanner {
    prompt_lines: HashSet<String>,
    promise: String,
    /// The promise and the two opening tags: a line holding none of them needs no decoding.
    needles: [memchr::memmem::Finder<'static>; 3],
    /// The first byte all the needles share (`<` with the default promise): output without
    /// it holds none of them, which one memchr pass tells.
    lead: Option<u8>,
    line: Vec<u8>,
    line_truncated: bool,
    open: Option<Open>,
    found: Findings,
    /// The new learnings taken, for the duplicate test (a flood must not cost a scan each).
    seen_learnings: HashSet<String>,
    tail: Vec<u8>,
}

impl Scanner {
    pub fn new(prompt: &str, promise: &str) -> Self {
        let prompt_lines = prompt.lines().map(normalize).filter(|l| !l.is_empty()).collect();
        Self {
            prompt_lines,
            needles: [
                memchr::memmem::Finder::new(promise.as_bytes()).into_owned(),
                memchr::memmem::Finder::new(b"<learning").into_owned(),
                memchr::memmem::Finder::new(b"<progress>").into_owned(),
            ],
            lead: promise.bytes().next().filter(|&b| b == b'<'),
            promise: promise.to_string(),
            line: Vec::new(),
            line_truncated: false,
            open: None,
            found: Findings::default(),
            seen_learnings: HashSet::new(),
            tail: Vec::new(),
        }
    }

    /// Feeds a chunk of output that only counts for the tail (stderr).
    pub fn feed_tail(&mut self, bytes: &[u8]) {
        // A chunk longer than the tail replaces it: copy only its end, not the whole chunk.
        if bytes.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - TAIL_BYTES..]);
            return;
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    /// Feeds a chunk of the agent's own output (stdout).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.feed_tail(bytes);
        let mut rest = bytes;
        // The first line may continue one begun in the last chunk: through the slow path.
        if let Some(i) = memchr::memchr(b'\n', rest) {
            self.push_partial(&rest[..i]);
            self.end_line();
            rest = &rest[i + 1..];
        } else {
            self.push_partial(rest);
            return;
        }
        // Whole lines in the middle of the chunk: one scan per needle decides whether any of
        // them matters at all.
        if let Some(last) = memchr::memrchr(b'\n', rest) {
            let (middle, tail) = rest.split_at(last + 1);
            if self.open.is_some() || self.may_hold_needle(middle) {
                let mut m = middle;
                while let Some(i) = memchr::memchr(b'\n', m) {
                    self.push_partial(&m[..i]);
                    self.end_line();
                    m = &m[i + 1..];
                }
            }
            rest = tail;
        }
        self.push_partial(rest);
    }

    /// Whether `bytes` holds the promise or an opening tag.
    fn may_hold_needle(&self, bytes: &[u8]) -> bool {
        if let Some(b) = self.lead
            && memchr::memchr(b, bytes).is_none()
        {
            return false;
        }
        self.needles.iter().any(|n| n.find(bytes).is_some())
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line_truncated = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        // Most lines hold neither the promise nor a tag: skip them without decoding (a flood
        // of output must cost little more than its copy to the log).
        if self.open.is_none() && !self.may_hold_needle(&self.line) {
            self.line.clear();
            self.line_truncated = false;
            return;
        }
        let raw = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.line_truncated = false;
        let line = strip_ansi(&raw);
        if self.prompt_lines.contains(&normalize(&line)) {
            return;
        }
        self.scan_line(&line);
    }

    fn scan_line(&mut self, line: &str) {
        if line.contains(&self.promise) {
            self.found.promise = true;
        }
        let mut rest = line;
        loop {
            if let Some(open) = &mut self.open {
                let (close, buf) = match open {
                    Open::Learning(_, b) => ("</learning>", b),
                    Open::Progress(b) => ("</progress>", b),
                };
                match rest.find(close) {
                    Some(i) => {
                        append_capped(buf, &rest[..i]);
                        rest = &rest[i + close.len()..];
                        let done = self.open.take();
                        self.finish_tag(done);
                    }
                    None => {
                        append_capped(buf, rest);
                        append_capped(buf, "\n");
                        return;
                    }
                }
            } else {
                let l = rest.find("<learning");
                let p = rest.find("<progress>");
                match (l, p) {
                    (Some(i), p) if p.is_none_or(|p| i < p) => {
                        let after = &rest[i + "<learning".len()..];
                        match learning_tag(after) {
                            Some((kind, used)) => {
                                rest = &after[used..];
                                self.open = Some(Open::Learning(kind, String::new()));
                            }
                            None => rest = after,
                        }
                    }
                    (_, Some(i)) => {
                        rest = &rest[i + "<progress>".len()..];
                        self.open = Some(Open::Progress(String::new()));
                    }
                    _ => return,
                }
            }
        }
    }

    fn finish_tag(&mut self, tag: Option<Open>) {
        match tag {
            Some(Open::Learning(kind, text)) => {
                let text = collapse(&text);
                if text.len() > MAX_TAG {
                    return;
                }
                let empty_or_seen = match &kind {
                    LearningKind::Add => text.is_empty() || self.seen_learnings.contains(&text),
                    LearningKind::Update(_) => text.is_empty(),
                    LearningKind::Retire(_) => false,
                };
                let taken = self.found.learnings.len()
                    + self.found.learning_updates.len()
                    + self.found.learning_retirements.len();
                if !empty_or_seen && taken >= MAX_PROPOSALS {
                    self.found.learnings_over_cap += 1;
                    return;
                }
                match kind {
                    LearningKind::Add if !empty_or_seen => {
                        self.seen_learnings.insert(text.clone());
                        self.found.learnings.push(text);
                    }
                    LearningKind::Add => {}
                    LearningKind::Update(id) if !text.is_empty() => {
                        self.found.learning_updates.push((id, text))
                    }
                    LearningKind::Update(_) => {}
                    LearningKind::Retire(id) => self.found.learning_retirements.push((id, text)),
                }
            }
            Some(Open::Progress(text)) => {
                let text = text.trim().to_string();
                if !text.is_empty() {
                    self.found.progress = Some(text);
                }
            }
            None => {}
        }
    }

    /// Ends the stream and returns what was found.
    pub fn finish(mut self) -> Findings {
        if !self.line.is_empty() {
            self.end_line();
        }
        let start = self.tail.len().saturating_sub(TAIL_BYTES);
        self.found.tail = strip_ansi(&String::from_utf8_lossy(&self.tail[start..]));
        self.found
    }
}

fn append_capped(buf: &mut String, s: &str) {
    if buf.len() < MAX_TAG + 1 {
        let room = MAX_TAG + 1 - buf.len();
        let mut end = s.len().min(room);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        buf.push_str(&s[..end]);
    }
}

fn normalize(line: &str) -> String {
    line.trim().to_string()
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMISE: &str = "<promise>COMPLETE</promise>";

    fn scan(prompt: &str, chunks: &[&str]) -> Findings {
        let mut s = Scanner::new(prompt, PROMISE);
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.finish()
    }

    #[test]
    fn promise_written_by_the_agent_counts() {
        let f = scan("Do the task.", &["working\nall done ", "<promise>COMP", "LETE</promise>\n"]);
        assert!(f.promise);
    }

    #[test]
    fn an_echo_of_the_prompt_does_not_count() {
        let prompt = "# Task\nWhen done, print <promise>COMPLETE</promise> and stop.\n";
        let f = scan(prompt, &[prompt, "I am still working.\n"]);
        assert!(!f.promise);
    }

    #[test]
    fn learnings_single_and_multi_line_deduplicated() {
        let f = scan(
            "",
            &[
                "<learning>Run `make gen`  first</learning> and <learning>b</learning>\n",
                "<learning>multi\nline</learning>\n",
                "<learning>Run `make gen` first</learning>\n",
            ],
        );
        assert_eq!(f.learnings, vec!["Run `make gen` first", "b", "multi line"]);
    }

    #[test]
    fn progress_note_and_tail() {
        let f = scan("", &["<progress>half done;\nparser next</progress>\nbye"]);
        assert_eq!(f.progress.as_deref(), Some("half done;\nparser next"));
        assert!(f.tail.ends_with("bye"));
    }

    #[test]
    fn huge_lines_and_ansi_are_handled() {
        let big = "x".repeat(MAX_LINE * 3);
        let f = scan("", &[&big, "\n\u{1b}[32m<promise>COMPLETE</promise>\u{1b}[0m\r\n"]);
        assert!(f.promise);
        assert!(f.tail.len() <= TAIL_BYTES);
    }

    #[test]
    fn strings_ended_by_st_do_not_swallow_the_rest_of_the_line() {
        // An OSC 8 link, ended by ESC \ (ST) as terminals and CLIs write it.
        assert_eq!(strip_ansi("x \u{1b}]8;;http://a\u{1b}\\link\u{1b}]8;;\u{1b}\\ y"), "x link y");
        assert_eq!(strip_ansi("a\u{1b}]0;title\u{7}b"), "ab");
        // DCS and APC strings end the same way.
        assert_eq!(strip_ansi("a\u{1b}Pq#0;2\u{1b}\\b\u{1b}_apc\u{1b}\\c\r\n"), "abc\n");
        let f = scan("", &["\u{1b}]8;;http://a\u{1b}\\see\u{1b}]8;;\u{1b}\\ <promise>COMPLETE</promise>\n"]);
        assert!(f.promise);
        // A non-ASCII character after a lone ESC is kept whole.
        assert_eq!(strip_ansi("a\u{1b}é"), "aé");
    }

    #[test]
    fn needles_in_the_middle_of_a_big_chunk_are_found() {
        let mut chunk = "noise\n".repeat(1000);
        chunk.push_str("<learning>in the middle</learning>\n");
        chunk.push_str(&"more noise\n".repeat(1000));
        chunk.push_str("<promise>COMPLETE</promise>\nend");
        let f = scan("", &["first line continues ", &chunk]);
        assert!(f.promise);
        assert_eq!(f.learnings, vec!["in the middle"]);
    }

    #[test]
    fn a_promise_without_a_leading_angle_bracket_is_found_too() {
        let mut chunk = "Vec<u8> and a < b\n".repeat(500);
        chunk.push_str("ALL DONE\n");
        chunk.push_str(&"noise\n".repeat(500));
        let mut s = Scanner::new("", "ALL DONE");
        s.feed(b"start ");
        s.feed(chunk.as_bytes());
        assert!(s.finish().promise);
        let mut s = Scanner::new("", PROMISE);
        s.feed(b"start ");
        s.feed(chunk.as_bytes());
        assert!(!s.finish().promise);
    }

    #[test]
    fn the_tail_is_the_end_of_the_output_whatever_the_chunk_sizes() {
        let out: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        let mut small = Scanner::new("", PROMISE);
        for c in out.as_bytes().chunks(7) {
            small.feed(c);
        }
        let mut big = Scanner::new("", PROMISE);
        big.feed(out.as_bytes());
        let (small, big) = (small.finish().tail, big.finish().tail);
        assert_eq!(small, big);
        assert!(out.ends_with(&big) && big.len() == TAIL_BYTES);
    }

    #[test]
    fn learnings_can_be_updated_and_retired_by_id() {
        let f = scan(
            "",
            &[
                "<learning update=\"L3\">Use make gen, not go generate.</learning>\n<learning retire='L7'>the flaky test was fixed</learning>\n<learning update=\"L3; rm -rf\">x</learning>\n<learningful>no</learningful>\n",
            ],
        );
        assert_eq!(
            f.learning_updates,
            vec![("L3".to_string(), "Use make gen, not go generate.".to_string())]
        );
        assert_eq!(f.learning_retirements, vec![("L7".to_string(), "the flaky test was fixed".to_string())]);
        assert!(f.learnings.is_empty());
    }

    #[test]
    fn a_flood_of_learnings_is_capped_and_counted() {
        let mut flood: String =
            (0..20_000).map(|i| format!("<learning>fact number {i}</learning>\n")).collect();
        flood.push_str("<learning>fact number 3</learning>\n<learning retire=\"L1\">gone</learning>\n");
        let f = scan("", &[&flood]);
        assert_eq!(f.learnings.len(), MAX_PROPOSALS);
        assert_eq!(f.learnings[MAX_PROPOSALS - 1], format!("fact number {}", MAX_PROPOSALS - 1));
        // A repeat of a taken one is no new proposal; the retirement is one past the cap.
        assert_eq!(f.learnings_over_cap, 20_000 - MAX_PROPOSALS + 1);
        assert!(f.learning_retirements.is_empty());
    }

    #[test]
    fn an_unclosed_learning_is_dropped() {
        let f = scan("", &["<learning>never closed\n"]);
        assert!(f.learnings.is_empty());
    }
}
