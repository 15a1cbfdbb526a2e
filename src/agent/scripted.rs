//! The scripted agent: `ralph scripted-agent SCENARIO`. It plays a scenario file instead of
//! calling a model, so users can dry-run their configuration and budgets without spending
//! tokens, and ralph's own tests drive the real loop with it.
//!
//! A scenario is TOML: a list of `[[step]]`s. The first step whose `task` and `iteration`
//! match the iteration (ralph passes them as `RALPH_TASK` and `RALPH_TASK_ITERATION`) is
//! played; a step without `task` or `iteration` matches any. With no matching step the agent
//! says so on stderr and exits 64. Relative paths are relative to the working directory (the
//! repository root).

use serde::Deserialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Exit code when no step matches.
pub const NO_STEP: i32 = 64;
/// Exit code when `expect_prompt` does not hold.
pub const EXPECTATION_FAILED: i32 = 65;

/// A whole scenario.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

/// What the agent does for one (task, iteration).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub task: Option<String>,
    pub iteration: Option<u32>,
    /// `true`: the step plays the reviewer (`[review]`, run with `RALPH_REVIEW=1`). Reviewer
    /// runs only match such steps, and agent runs only the others.
    #[serde(default)]
    pub review: bool,
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// One action, written as a one-key inline table: `{ print = "hi" }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A line on stdout.
    Print(String),
    /// A line on stderr.
    Eprint(String),
    /// Creates or replaces a file (parents created).
    Write { path: PathBuf, content: String },
    /// Appends to a file.
    Append { path: PathBuf, content: String },
    /// Removes a file.
    Delete(PathBuf),
    /// Runs `sh -c COMMAND`, its output passed through; a failure is not fatal.
    Run(String),
    /// Sleeps, e.g. "200ms".
    Sleep(String),
    /// Prints nothing and never exits.
    Hang(bool),
    /// Starts a background `sh -c COMMAND` that ignores SIGTERM and keeps stdout open.
    Grandchild {
        command: String,
        #[serde(default)]
        pid_file: Option<PathBuf>,
    },
    /// Ignores SIGTERM from now on.
    IgnoreSigterm(bool),
    /// Prints `<learning>TEXT</learning>`.
    Learning(String),
    /// Prints `<progress>TEXT</progress>`.
    Progress(String),
    /// Prints the completion promise: `true` for the default, or the exact text.
    Promise(PromiseText),
    /// Prints the prompt it received (like CLIs that echo their input).
    EchoPrompt(bool),
    /// Exits 65 unless the prompt contains this text.
    ExpectPrompt(String),
    /// Exits with this code.
    Exit(i32),
}

/// `promise = true` or `promise = "TEXT"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromiseText {
    Default(bool),
    Text(String),
}

/// Parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map(|s| crate::text::line_col(&text, s.start)).unwrap_or((1, 1));
        format!("{}:{line}:{col}: {}", path.display(), e.message().trim())
    })
}

/// Runs the scripted agent; returns its exit code.
pub fn main(scenario: &Path, prompt_arg: Option<String>, prompt_file: Option<PathBuf>) -> i32 {
    let scenario = match load(scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scripted-agent: {e}");
            return 2;
        }
    };
    let prompt = match (prompt_arg, prompt_file) {
        (Some(p), _) => p,
        (None, Some(f)) => std::fs::read_to_string(&f).unwrap_or_default(),
        (None, None) => {
            let mut s = String::new();
            let _ = std::io::stdin().read_to_string(&mut s);
            // prompt = "file" without a placeholder still works: ralph names the file.
            if s.is_empty()
                && let Ok(f) = std::env::var("RALPH_PROMPT_FILE")
            {
                s = std::fs::read_to_string(f).unwrap_or_default();
            }
            s
        }
    };
    let task = std::env::var("RALPH_TASK").ok();
    let iteration: Option<u32> = std::env::var("RALPH_TASK_ITERATION").ok().and_then(|v| v.parse().ok());
    let reviewing = std::env::var("RALPH_REVIEW").is_ok_and(|v| v == "1");
    let step = scenario.steps.iter().find(|s| {
        s.review == reviewing
            && s.task.as_ref().is_none_or(|t| Some(t) == task.as_ref())
            && s.iteration.is_none_or(|i| Some(i) == iteration)
    });
    let Some(step) = step else {
        eprintln!(
            "scripted-agent: no step matches task {} iteration {}",
            task.as_deref().unwrap_or("?"),
            iteration.map_or("?".to_string(), |i| i.to_string())
        );
        return NO_STEP;
    };
    for action in &step.actions {
        if let Some(code) = play(action, &prompt) {
            return code;
        }
    }
    0
}

