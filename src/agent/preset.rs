//! Agent presets: for each supported CLI, its unattended one-shot command line, how the prompt
//! goes in, its machine-readable output format, and the environment it needs. Facts per CLI
//! are in the project's research notes (agent-clis.md) and were checked against the installed
//! versions the real-agent suite pins (tests/real-agents/package.json).

use super::PromptMode;
use super::output::Format;

/// One preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name used in `[agent] preset` and `--agent`.
    pub name: &'static str,
    /// The program, found on PATH unless `[agent] bin` says otherwise.
    pub bin: &'static str,
    /// Arguments before the model and the user's `args`.
    pub args: &'static [&'static str],
    /// The flag that takes `[agent] model`; empty when the CLI has none.
    pub model_flag: &'static str,
    /// Arguments after the user's (the prompt or its file follows them when not on stdin).
    pub trailing: &'static [&'static str],
    pub prompt: PromptMode,
    pub format: Format,
    /// Environment the CLI needs to run unattended; `[agent.env]` overrides it.
    pub env: &'static [(&'static str, &'static str)],
    /// Arguments that print the help listing the flags ralph relies on.
    pub help: &'static [&'static str],
    /// Flags that help must list.
    pub needs_flags: &'static [&'static str],
    /// How to install it.
    pub install: &'static str,
}

/// Every preset but `custom`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "claude",
        bin: "claude",
        // stream-json needs --verbose in -p mode, or claude exits 1.
        args: &["-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"],
        model_flag: "--model",
        trailing: &[],
        prompt: PromptMode::Stdin,
        format: Format::ClaudeStreamJson,
        env: &[],
        help: &["--help"],
        needs_flags: &["--print", "--output-format", "--verbose", "--dangerously-skip-permissions"],
        install: "npm install -g @anthropic-ai/claude-code",
    },
    Preset {
        name: "codex",
        bin: "codex",
        // --skip-git-repo-check: codex refuses to run outside a trusted git folder otherwise.
        args: &[
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--color",
            "never",
        ],
        model_flag: "-m",
        // "-": read the prompt from stdin.
        trailing: &["-"],
        prompt: PromptMode::Stdin,
        format: Format::CodexJson,
        env: &[],
        help: &["exec", "--help"],
        needs_flags: &["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"],
        install: "npm install -g @openai/codex",
    },
    Preset {
        name: "gemini",
        bin: "gemini",
        args: &["--output-format", "stream-json", "--yolo"],
        model_flag: "-m",
        // The prompt follows -p: the headless form verified against gemini 0.61.
        trailing: &["-p"],
        prompt: PromptMode::Arg,
        format: Format::GeminiStreamJson,
        // Headless gemini exits 55 in a folder it does not trust.
        env: &[("GEMINI_CLI_TRUST_WORKSPACE", "true")],
        help: &["--help"],
        needs_flags: &["--output-format", "--yolo"],
        install: "npm install -g @google/gemini-cli",
    },
    Preset {
        name: "opencode",
        bin: "opencode",
        // Without --auto, opencode run rejects every permission request.
        args: &["run", "--format", "json", "--auto"],
        model_flag: "-m",
        trailing: &[],
        prompt: PromptMode::Arg,
        format: Format::OpencodeJson,
        env: &[],
        help: &["run", "--help"],
        needs_flags: &["--format"],
        install: "npm install -g opencode-ai",
    },
    Preset {
        name: "pi",
        bin: "pi",
        args: &["-p", "--mode", "json", "--no-session"],
        model_flag: "--model",
        trailing: &[],
        prompt: PromptMode::Stdin,
        format: Format::PiJson,
        env: &[],
        help: &["--help"],
        needs_flags: &["--mode", "--no-session"],
        install: "npm install -g @mariozechner/pi-coding-agent",
    },
    Preset {
        name: "qwen",
        bin: "qwen",
        args: &["--output-format", "stream-json", "--yolo"],
        model_flag: "-m",
        trailing: &[],
        prompt: PromptMode::Stdin,
        format: Format::ClaudeStreamJson,
        env: &[],
        help: &["--help"],
        needs_flags: &["--output-format", "--yolo"],
        install: "npm install -g @qwen-code/qwen-code",
    },
    Preset {
        name: "aider",
        bin: "aider",
        args: &[
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            "--no-auto-commits",
            "--no-check-update",
            "--no-show-release-notes",
        ],
        model_flag: "--model",
        trailing: &["--message-file"],
        prompt: PromptMode::File,
        format: Format::AiderText,
        env: &[],
        help: &["--help"],
        needs_flags: &["--message-file", "--yes-always", "--no-auto-commits"],
        install: "python -m pip install aider-install && aider-install",
    },
    Preset {
        name: "amp",
        bin: "amp",
        args: &["-x", "--dangerously-allow-all", "--stream-json"],
        model_flag: "",
        trailing: &[],
        prompt: PromptMode::Stdin,
        format: Format::ClaudeStreamJson,
        env: &[],
        help: &["--help"],
        needs_flags: &["--stream-json", "--dangerously-allow-all"],
        install: "npm install -g @sourcegraph/amp",
    },
    Preset {
        name: "cursor",
        bin: "cursor-agent",
        args: &["-p", "--force", "--output-format", "stream-json"],
        model_flag: "--model",
        trailing: &[],
        prompt: PromptMode::Arg,
        format: Format::ClaudeStreamJson,
        env: &[],
        help: &["--help"],
        needs_flags: &["--output-format", "--force"],
        install: "curl https://cursor.com/install -fsS | bash",
    },
];

