//! Known hazards of running agent CLIs unattended, checked before a run (problems stop it
//! with a clear message) and listed by `ralph doctor`.

use super::{AgentConfig, PromptMode};

/// How serious a hazard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The run would fail, or fail obscurely: refuse to start.
    Problem,
    /// Handled by ralph; worth knowing.
    Note,
}

/// One hazard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hazard {
    pub level: Level,
    pub message: String,
    pub hint: Option<String>,
}

fn is_claude(cfg: &AgentConfig) -> bool {
    cfg.preset.is_some_and(|p| p.name == "claude")
        || std::path::Path::new(&cfg.command[0]).file_name().is_some_and(|n| n == "claude")
}

/// The hazards of this agent configuration on this machine, given the environment ralph runs
/// in (`env` reads a variable; tests pass their own).
pub fn check(cfg: &AgentConfig, euid: u32, env: &dyn Fn(&str) -> Option<String>) -> Vec<Hazard> {
    let mut out = Vec::new();
    let has = |flag: &str| cfg.command.iter().any(|a| a == flag);
    if is_claude(cfg) {
        let sandbox = cfg.env.get("IS_SANDBOX").cloned().or_else(|| env("IS_SANDBOX"));
        if euid == 0 && has("--dangerously-skip-permissions") && sandbox.as_deref() != Some("1") {
            out.push(Hazard {
                level: Level::Problem,
                message: "ralph runs as root, and claude refuses --dangerously-skip-permissions as root unless IS_SANDBOX=1".into(),
                hint: Some(
                    "on a disposable sandbox or container, add IS_SANDBOX = \"1\" under [agent.env]; otherwise run ralph as a normal user".into(),
                ),
            });
        }
        if has("stream-json") && (has("-p") || has("--print")) && !has("--verbose") {
            out.push(Hazard {
                level: Level::Problem,
                message: "claude -p --output-format stream-json exits 1 without --verbose".into(),
                hint: Some("add \"--verbose\" to the command, or use preset = \"claude\"".into()),
            });
        }
        out.push(Hazard {
            level: Level::Note,
            message: "Claude Code reads CLAUDE.md, not AGENTS.md: ralph puts AGENTS.md into every prompt"
                .into(),
            hint: None,
        });
    }
    if env("CLAUDECODE").is_some() {
        out.push(Hazard {
            level: Level::Note,
            message: "CLAUDECODE is set (ralph runs inside Claude Code): it is removed from the agent's environment so a child claude still starts".into(),
            hint: None,
        });
    }
    if cfg.pty && cfg.prompt == PromptMode::Stdin {
        out.push(Hazard {
            level: Level::Problem,
            message: "[agent] pty = true needs prompt = \"arg\" or \"file\": a terminal's input line is too short for a prompt".into(),
            hint: None,
        });
    }
    out
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn cfg(toml: &str) -> AgentConfig {
        Config::parse(Path::new("ralph.toml"), toml).unwrap().agent
    }

    fn problems(c: &AgentConfig, euid: u32, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        check(c, euid, env).into_iter().filter(|h| h.level == Level::Problem).map(|h| h.message).collect()
    }

    #[test]
    fn claude_as_root_needs_is_sandbox() {
        let none = |_: &str| None;
        let c = cfg("[agent]\npreset = \"claude\"\n");
        assert_eq!(problems(&c, 0, &none).len(), 1);
        assert!(problems(&c, 1000, &none).is_empty());
        let sandbox = |k: &str| (k == "IS_SANDBOX").then(|| "1".to_string());
        assert!(problems(&c, 0, &sandbox).is_empty());
        let c = cfg("[agent]\npreset = \"claude\"\n[agent.env]\nIS_SANDBOX = \"1\"\n");
        assert!(problems(&c, 0, &none).is_empty());
    }

    #[test]
    fn custom_claude_without_verbose() {
        let c = cfg("[agent]\ncommand = [\"claude\", \"-p\", \"--output-format\", \"stream-json\"]\n");
        assert!(problems(&c, 1000, &|_| None)[0].contains("--verbose"));
    }
}
