//! Agent presets: for each supported CLI, its unattended one-shot command line, how the prompt
//! goes in, its machine-readable output format, the environment it needs, and what ralph knows
//! about it (its provider, whether it reports a cost, the instructions file it reads, its
//! quirks). Facts per CLI are in the project's research notes (agent-clis.md) and were checked
//! against the installed versions the real-agent suite pins (tests/real-agents/package.json).
//! Telemetry and the hazard checks read these facts from here, never by the CLI's name.

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
    /// The environment variables that carry its credentials when it runs unattended (with the
    /// endpoint settings that go with them), the usual one first: what `ralph deploy` hands the
    /// workers from a secret. Presets that can talk to several providers list the common ones.
    pub credentials_env: &'static [&'static str],
    /// The one provider the CLI talks to, for telemetry's GenAI attributes; `None` where it can
    /// be pointed at several (opencode, pi, aider, qwen) or hides which (amp, cursor).
    pub provider: Option<Provider>,
    /// Whether its output carries the cost of the run (README: the record's `cost_usd`);
    /// the real-agent suite asserts it. Only formats that have a cost field can.
    pub reports_cost: bool,
    /// The instructions file it reads by itself.
    pub reads: Instructions,
    /// What goes wrong when it runs unattended, checked by [`super::hazards`].
    pub quirks: &'static [Quirk],
    /// Its configuration and credentials under the home directory (files or folders, relative
    /// to it): what a sandbox binds read-write into the agent's otherwise empty home.
    pub home: &'static [&'static str],
    /// Variables that move that configuration elsewhere (a folder, bound read-write as well
    /// when set).
    pub home_env: &'static [&'static str],
    /// The variables it reads for its settings, beyond `credentials_env`: what the
    /// environment allowlist lets through for it (`NAME`, or `PREFIX_*`).
    pub settings_env: &'static [&'static str],
}

/// A provider in the OpenTelemetry GenAI conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// `gen_ai.provider.name`.
    pub name: &'static str,
    /// `gen_ai.system`, the older attribute (differs for Gemini).
    pub system: &'static str,
}

/// The instructions file a CLI picks up from the working tree by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instructions {
    /// `AGENTS.md`, ralph's own.
    AgentsMd,
    /// `CLAUDE.md` only, not `AGENTS.md` (anthropics/claude-code#6235).
    ClaudeMd,
    /// `GEMINI.md` unless `context.fileName` in `.gemini/settings.json` says otherwise.
    GeminiMd,
    /// Nothing unless told (aider's `--read`).
    Nothing,
}

