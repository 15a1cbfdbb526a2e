//! The agent's machine-readable output: each preset's format is parsed as it streams into a
//! [`Report`] (final message, error flag, turns, tokens, cost, model, session id, limits and
//! fatal errors), and the agent's own message text is handed to the [`Scanner`] for the
//! promise and learnings, so tool output and echoed prompts never count.
//!
//! Invariants: memory is bounded (a line longer than [`MAX_LINE`] is skipped, never
//! buffered whole); a line that is not JSON in a JSON format is ignored (CLIs print warnings);
//! unknown event types are ignored, since the CLIs add new ones every few weeks.

pub mod activity;
mod claude;
mod codex;
mod gemini;
mod opencode;
mod pi;

use super::limits::{Fatal, Limit};
use super::scan::Scanner;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest output line parsed (a tool result can be large); longer lines are skipped.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Activities kept for the live progress between two looks.
const MAX_PENDING: usize = 64;
/// Longest final message kept in the record.
pub const MAX_FINAL_MESSAGE: usize = 4 * 1024;

/// How the agent's stdout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Plain text: all of stdout is the agent's message.
    #[default]
    Text,
    /// Claude Code `--output-format stream-json` (also Amp, Qwen Code, Cursor CLI).
    ClaudeStreamJson,
    /// Codex `exec --json`.
    CodexJson,
    /// Gemini CLI `--output-format stream-json`.
    GeminiStreamJson,
    /// opencode `run --format json`.
    OpencodeJson,
    /// pi `--mode json`.
    PiJson,
    /// aider's text, with its `Tokens:` and `Cost:` lines.
    AiderText,
}

/// Token counts, as the record reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Input tokens not read from the cache.
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }

    fn add(&mut self, other: Tokens) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// What the output said about the iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub final_message: Option<String>,
    /// The agent reported a failure, whatever its exit code.
    pub is_error: bool,
    pub num_turns: Option<u32>,
    pub tokens: Option<Tokens>,
    pub cost_usd: Option<f64>,
    pub model: Option<String>,
    pub session_id: Option<String>,
    /// The error text the agent reported.
    pub error_message: Option<String>,
    /// A usage or rate limit the output signalled.
    pub limit: Option<Limit>,
    /// A failure waiting cannot fix.
    pub fatal: Option<Fatal>,
    /// The agent's context size at its latest model call (input, cached input included), where
    /// the output reports usage per call (Claude, pi, opencode).
    pub context_tokens: Option<u64>,
}

impl Report {
    fn add_tokens(&mut self, t: Tokens) {
        self.tokens.get_or_insert_with(Tokens::default).add(t);
    }

    fn add_cost(&mut self, c: f64) {
        *self.cost_usd.get_or_insert(0.0) += c;
    }

    fn set_error(&mut self, message: &str) {
        self.is_error = true;
        if !message.trim().is_empty() {
            self.error_message = Some(message.trim().to_string());
        }
    }

    /// Records a failure the agent reported, classified by the HTTP status it names (if any)
    /// or its text. A limit already known with a reset time is kept over one without.
    fn fail(&mut self, message: &str, status: Option<u16>, now: &jiff::Zoned) {
        self.set_error(message);
        let signal = match status {
            Some(s) => super::limits::classify_status(s, message, now),
            None => super::limits::classify_error(message, now),
        };
        match signal {
            Some(super::limits::Signal::Limit(l))
                if self.limit.as_ref().is_none_or(|old| old.reset_at.is_none()) =>
            {
                self.limit = Some(l);
            }
            Some(super::limits::Signal::Limit(_)) | None => {}
            Some(super::limits::Signal::Fatal(f)) => self.fatal = Some(f),
        }
    }
}

/// Parses one agent's stdout as it streams.
pub struct Parser {
    format: Format,
    report: Report,
    line: Vec<u8>,
    skipping: bool,
    /// The time limits' reset times are read against, taken at the first structured line:
    /// reading the system's time zone costs more than a text agent's whole parse.
    now: Option<jiff::Zoned>,
    /// Per-format state.
    gemini: gemini::State,
    pi: pi::State,
    claude: claude::State,
    /// Files (relative paths) whose writes by the agent are to be noticed.
    watched: Vec<String>,
    /// Those of `watched` the agent's tool calls (or, in a text format, its output) named.
    wrote: Vec<String>,
    /// The end of the previous text chunk, so a path split across chunks is still found.
    carry: Vec<u8>,
    /// Tool calls and messages, on one line each, not yet taken for the live progress (the
    /// latest few only: a burst in one chunk must not grow it without bound).
    pending: std::collections::VecDeque<(String, bool)>,
}

impl Parser {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            report: Report::default(),
            line: Vec::new(),
            skipping: false,
            now: None,
            gemini: gemini::State::default(),
            pi: pi::State::default(),
            claude: claude::State::default(),
            watched: Vec::new(),
            wrote: Vec::new(),
            carry: Vec::new(),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Notices the agent writing `path`: an editing tool call naming it or a shell command
    /// mentioning it; in a text format, any mention of it in the output.
    pub fn watch_writes(&mut self, path: &str) {
        self.watched.push(path.to_string());
    }