/// The names accepted by `[agent] preset`, `custom` included.
pub fn names() -> String {
    let mut n: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    n.push("custom");
    n.join(", ")
}

/// Finds a preset by name (`cursor-agent` is accepted for `cursor`).
pub fn find(name: &str) -> Option<&'static Preset> {
    let name = if name == "cursor-agent" { "cursor" } else { name };
    PRESETS.iter().find(|p| p.name == name)
}

/// The full command line: program, the preset's arguments, the model, the user's arguments,
/// the trailing ones.
pub fn command_line(p: &Preset, bin: Option<&str>, model: Option<&str>, user_args: &[String]) -> Vec<String> {
    let mut cmd = vec![bin.unwrap_or(p.bin).to_string()];
    cmd.extend(p.args.iter().map(|s| s.to_string()));
    if let Some(m) = model {
        cmd.push(p.model_flag.to_string());
        cmd.push(m.to_string());
    }
    cmd.extend(user_args.iter().cloned());
    cmd.extend(p.trailing.iter().map(|s| s.to_string()));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_streams_json_verbosely_with_the_prompt_on_stdin() {
        let p = find("claude").unwrap();
        let cmd = command_line(p, None, Some("sonnet"), &["--max-turns".into(), "30".into()]);
        assert_eq!(
            cmd.join(" "),
            "claude -p --output-format stream-json --verbose --dangerously-skip-permissions --model sonnet --max-turns 30"
        );
        assert_eq!(p.prompt, PromptMode::Stdin);
    }

    #[test]
    fn codex_reads_stdin_last() {
        let p = find("codex").unwrap();
        let cmd = command_line(p, Some("/opt/codex"), None, &["-c".into(), "x=1".into()]);
        assert_eq!(cmd.first().map(String::as_str), Some("/opt/codex"));
        assert_eq!(cmd.last().map(String::as_str), Some("-"));
    }

    #[test]
    fn every_preset_is_reachable_by_name() {
        for p in PRESETS {
            assert_eq!(find(p.name), Some(p));
            assert!(names().contains(p.name));
        }
        assert_eq!(find("cursor-agent").map(|p| p.name), Some("cursor"));
        assert!(find("gpt").is_none());
    }
}