/// A known way the CLI fails when run unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// As root it refuses `--dangerously-skip-permissions` unless `IS_SANDBOX=1`.
    RootNeedsIsSandbox,
    /// `-p --output-format stream-json` exits 1 without `--verbose`.
    StreamJsonNeedsVerbose,
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
        credentials_env: &["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"],
        provider: Some(Provider { name: "anthropic", system: "anthropic" }),
        reports_cost: true,
        reads: Instructions::ClaudeMd,
        quirks: &[Quirk::RootNeedsIsSandbox, Quirk::StreamJsonNeedsVerbose],
        home: &[".claude", ".claude.json"],
        home_env: &["CLAUDE_CONFIG_DIR"],
        settings_env: &[
            "ANTHROPIC_*",
            "CLAUDE_*",
            "IS_SANDBOX",
            "DISABLE_TELEMETRY",
            "DISABLE_AUTOUPDATER",
            "DISABLE_ERROR_REPORTING",
            "DISABLE_COST_WARNINGS",
            "MAX_THINKING_TOKENS",
            "BASH_DEFAULT_TIMEOUT_MS",
            "BASH_MAX_TIMEOUT_MS",
        ],
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
        credentials_env: &["CODEX_API_KEY", "OPENAI_API_KEY"],
        provider: Some(Provider { name: "openai", system: "openai" }),
        reports_cost: false,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".codex"],
        home_env: &["CODEX_HOME"],
        settings_env: &["OPENAI_*", "CODEX_*"],
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
        credentials_env: &["GEMINI_API_KEY"],
        provider: Some(Provider { name: "gcp.gemini", system: "gemini" }),
        reports_cost: false,
        reads: Instructions::GeminiMd,
        quirks: &[],
        home: &[".gemini"],
        home_env: &[],
        settings_env: &["GEMINI_*", "GOOGLE_*"],
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
        credentials_env: &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"],
        provider: None,
        reports_cost: true,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".config/opencode", ".local/share/opencode", ".local/state/opencode", ".cache/opencode"],
        home_env: &[],
        settings_env: &["OPENCODE_*", "ANTHROPIC_*", "OPENAI_*", "OPENROUTER_*", "GEMINI_*"],
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
        credentials_env: &["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"],
        provider: None,
        reports_cost: true,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".pi"],
        home_env: &["PI_CODING_AGENT_DIR"],
        settings_env: &["PI_*", "ANTHROPIC_*", "OPENAI_*", "GEMINI_*", "OPENROUTER_*"],
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
        credentials_env: &["OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"],
        provider: None,
        // Its result may carry total_cost_usd (qwen-code types.ts): not verified, so not promised.
        reports_cost: false,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".qwen"],
        home_env: &[],
        settings_env: &["QWEN_*", "OPENAI_*", "DASHSCOPE_*"],
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
        credentials_env: &["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
        provider: None,
        reports_cost: true,
        reads: Instructions::Nothing,
        quirks: &[],
        home: &[".aider", ".aider.conf.yml", ".aider.model.settings.yml", ".aider.model.metadata.json"],
        home_env: &[],
        settings_env: &["AIDER_*", "OPENAI_*", "ANTHROPIC_*", "GEMINI_*", "OPENROUTER_*"],
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
        credentials_env: &["AMP_API_KEY"],
        provider: None,
        reports_cost: false,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".config/amp", ".local/share/amp", ".cache/amp"],
        home_env: &[],
        settings_env: &["AMP_*"],
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
        credentials_env: &["CURSOR_API_KEY"],
        provider: None,
        reports_cost: false,
        reads: Instructions::AgentsMd,
        quirks: &[],
        home: &[".cursor", ".config/cursor"],
        home_env: &[],
        settings_env: &["CURSOR_*"],
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

/// The preset whose program `program` (a path or a name) runs, so a custom command gets
/// that CLI's facts.
pub fn by_program(program: &str) -> Option<&'static Preset> {
    let name = std::path::Path::new(program).file_name()?;
    PRESETS.iter().find(|p| name == p.bin)
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

    #[test]
    fn every_presets_facts_are_consistent() {
        // The GenAI names telemetry reported before the facts moved here.
        let providers: Vec<_> =
            PRESETS.iter().filter_map(|p| p.provider.map(|v| (p.name, v.name, v.system))).collect();
        assert_eq!(
            providers,
            [
                ("claude", "anthropic", "anthropic"),
                ("codex", "openai", "openai"),
                ("gemini", "gcp.gemini", "gemini")
            ]
        );
        for p in PRESETS {
            // Only these formats have a cost field.
            let costed = matches!(
                p.format,
                Format::ClaudeStreamJson | Format::OpencodeJson | Format::PiJson | Format::AiderText
            );
            assert!(!p.reports_cost || costed, "{} reports a cost its format cannot carry", p.name);
            // The preset's own command line never trips its own quirks.
            if p.quirks.contains(&Quirk::StreamJsonNeedsVerbose) {
                assert!(p.args.contains(&"--verbose"), "{}", p.name);
            }
            if p.quirks.contains(&Quirk::RootNeedsIsSandbox) {
                assert!(p.args.contains(&"--dangerously-skip-permissions"), "{}", p.name);
            }
            assert_eq!(by_program(p.bin), Some(p));
            assert_eq!(by_program(&format!("/usr/local/bin/{}", p.bin)), Some(p));
            // `ralph deploy` names these in launchers: environment variable names, at least one.
            assert!(!p.credentials_env.is_empty(), "{} names no credential", p.name);
            for v in p.credentials_env {
                assert!(v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'), "{v}");
            }
        }
        // The README's record field: Claude, opencode, pi and aider report a cost.
        let costing: Vec<_> = PRESETS.iter().filter(|p| p.reports_cost).map(|p| p.name).collect();
        assert_eq!(costing, ["claude", "opencode", "pi", "aider"]);
        let claude_md: Vec<_> =
            PRESETS.iter().filter(|p| p.reads == Instructions::ClaudeMd).map(|p| p.name).collect();
        assert_eq!(claude_md, ["claude"]);
        assert_eq!(by_program("cursor").map(|p| p.name), None);
        assert_eq!(by_program("/opt/claude-beta"), None);
    }
}
