//! Known hazards of running agent CLIs unattended, checked before a run (problems stop it
//! with a clear message) and listed by `ralph doctor`. Which CLI has which quirk is a fact of
//! its preset ([`Preset::quirks`], [`Preset::reads`]), found for a custom command by its program.

use super::preset::{self, Instructions, Preset, Quirk};
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

/// The presets whose facts apply: the configured one, and the one whose program the command
/// runs (a custom command running `claude` has claude's quirks; so has a preset pointed at it
/// through `bin`).
fn presets(cfg: &AgentConfig) -> impl Iterator<Item = &'static Preset> {
    let program = cfg.command.first().and_then(|p| preset::by_program(p));
    cfg.preset.into_iter().chain(program.filter(|p| Some(*p) != cfg.preset))
}

/// The CLI with this quirk, if the agent is one.
fn with_quirk(cfg: &AgentConfig, q: Quirk) -> Option<&'static str> {
    presets(cfg).find(|p| p.quirks.contains(&q)).map(|p| p.name)
}

/// Whether ralph tells this agent it runs in a sandbox (`IS_SANDBOX=1`): it does, under
/// `[sandbox] kind = "bwrap"` or `"container"`, to a CLI that refuses to run as root without
/// it, unless ralph.toml sets the variable itself. The sandbox is what the variable claims.
pub fn tell_sandboxed(cfg: &AgentConfig, sandboxed: bool) -> bool {
    sandboxed && with_quirk(cfg, Quirk::RootNeedsIsSandbox).is_some() && !cfg.env.contains_key("IS_SANDBOX")
}

/// The variables ralph's environment gives an agent, for [`check`]: ralph's own, and
/// `IS_SANDBOX=1` when the agent runs sandboxed (see [`tell_sandboxed`]).
pub fn agent_env(sandboxed: bool) -> impl Fn(&str) -> Option<String> {
    move |k: &str| if sandboxed && k == "IS_SANDBOX" { Some("1".into()) } else { std::env::var(k).ok() }
}

/// The hazards of this agent configuration on this machine, given the environment ralph runs
/// in (`env` reads a variable; tests pass their own).
pub fn check(cfg: &AgentConfig, euid: u32, env: &dyn Fn(&str) -> Option<String>) -> Vec<Hazard> {
    let mut out = Vec::new();
    let has = |flag: &str| cfg.command.iter().any(|a| a == flag);
    if let Some(cli) = with_quirk(cfg, Quirk::RootNeedsIsSandbox) {
        let sandbox = cfg.env.get("IS_SANDBOX").cloned().or_else(|| env("IS_SANDBOX"));
        if euid == 0 && has("--dangerously-skip-permissions") && sandbox.as_deref() != Some("1") {
            out.push(Hazard {
                level: Level::Problem,
                message: format!(
                    "ralph runs as root, and {cli} refuses --dangerously-skip-permissions as root unless IS_SANDBOX=1"
                ),
                hint: Some(
                    "run it sandboxed ([sandbox] kind = \"bwrap\": ralph then sets IS_SANDBOX=1), or on a disposable machine add IS_SANDBOX = \"1\" under [agent.env]; otherwise run ralph as a normal user".into(),
                ),
            });
        }
    }
    if let Some(cli) = with_quirk(cfg, Quirk::StreamJsonNeedsVerbose)
        && has("stream-json")
        && (has("-p") || has("--print"))
        && !has("--verbose")
    {
        out.push(Hazard {
            level: Level::Problem,
            message: format!("{cli} -p --output-format stream-json exits 1 without --verbose"),
            hint: Some(format!("add \"--verbose\" to the command, or use preset = \"{cli}\"")),
        });
    }
    if presets(cfg).any(|p| p.reads == Instructions::ClaudeMd) {
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
    fn a_sandboxed_claude_is_told_so_unless_ralph_toml_says_otherwise() {
        let c = cfg("[agent]\npreset = \"claude\"\n");
        assert!(tell_sandboxed(&c, true) && !tell_sandboxed(&c, false));
        assert_eq!(agent_env(true)("IS_SANDBOX").as_deref(), Some("1"));
        assert!(problems(&c, 0, &agent_env(true)).is_empty());
        // The user's own value stands; other CLIs are not told.
        let own = cfg("[agent]\npreset = \"claude\"\n[agent.env]\nIS_SANDBOX = \"0\"\n");
        assert!(!tell_sandboxed(&own, true));
        assert!(!tell_sandboxed(&cfg("[agent]\npreset = \"codex\"\n"), true));
    }

    #[test]
    fn custom_claude_without_verbose() {
        let c = cfg("[agent]\ncommand = [\"claude\", \"-p\", \"--output-format\", \"stream-json\"]\n");
        assert!(problems(&c, 1000, &|_| None)[0].contains("--verbose"));
    }

    #[test]
    fn a_custom_command_running_claude_by_path_has_its_hazards() {
        let c = cfg(
            "[agent]\ncommand = [\"/usr/local/bin/claude\", \"-p\", \"--dangerously-skip-permissions\"]\n",
        );
        assert_eq!(problems(&c, 0, &|_| None).len(), 1);
        let notes = check(&c, 1000, &|_| None);
        assert!(notes.iter().any(|h| h.message.contains("CLAUDE.md")), "{notes:?}");
        let c = cfg(
            "[agent]\ncommand = [\"/usr/local/bin/codex\", \"-p\", \"--dangerously-skip-permissions\"]\n",
        );
        assert!(check(&c, 0, &|_| None).is_empty());
    }
}
