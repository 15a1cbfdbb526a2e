//! The coding agent: its settings ([`AgentConfig`], [`PromptMode`]: `[agent]` as
//! [`crate::config`] resolves it, re-exported there), how its command line is built and how
//! the prompt reaches it; [`scan`] reads what it prints; [`scripted`] is the agent that ships
//! with ralph for dry runs and tests.

pub mod fallback;
pub mod hazards;
pub mod limits;
pub mod output;
pub mod preset;
pub mod scan;
pub mod scripted;
pub mod session;

use crate::process::SpawnRequest;
use crate::sandbox::{Needs, SandboxConfig, SandboxError};
use output::Format;
use preset::Preset;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the rendered prompt reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// Written to the agent's stdin, which is then closed.
    #[default]
    Stdin,
    /// Passed as an argument: replaces `{prompt}` in the command, or is appended.
    Arg,
    /// The path of the saved `prompt.md`: replaces `{prompt_file}`, or is appended.
    File,
}

/// `[agent]` (and `[review]`), with defaults applied: built by [`crate::config`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// What the agent is called: its `[agents.NAME]` table's name, else its preset's, else its
    /// program's file name. The iteration record's `agent`, a task's `agent:` and `[agent]
    /// fallback` use it.
    pub name: String,
    /// The preset; `None` for a custom command.
    pub preset: Option<&'static Preset>,
    /// Program and arguments, the preset's resolved; never empty.
    pub command: Vec<String>,
    pub prompt: PromptMode,
    /// How its stdout is parsed.
    pub format: Format,
    /// The model asked for, if any.
    pub model: Option<String>,
    /// First wait after a usage or rate limit that names no reset time; doubles each time.
    pub retry_wait: Duration,
    /// The longest such wait.
    pub retry_wait_max: Duration,
    /// Wall clock per iteration.
    pub timeout: Duration,
    /// No output for this long: the agent is hung.
    pub idle_timeout: Duration,
    /// Between SIGTERM and SIGKILL when ralph stops the agent.
    pub kill_grace: Duration,
    /// Run the agent under a pseudo-terminal.
    pub pty: bool,
    /// The text that marks the task complete, when the agent itself prints it.
    pub completion_promise: String,
    /// Added to the agent's environment.
    pub env: BTreeMap<String, String>,
    /// agent.log is cut at this size, with a marker; the output is still read to the end.
    pub max_log_size: u64,
    /// Only allowlisted variables reach the agent, sandbox or not (`[agent] env_allowlist`).
    pub env_allowlist: bool,
}

/// Placeholder replaced by the prompt text in `prompt = "arg"` mode.
pub const PROMPT_PLACEHOLDER: &str = "{prompt}";
/// Placeholder replaced by the saved prompt's path in `prompt = "file"` mode.
pub const PROMPT_FILE_PLACEHOLDER: &str = "{prompt_file}";

/// Variables removed from the agent's environment. `CLAUDECODE` makes a child `claude` refuse
/// to start ("cannot be launched inside another Claude Code session", umputun/ralphex#156).
const ENV_REMOVE: &[&str] = &["CLAUDECODE"];

/// What ralph tells the agent about the iteration through its environment.
#[derive(Debug, Clone)]
pub struct IterationEnv {
    pub run_id: String,
    pub iteration: u32,
    pub task: String,
    /// The nth iteration spent on this task, across runs (1-based).
    pub task_iteration: u32,
    pub iter_dir: PathBuf,
}

