//! What the agent is doing, one output line at a time, in every structured format: its
//! messages, its tool calls with their input (the command, the file), tool results and errors.
//! `ralph logs` renders these as readable lines, the live progress shows the latest, and the
//! runner asks whether the agent wrote a given file (a spec edited during the iteration is the
//! user's unless the agent's own tool calls wrote it).
//!
//! Invariant: pure and total: any JSON value gives a (possibly empty) list, never an error, so
//! a new event type in a CLI's next release is skipped, not fatal.

use super::Format;
use serde_json::Value;

/// One thing the agent did or said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// The agent's own text (a whole message).
    Message(String),
    /// A piece of a message streamed in parts (Gemini): joined with its neighbours.
    MessageDelta(String),
    /// A tool call: the tool's name, a one-line summary of its input, and the files it names.
    Tool { name: String, input: String, paths: Vec<String> },
    /// A tool's result.
    Result { output: String, is_error: bool },
    /// An error the agent reported.
    Error(String),
}

impl Activity {
    /// A one-line summary of at most `max` characters for the live progress; `None` for
    /// results and empty text.
    pub fn one_line(&self, max: usize) -> Option<String> {
        let line = match self {
            Activity::Message(t) | Activity::MessageDelta(t) => {
                t.lines().find(|l| !l.trim().is_empty())?.trim().to_string()
            }
            Activity::Tool { name, input, .. } => {
                format!("{name} {}", input.lines().next().unwrap_or_default().trim()).trim_end().to_string()
            }
            Activity::Result { .. } => return None,
            Activity::Error(e) => format!("error: {}", e.lines().next().unwrap_or_default()),
        };
        Some(shorten(&line, max))
    }

    /// Whether this is a tool call that may have written `path` (relative to the repository):
    /// an editing tool naming it, or a shell command mentioning it.
    pub fn may_write(&self, path: &str) -> bool {
        let Activity::Tool { name, input, paths } = self else { return false };
        let name = name.to_ascii_lowercase();
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let names_it = |p: &str| p == path || p.ends_with(&format!("/{path}"));
        if SHELL_TOOLS.contains(&name.as_str()) || name.contains("patch") {
            return input.contains(file_name) || paths.iter().any(|p| names_it(p));
        }
        !READ_TOOLS.contains(&name.as_str()) && paths.iter().any(|p| names_it(p))
    }
}

/// Lines of a tool's result shown by `ralph logs` (the rest is counted, `--raw` has it all).
const RESULT_LINES: usize = 4;
/// Longest line shown from a tool's result or input.
const LINE_CHARS: usize = 160;

/// Turns a structured agent.log into readable lines as it streams: the agent's messages,
/// its tool calls with their input, results shortened, errors. Lines that are not JSON (a
/// CLI's warnings, ralph's own notes) pass through as they are.
pub struct Render {
    format: Format,
    color: bool,
    partial: Vec<u8>,
    /// A message streamed in pieces (Gemini), printed whole.
    delta: String,
}

impl Render {
    pub fn new(format: Format, color: bool) -> Self {
        Render { format, color, partial: Vec::new(), delta: String::new() }
    }

    /// Whether the format has anything to render (plain text is shown as it is).
    pub fn applies(format: Format) -> bool {
        !matches!(format, Format::Text | Format::AiderText)
    }