    /// Whether the agent (by its own account) wrote `path`, one of the watched files.
    pub fn wrote(&self, path: &str) -> bool {
        self.wrote.iter().any(|p| p == path)
    }

    /// The agent's tool calls and messages since the last call, oldest first, on one line
    /// each, with whether each is a tool call.
    pub fn take_activities(&mut self) -> impl Iterator<Item = (String, bool)> + '_ {
        self.pending.drain(..)
    }

    fn note_text_mentions(&mut self, bytes: &[u8]) {
        if self.watched.is_empty() {
            return;
        }
        let longest = self.watched.iter().map(String::len).max().unwrap_or(0);
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(bytes);
        for p in &self.watched {
            if !self.wrote.contains(p) && memchr::memmem::find(&hay, p.as_bytes()).is_some() {
                self.wrote.push(p.clone());
            }
        }
        let keep = longest.saturating_sub(1).min(hay.len());
        self.carry = hay[hay.len() - keep..].to_vec();
    }

    /// Feeds a chunk of stdout; the agent's own text goes to `scanner`.
    pub fn feed(&mut self, bytes: &[u8], scanner: &mut Scanner) {
        if matches!(self.format, Format::Text | Format::AiderText) {
            self.note_text_mentions(bytes);
            scanner.feed(bytes);
            if self.format == Format::Text {
                return;
            }
        } else {
            scanner.feed_tail(bytes);
        }
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.push(&rest[..i]);
            self.end_line(scanner);
            rest = &rest[i + 1..];
        }
        self.push(rest);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skipping || self.line.len() + bytes.len() > MAX_LINE {
            self.skipping = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, scanner: &mut Scanner) {
        let skipped = std::mem::take(&mut self.skipping);
        let line = std::mem::take(&mut self.line);
        if skipped || line.is_empty() {
            return;
        }
        let mut emit = |text: &str| {
            scanner.feed(text.as_bytes());
            scanner.feed(b"\n");
        };
        if self.format == Format::AiderText {
            aider_line(&mut self.report, &String::from_utf8_lossy(&line));
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else { return };
        for a in activity::of_line(self.format, &v) {
            for p in &self.watched {
                if !self.wrote.contains(p) && a.may_write(p) {
                    self.wrote.push(p.clone());
                }
            }
            if let Some(l) = a.one_line(100) {
                if self.pending.len() == MAX_PENDING {
                    self.pending.pop_front();
                }
                self.pending.push_back((l, matches!(a, activity::Activity::Tool { .. })));
            }
        }
        let r = &mut self.report;
        let now = self.now.get_or_insert_with(jiff::Zoned::now);
        match self.format {
            Format::ClaudeStreamJson => claude::line(&mut self.claude, r, &v, now, &mut emit),
            Format::CodexJson => codex::line(r, &v, now, &mut emit),
            Format::GeminiStreamJson => gemini::line(&mut self.gemini, r, &v, now, &mut emit),
            Format::OpencodeJson => opencode::line(r, &v, now, &mut emit),
            Format::PiJson => pi::line(&mut self.pi, r, &v, now, &mut emit),
            Format::Text | Format::AiderText => {}
        }
    }

    /// The tokens and cost the output reported so far: what an agent ended before its final
    /// report (killed, timed out, stopped) still spent.
    pub fn usage(&self) -> (Option<Tokens>, Option<f64>) {
        (self.report.tokens, self.report.cost_usd)
    }

    /// The agent's context size at its latest model call, if the format reports it.
    pub fn context_tokens(&self) -> Option<u64> {
        self.report.context_tokens
    }

    /// Ends the stream and returns the report.
    pub fn finish(mut self, scanner: &mut Scanner) -> Report {
        if !self.line.is_empty() {
            self.end_line(scanner);
        }
        if self.format == Format::GeminiStreamJson {
            gemini::finish(&mut self.gemini, &mut self.report, &mut |t: &str| {
                scanner.feed(t.as_bytes());
                scanner.feed(b"\n");
            });
        }
        if let Some(m) = &mut self.report.final_message
            && m.len() > MAX_FINAL_MESSAGE
        {
            let mut end = MAX_FINAL_MESSAGE;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
            m.push('…');
        }
        self.report
    }
}