/// Builds the agent's spawn request, put in `sandbox` (which cuts its environment to the
/// allowlist too, or does only that when `[agent] env_allowlist` asks for it without one).
pub fn request(
    cfg: &AgentConfig,
    sandbox: &SandboxConfig,
    root: &Path,
    prompt: &str,
    prompt_file: &Path,
    it: &IterationEnv,
) -> Result<SpawnRequest, SandboxError> {
    let mut args: Vec<String> = cfg.command[1..].to_vec();
    let mut stdin = None;
    match cfg.prompt {
        PromptMode::Stdin => stdin = Some(prompt.as_bytes().to_vec()),
        PromptMode::Arg => substitute_or_append(&mut args, PROMPT_PLACEHOLDER, prompt),
        PromptMode::File => {
            substitute_or_append(&mut args, PROMPT_FILE_PLACEHOLDER, &prompt_file.to_string_lossy())
        }
    }
    let mut env: Vec<(String, String)> = cfg.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("RALPH_RUN_ID".to_string(), it.run_id.clone()),
        // With the run id, marks the agent's processes as this repository's run (crash recovery).
        ("RALPH_ROOT".to_string(), root.to_string_lossy().into_owned()),
        ("RALPH_ITERATION".to_string(), it.iteration.to_string()),
        ("RALPH_TASK".to_string(), it.task.clone()),
        ("RALPH_TASK_ITERATION".to_string(), it.task_iteration.to_string()),
        ("RALPH_ITER_DIR".to_string(), it.iter_dir.to_string_lossy().into_owned()),
        ("RALPH_PROMPT_FILE".to_string(), prompt_file.to_string_lossy().into_owned()),
    ]);
    if hazards::tell_sandboxed(cfg, sandbox.kind != crate::sandbox::Kind::None) {
        env.push(("IS_SANDBOX".into(), "1".into()));
    }
    let req = SpawnRequest {
        args,
        env_remove: ENV_REMOVE.iter().map(|s| s.to_string()).collect(),
        stdin,
        pty: cfg.pty,
        ..SpawnRequest::program(&cfg.command[0], &[], root, env)
    };
    if sandbox.kind == crate::sandbox::Kind::None && !cfg.env_allowlist {
        // Nothing to confine: no need to look for the program again (once per iteration).
        return Ok(req);
    }
    crate::sandbox::apply(sandbox, cfg.env_allowlist, req, &needs(cfg, root, Some(prompt_file)))
}

/// What the agent needs from outside its worktree in a sandbox: its preset's configuration
/// and variables (a custom command running a preset's program gets that preset's), its
/// program as ralph finds it, the prompt.
pub fn needs(cfg: &AgentConfig, root: &Path, prompt_file: Option<&Path>) -> Needs {
    let p = cfg.preset.or_else(|| preset::by_program(&cfg.command[0]));
    Needs {
        home: p.map_or(&[][..], |p| p.home),
        home_env: p.map_or(&[][..], |p| p.home_env),
        env: p.map(|p| p.credentials_env.iter().chain(p.settings_env).copied().collect()).unwrap_or_default(),
        program: resolve_program(cfg, root),
        prompt_file: prompt_file.map(Path::to_path_buf),
    }
}

fn substitute_or_append(args: &mut Vec<String>, placeholder: &str, value: &str) {
    let mut found = false;
    for a in args.iter_mut() {
        if a.contains(placeholder) {
            *a = a.replace(placeholder, value);
            found = true;
        }
    }
    if !found {
        args.push(value.to_string());
    }
}

/// Finds the agent's program: a path (relative to the repository root) or a name on PATH
/// (the agent's configured PATH first).
pub fn resolve_program(cfg: &AgentConfig, root: &Path) -> Option<PathBuf> {
    let program = &cfg.command[0];
    if program.contains('/') {
        let p = Path::new(program);
        let p = if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
        return crate::process::is_executable(&p).then_some(p);
    }
    let path = cfg.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok())?;
    crate::process::find_on(&path, program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(toml: &str) -> AgentConfig {
        Config::parse(Path::new("ralph.toml"), toml).unwrap().agent
    }

    fn it() -> IterationEnv {
        IterationEnv {
            run_id: "r".into(),
            iteration: 2,
            task: "010-a".into(),
            task_iteration: 1,
            iter_dir: "/x".into(),
        }
    }

    fn request(c: &AgentConfig, root: &Path, prompt: &str, pf: &Path, it: &IterationEnv) -> SpawnRequest {
        super::request(c, &SandboxConfig::default(), root, prompt, pf, it).unwrap()
    }

    #[test]
    fn prompt_modes() {
        let pf = Path::new("/tmp/p.md");
        let r = request(&cfg("[agent]\ncommand=[\"a\",\"-x\"]\n"), Path::new("/r"), "P", pf, &it());
        assert_eq!(r.args, vec!["-x"]);
        assert_eq!(r.stdin.as_deref(), Some(&b"P"[..]));

        let c = cfg("[agent]\ncommand=[\"a\",\"-p\",\"{prompt}\",\"-y\"]\nprompt=\"arg\"\n");
        let r = request(&c, Path::new("/r"), "P", pf, &it());
        assert_eq!(r.args, vec!["-p", "P", "-y"]);
        assert!(r.stdin.is_none());

        let c = cfg("[agent]\ncommand=[\"a\"]\nprompt=\"file\"\n");
        let r = request(&c, Path::new("/r"), "P", pf, &it());
        assert_eq!(r.args, vec!["/tmp/p.md"]);
        assert!(r.env.contains(&("RALPH_TASK".into(), "010-a".into())));
        assert!(r.env_remove.contains(&"CLAUDECODE".to_string()));
    }
}