    /// Renders the complete lines in `bytes` (a partial last line waits for the rest).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut out = String::new();
        self.partial.extend_from_slice(bytes);
        while let Some(i) = memchr::memchr(b'\n', &self.partial) {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&line[..line.len() - 1], &mut out);
        }
        if self.partial.len() > super::MAX_LINE {
            self.partial.clear();
        }
        out
    }

    /// Renders what is left (a last line without its newline, a pending message).
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        let rest = std::mem::take(&mut self.partial);
        if !rest.is_empty() {
            self.line(&rest, &mut out);
        }
        self.flush_delta(&mut out);
        out
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn flush_delta(&mut self, out: &mut String) {
        let text = std::mem::take(&mut self.delta);
        if !text.trim().is_empty() {
            self.message(&text, out);
        }
    }

    fn message(&self, text: &str, out: &mut String) {
        for (i, l) in text.trim().lines().enumerate() {
            out.push_str(if i == 0 { "● " } else { "  " });
            out.push_str(l);
            out.push('\n');
        }
    }

    fn line(&mut self, line: &[u8], out: &mut String) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            self.flush_delta(out);
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
            return;
        };
        for a in of_line(self.format, &v) {
            if let Activity::MessageDelta(t) = &a {
                self.delta.push_str(t);
                continue;
            }
            self.flush_delta(out);
            match a {
                Activity::Message(t) => self.message(&t, out),
                Activity::Tool { name, input, .. } => {
                    let input = shorten(input.lines().next().unwrap_or_default(), LINE_CHARS);
                    out.push_str(&format!("{} {}  {input}\n", self.paint("36", "▸"), self.paint("1", &name)));
                }
                Activity::Result { output, is_error } => {
                    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
                    let bar = if is_error { self.paint("31", "  │") } else { self.paint("2", "  │") };
                    for l in lines.iter().take(RESULT_LINES) {
                        out.push_str(&format!("{bar} {}\n", shorten(l, LINE_CHARS)));
                    }
                    if lines.len() > RESULT_LINES {
                        out.push_str(&format!(
                            "{bar} {}\n",
                            self.paint("2", &format!("… {} more lines", lines.len() - RESULT_LINES))
                        ));
                    }
                }
                Activity::Error(e) => out.push_str(&format!("{} {e}\n", self.paint("31", "✗"))),
                Activity::MessageDelta(_) => {}
            }
        }
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Tools that run a command: what they write is unknown, so naming the file counts.
const SHELL_TOOLS: &[&str] =
    &["bash", "shell", "run_shell_command", "exec_command", "command", "local_shell"];
/// Tools that only read.
const READ_TOOLS: &[&str] = &[
    "read",
    "read_file",
    "read_many_files",
    "view",
    "ls",
    "list",
    "list_directory",
    "glob",
    "grep",
    "search",
];