/// aider prints `Tokens: 12k sent, 1.2k received. Cost: $0.01 message, $0.05 session.`
fn aider_line(r: &mut Report, line: &str) {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("Tokens:") {
        let mut t = Tokens::default();
        let counts = rest.split("Cost:").next().unwrap_or("");
        for part in counts.split(',') {
            let part = part.trim().trim_end_matches('.');
            if let Some(n) = part.strip_suffix(" sent") {
                t.input = parse_si(n);
            } else if let Some(n) = part.strip_suffix(" received") {
                t.output = parse_si(n);
            }
        }
        // aider's counts for one message; a run may print several.
        r.add_tokens(t);
        if let Some(i) = line.find("Cost: $") {
            let n: String = line[i + 7..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            if let Ok(c) = n.trim_end_matches('.').parse::<f64>() {
                r.add_cost(c);
            }
        }
    }
}

/// "12k" → 12000, "1.2k" → 1200, "345" → 345.
fn parse_si(s: &str) -> u64 {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1_000.0),
        Some('M') => (&s[..s.len() - 1], 1_000_000.0),
        _ => (s, 1.0),
    };
    num.parse::<f64>().map(|n| (n * mult).round() as u64).unwrap_or(0)
}

/// Reads a number that may be missing.
fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a whole fixture and returns the report and the text the scanner saw.
    pub(super) fn parse(format: Format, text: &str) -> (Report, crate::agent::scan::Findings) {
        let mut scanner = Scanner::new("", crate::agent::scan::DEFAULT_PROMISE);
        let mut p = Parser::new(format);
        // Feed in small pieces: chunk boundaries fall anywhere.
        for chunk in text.as_bytes().chunks(7) {
            p.feed(chunk, &mut scanner);
        }
        let report = p.finish(&mut scanner);
        (report, scanner.finish())
    }

    /// The real CLIs' output, recorded against the scripted model server
    /// (tests/fixtures/agent-output/README.md says how).
    #[test]
    fn recorded_output_of_the_real_clis() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-output");
        let formats = [
            ("claude", Format::ClaudeStreamJson),
            ("codex", Format::CodexJson),
            ("gemini", Format::GeminiStreamJson),
            ("opencode", Format::OpencodeJson),
            ("pi", Format::PiJson),
        ];
        let mut seen = 0;
        for (cli, format) in formats {
            let read = |case: &str| std::fs::read_to_string(dir.join(format!("{cli}-{case}.jsonl"))).ok();
            if let Some(text) = read("success") {
                let (r, f) = parse(format, &text);
                assert!(f.promise, "{cli}: promise");
                assert_eq!(f.learnings, vec!["probe learning"], "{cli}");
                assert!(!r.is_error && r.limit.is_none() && r.fatal.is_none(), "{cli}: {r:?}");
                assert!(r.tokens.is_some_and(|t| t.total() > 0), "{cli}: tokens {r:?}");
                assert!(r.session_id.is_some(), "{cli}: session");
                seen += 1;
            }
            if let Some(text) = read("ratelimit") {
                let (r, f) = parse(format, &text);
                assert!(r.is_error, "{cli}: {r:?}");
                assert!(r.limit.is_some(), "{cli}: limit {r:?}");
                assert!(r.fatal.is_none() && !f.promise, "{cli}");
                seen += 1;
            }
            if let Some(text) = read("auth") {
                let (r, _) = parse(format, &text);
                assert!(r.is_error, "{cli}: {r:?}");
                assert!(matches!(r.fatal, Some(Fatal::Auth(_))), "{cli}: auth {r:?}");
                seen += 1;
            }
        }
        // Limits the CLI retried itself and got past are no failure.
        for (cli, format) in &formats[..] {
            if let Ok(text) = std::fs::read_to_string(dir.join(format!("{cli}-ratelimit-recover.jsonl"))) {
                let (r, f) = parse(*format, &text);
                assert!(!r.is_error && r.limit.is_none() && r.fatal.is_none(), "{cli} recover: {r:?}");
                assert!(f.promise, "{cli} recover");
                seen += 1;
            }
        }
        // Codex's plan limit names the time it lifts.
        if let Ok(text) = std::fs::read_to_string(dir.join("codex-usagelimit.jsonl")) {
            let (r, _) = parse(Format::CodexJson, &text);
            assert!(r.limit.as_ref().is_some_and(|l| l.reset_at.is_some()), "{r:?}");
            seen += 1;
        }
        assert!(seen >= 13, "only {seen} fixtures found in {}", dir.display());
    }

    #[test]
    fn aider_counts_tokens_and_cost() {
        let (r, f) = parse(
            Format::AiderText,
            "Editing file\nTokens: 12k sent, 1.2k received. Cost: $0.01 message, $0.05 session.\n<promise>COMPLETE</promise>\n",
        );
        assert_eq!(r.tokens, Some(Tokens { input: 12_000, output: 1_200, cache_read: 0, cache_write: 0 }));
        assert_eq!(r.cost_usd, Some(0.01));
        assert!(f.promise);
    }

    #[test]
    fn overlong_and_non_json_lines_are_skipped() {
        let mut text = String::from("warning: not json\n");
        text.push_str(&"x".repeat(100));
        text.push('\n');
        text.push_str("{\"type\":\"result\",\"is_error\":false,\"result\":\"ok\",\"num_turns\":2}\n");
        let (r, _) = parse(Format::ClaudeStreamJson, &text);
        assert_eq!(r.final_message.as_deref(), Some("ok"));
        assert_eq!(r.num_turns, Some(2));
    }
}