fn play(action: &Action, prompt: &str) -> Option<i32> {
    let mut out = std::io::stdout();
    match action {
        Action::Print(s) => {
            let _ = writeln!(out, "{s}");
        }
        Action::Eprint(s) => eprintln!("{s}"),
        Action::Write { path, content } => {
            // Like a real agent's log, say what is touched (ralph tells who edited a spec so).
            let _ = writeln!(out, "scripted-agent: write {}", path.display());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::write(path, content) {
                eprintln!("scripted-agent: cannot write {}: {e}", path.display());
                return Some(1);
            }
        }
        Action::Append { path, content } => {
            let _ = writeln!(out, "scripted-agent: append {}", path.display());
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(content.as_bytes()));
            if let Err(e) = r {
                eprintln!("scripted-agent: cannot append to {}: {e}", path.display());
                return Some(1);
            }
        }
        Action::Delete(path) => {
            let _ = writeln!(out, "scripted-agent: delete {}", path.display());
            let _ = std::fs::remove_file(path);
        }
        Action::Run(cmd) => {
            let _ = writeln!(out, "scripted-agent: run {cmd}");
            let _ = out.flush();
            let _ = Command::new("sh").arg("-c").arg(cmd).stdin(Stdio::null()).status();
        }
        Action::Sleep(d) => {
            let _ = out.flush();
            std::thread::sleep(crate::text::parse_duration(d).unwrap_or(Duration::ZERO));
        }
        Action::Hang(true) => {
            let _ = out.flush();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Action::Hang(false) | Action::IgnoreSigterm(false) | Action::EchoPrompt(false) => {}
        Action::Grandchild { command, pid_file } => {
            let script = match pid_file {
                Some(f) => format!("trap '' TERM; echo $$ > '{}'; exec {command}", f.display()),
                None => format!("trap '' TERM; exec {command}"),
            };
            let _ = out.flush();
            match Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn() {
                Ok(_) => {
                    // Give it time to write its pid file before the agent moves on.
                    if let Some(f) = pid_file {
                        for _ in 0..100 {
                            if f.exists() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                Err(e) => eprintln!("scripted-agent: cannot start grandchild: {e}"),
            }
        }
        Action::IgnoreSigterm(true) => {
            // SAFETY: installing SIG_IGN has no memory-safety preconditions.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
        }
        Action::Learning(s) => {
            let _ = writeln!(out, "<learning>{s}</learning>");
        }
        Action::Progress(s) => {
            let _ = writeln!(out, "<progress>{s}</progress>");
        }
        Action::Promise(p) => {
            let text = match p {
                PromiseText::Default(true) => crate::agent::scan::DEFAULT_PROMISE,
                PromiseText::Default(false) => return None,
                PromiseText::Text(t) => t.as_str(),
            };
            let _ = writeln!(out, "{text}");
        }
        Action::EchoPrompt(true) => {
            let _ = write!(out, "{prompt}");
            let _ = writeln!(out);
        }
        Action::ExpectPrompt(s) => {
            if !prompt.contains(s.as_str()) {
                eprintln!("scripted-agent: the prompt does not contain {s:?}");
                return Some(EXPECTATION_FAILED);
            }
        }
        Action::Exit(code) => {
            let _ = out.flush();
            return Some(*code);
        }
    }
    let _ = out.flush();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_syntax() {
        let s: Scenario = toml::from_str(
            r#"
[[step]]
task = "010-a"
iteration = 1
actions = [
  { print = "hi" },
  { write = { path = "a.txt", content = "x" } },
  { grandchild = { command = "sleep 5" } },
  { promise = true },
  { promise = "DONE" },
  { exit = 3 },
]
"#,
        )
        .unwrap();
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].actions.len(), 6);
        assert!(matches!(s.steps[0].actions[4], Action::Promise(PromiseText::Text(_))));
    }

    #[test]
    fn unknown_actions_are_errors_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "[[step]]\nactions = [\n  { shout = \"x\" },\n]\n").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
    }
}