/// The activities in one line of the agent's output.
pub fn of_line(format: Format, v: &Value) -> Vec<Activity> {
    let mut out = Vec::new();
    match format {
        Format::ClaudeStreamJson => claude(v, &mut out),
        Format::CodexJson => codex(v, &mut out),
        Format::GeminiStreamJson => gemini(v, &mut out),
        Format::OpencodeJson => opencode(v, &mut out),
        Format::PiJson => pi(v, &mut out),
        Format::Text | Format::AiderText => {}
    }
    out
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A tool's input as one line: the command or the file it names, else compact JSON.
fn summary(input: &Value) -> String {
    for key in ["command", "cmd", "file_path", "filePath", "path", "absolute_path", "pattern", "url", "query"]
    {
        match input.get(key) {
            Some(Value::String(t)) => return t.clone(),
            Some(Value::Array(a)) if key == "command" || key == "cmd" => {
                return a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
            }
            _ => {}
        }
    }
    if input.is_null() { String::new() } else { input.to_string() }
}

fn paths(input: &Value) -> Vec<String> {
    ["file_path", "filePath", "path", "absolute_path", "notebook_path"]
        .iter()
        .filter_map(|k| s(input, k).map(str::to_string))
        .collect()
}

fn tool(name: &str, input: &Value) -> Activity {
    Activity::Tool { name: name.to_string(), input: summary(input), paths: paths(input) }
}

/// Text from a string or an array of `{type: "text", text}` blocks.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        Value::Array(a) => a.iter().filter_map(|b| s(b, "text")).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

fn claude(v: &Value, out: &mut Vec<Activity>) {
    match s(v, "type") {
        Some("assistant") => {
            for block in v["message"]["content"].as_array().into_iter().flatten() {
                match s(block, "type") {
                    Some("text") => {
                        out.push(Activity::Message(s(block, "text").unwrap_or_default().to_string()))
                    }
                    Some("tool_use") => out.push(tool(s(block, "name").unwrap_or("tool"), &block["input"])),
                    _ => {}
                }
            }
        }
        Some("user") => {
            for block in v["message"]["content"].as_array().into_iter().flatten() {
                if s(block, "type") == Some("tool_result") {
                    out.push(Activity::Result {
                        output: text_of(&block["content"]),
                        is_error: block["is_error"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        Some("result") if v["is_error"].as_bool() == Some(true) => {
            out.push(Activity::Error(s(v, "result").unwrap_or("the agent reported an error").to_string()));
        }
        _ => {}
    }
}

fn codex(v: &Value, out: &mut Vec<Activity>) {
    match s(v, "type") {
        Some("item.completed") => {
            let item = &v["item"];
            match s(item, "type") {
                Some("agent_message") => {
                    out.push(Activity::Message(s(item, "text").unwrap_or_default().to_string()))
                }
                Some("command_execution") => {
                    out.push(tool("shell", item));
                    out.push(Activity::Result {
                        output: s(item, "aggregated_output").unwrap_or_default().to_string(),
                        is_error: item["exit_code"].as_i64().is_some_and(|c| c != 0),
                    });
                }
                Some("file_change") => {
                    let paths: Vec<String> = item["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| s(c, "path").map(str::to_string))
                        .collect();
                    out.push(Activity::Tool { name: "edit".into(), input: paths.join(", "), paths });
                }
                Some("mcp_tool_call") => out.push(tool(s(item, "tool").unwrap_or("mcp"), &item["arguments"])),
                Some("web_search") => out.push(tool("web_search", item)),
                Some("error") => {
                    out.push(Activity::Error(s(item, "message").unwrap_or_default().to_string()))
                }
                _ => {}
            }
        }
        Some("turn.failed") => {
            out.push(Activity::Error(s(&v["error"], "message").unwrap_or("the turn failed").to_string()));
        }
        Some("error") => out.push(Activity::Error(s(v, "message").unwrap_or_default().to_string())),
        _ => {}
    }
}

fn gemini(v: &Value, out: &mut Vec<Activity>) {
    match s(v, "type") {
        Some("message") if s(v, "role") == Some("assistant") => {
            let t = s(v, "content").unwrap_or_default().to_string();
            out.push(if v["delta"].as_bool() == Some(true) {
                Activity::MessageDelta(t)
            } else {
                Activity::Message(t)
            });
        }
        Some("tool_use") => out.push(tool(s(v, "tool_name").unwrap_or("tool"), &v["parameters"])),
        Some("tool_result") => out.push(Activity::Result {
            output: match &v["output"] {
                Value::String(t) => t.clone(),
                Value::Null => s(&v["error"], "message").unwrap_or_default().to_string(),
                other => other.to_string(),
            },
            is_error: s(v, "status").is_some_and(|st| st != "success"),
        }),
        Some("error") => out.push(Activity::Error(s(v, "message").unwrap_or_default().to_string())),
        Some("result") if s(v, "status").is_some_and(|st| st != "success") => {
            out.push(Activity::Error(
                s(&v["error"], "message").unwrap_or("the agent reported an error").to_string(),
            ));
        }
        _ => {}
    }
}

fn opencode(v: &Value, out: &mut Vec<Activity>) {
    let part = &v["part"];
    match s(v, "type") {
        Some("text") => out.push(Activity::Message(s(part, "text").unwrap_or_default().to_string())),
        Some("tool_use") => {
            let state = &part["state"];
            out.push(tool(s(part, "tool").unwrap_or("tool"), &state["input"]));
            if let Some(o) = state.get("output").or_else(|| state.get("error")) {
                out.push(Activity::Result {
                    output: text_of(o),
                    is_error: s(state, "status") == Some("error"),
                });
            }
        }
        Some("error") => {
            let e = &v["error"];
            let msg =
                s(&e["data"], "message").or_else(|| s(e, "name")).unwrap_or("the agent reported an error");
            out.push(Activity::Error(msg.to_string()));
        }
        _ => {}
    }
}

fn pi(v: &Value, out: &mut Vec<Activity>) {
    if s(v, "type") != Some("message_end") {
        return;
    }
    let m = &v["message"];
    match s(m, "role") {
        Some("assistant") => {
            for block in m["content"].as_array().into_iter().flatten() {
                match s(block, "type") {
                    Some("text") => {
                        out.push(Activity::Message(s(block, "text").unwrap_or_default().to_string()))
                    }
                    Some("toolCall") => {
                        out.push(tool(s(block, "name").unwrap_or("tool"), &block["arguments"]))
                    }
                    _ => {}
                }
            }
            if let Some(e) = s(m, "errorMessage") {
                out.push(Activity::Error(e.to_string()));
            }
        }
        Some("toolResult") => out.push(Activity::Result {
            output: text_of(&m["content"]),
            is_error: m["isError"].as_bool().unwrap_or(false),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(format: Format, fixture: &str) -> Vec<Activity> {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/agent-output/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).flat_map(|v| of_line(format, &v)).collect()
    }

    fn shell(command: &str, name: &str) -> Activity {
        Activity::Tool { name: name.into(), input: command.into(), paths: vec![] }
    }

    #[test]
    fn each_cli_shows_its_shell_call_and_its_last_message() {
        for (format, fixture, name) in [
            (Format::ClaudeStreamJson, "claude-success.jsonl", "Bash"),
            (Format::GeminiStreamJson, "gemini-success.jsonl", "run_shell_command"),
            (Format::OpencodeJson, "opencode-success.jsonl", "bash"),
            (Format::PiJson, "pi-success.jsonl", "bash"),
        ] {
            let a = all(format, fixture);
            assert!(a.contains(&shell("echo hello > hello.txt", name)), "{fixture}: {a:?}");
            assert!(
                a.iter().any(|x| matches!(x, Activity::Result { is_error: false, .. })),
                "{fixture}: {a:?}"
            );
            assert!(
                a.iter().any(|x| matches!(x, Activity::Message(t) | Activity::MessageDelta(t) if t.contains("<promise>"))),
                "{fixture}: {a:?}"
            );
        }
        let a = all(Format::CodexJson, "codex-success.jsonl");
        assert!(a.contains(&shell("/bin/bash -lc 'echo hello > hello.txt'", "shell")), "{a:?}");
        let a = all(Format::ClaudeStreamJson, "claude-auth.jsonl");
        assert!(a.iter().any(|x| matches!(x, Activity::Error(_))), "{a:?}");
    }

    #[test]
    fn a_log_renders_as_readable_lines_in_any_chunking() {
        let log = std::fs::read_to_string(format!(
            "{}/tests/fixtures/agent-output/claude-success.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let whole = {
            let mut r = Render::new(Format::ClaudeStreamJson, false);
            let mut s = r.push(log.as_bytes());
            s.push_str(&r.finish());
            s
        };
        assert!(
            whole.contains("▸ Bash  echo hello > hello.txt\n  │ (Bash completed with no output)\n"),
            "{whole}"
        );
        assert!(
            whole.contains("● Done. <learning>probe learning</learning>\n  <promise>COMPLETE</promise>\n"),
            "{whole}"
        );
        assert!(!whole.contains("session_id"), "no raw JSON: {whole}");
        let mut r = Render::new(Format::ClaudeStreamJson, false);
        let mut pieces = String::new();
        for c in log.as_bytes().chunks(5) {
            pieces.push_str(&r.push(c));
        }
        pieces.push_str(&r.finish());
        assert_eq!(pieces, whole);
        // Long results are cut, non-JSON lines pass through, Gemini's pieces are one message.
        let mut r = Render::new(Format::GeminiStreamJson, false);
        let long: Vec<String> = (1..=9).map(|i| format!("line {i}")).collect();
        let text = format!(
            "warning: a CLI note\n{}\n{}\n{}\n",
            serde_json::json!({"type": "tool_result", "status": "success", "output": long.join("\n")}),
            serde_json::json!({"type": "message", "role": "assistant", "content": "Hel", "delta": true}),
            serde_json::json!({"type": "message", "role": "assistant", "content": "lo.", "delta": true}),
        );
        let mut s = r.push(text.as_bytes());
        s.push_str(&r.finish());
        assert_eq!(
            s,
            "warning: a CLI note\n  │ line 1\n  │ line 2\n  │ line 3\n  │ line 4\n  │ … 5 more lines\n● Hello.\n"
        );
    }

    #[test]
    fn writes_are_told_from_reads() {
        let edit = |name: &str, p: &str| Activity::Tool {
            name: name.into(),
            input: p.into(),
            paths: vec![p.into()],
        };
        assert!(edit("Edit", "/work/repo/specs/010-a.md").may_write("specs/010-a.md"));
        assert!(edit("write_file", "specs/010-a.md").may_write("specs/010-a.md"));
        assert!(!edit("Read", "/work/repo/specs/010-a.md").may_write("specs/010-a.md"));
        assert!(!edit("Edit", "/work/repo/specs/010-ab.md").may_write("specs/010-a.md"));
        assert!(shell("sed -i s/a/b/ specs/010-a.md", "Bash").may_write("specs/010-a.md"));
        assert!(!shell("cargo test", "Bash").may_write("specs/010-a.md"));
        assert!(!Activity::Message("I will edit specs/010-a.md".into()).may_write("specs/010-a.md"));
    }
}
