//! `ralph.toml`: the project's configuration, its defaults, and the command-line overrides.
//!
//! Precedence: built-in defaults < `ralph.toml` < command-line flags. Unknown keys are errors,
//! so a typo never silently falls back to a default. Every error names the file and line.

use crate::agent::output::Format;
use crate::agent::preset;
pub use crate::agent::scan::DEFAULT_PROMISE;
pub use crate::agent::{AgentConfig, PromptMode};
pub use crate::sandbox::SandboxConfig;
pub use crate::text::{line_col, parse_duration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration file's name, at the repository root.
pub const FILE_NAME: &str = "ralph.toml";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// A value is well-formed TOML but makes no sense.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A duration written as "30m", "1h 30m", "45s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

/// A size written as "100MB", "1GiB", "512KB" or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_size(&s).map(ByteSize).map_err(serde::de::Error::custom)
    }
}

/// Parses "100MB" (10^6), "100MiB" (2^20), "1GB", "512KB", "4096".
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 =
        num.parse().map_err(|_| format!("invalid size `{s}`; write it like \"100MB\" or \"1GiB\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size unit `{other}` in `{s}` (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    Ok((n * mult) as u64)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    agent: AgentFile,
    /// `[agents.NAME]`: agents by name, each with the keys of `[agent]`.
    #[serde(default)]
    agents: BTreeMap<String, toml::Spanned<AgentFile>>,
    review: Option<AgentFile>,
    #[serde(default)]
    checks: ChecksFile,
    #[serde(default)]
    budget: BudgetFile,
    #[serde(default)]
    git: GitFile,
    #[serde(default)]
    prompt: PromptFile,
    #[serde(default)]
    learnings: LearningsFile,
    #[serde(default)]
    gates: GatesFile,
    #[serde(default)]
    backlog: BacklogFile,
    #[serde(default)]
    telemetry: TelemetryFile,
    #[serde(default)]
    parallel: ParallelFile,
    #[serde(default)]
    tune: TuneFile,
    #[serde(default)]
    remote: RemoteFile,
    #[serde(default)]
    sandbox: SandboxFile,
    #[serde(default)]
    notify: Vec<toml::Spanned<NotifyFile>>,
    #[serde(default)]
    hooks: HooksFile,
}

/// `[sandbox]`: where the agent runs (see [`crate::sandbox`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxFile {
    kind: Option<crate::sandbox::Kind>,
    network: Option<bool>,
    read_only: Option<Vec<String>>,
    read_write: Option<Vec<String>>,
    env: Option<Vec<String>>,
    checks: Option<bool>,
    image: Option<String>,
    engine: Option<crate::sandbox::Engine>,
}

impl SandboxFile {
    fn resolve(self) -> Result<SandboxConfig, String> {
        let d = SandboxConfig::default();
        let cfg = SandboxConfig {
            kind: self.kind.unwrap_or(d.kind),
            network: self.network.unwrap_or(d.network),
            read_only: self.read_only.unwrap_or_default(),
            read_write: self.read_write.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            checks: self.checks.unwrap_or(d.checks),
            image: self.image.filter(|i| !i.trim().is_empty()),
            engine: self.engine,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteFile {
    name: Option<String>,
    lease_ttl: Option<HumanDuration>,
    land: Option<Land>,
    max_cost: Option<f64>,
}

/// `[remote] land`: how a remote worker's finished task reaches the target branch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Land {
    /// One atomic push moves the target (the default).
    #[default]
    Push,
    /// A branch `ralph/<task>` is pushed for the forge's own merge queue to land (protected
    /// branches); the task's claim stays, marked pending, until the target has it done.
    PullRequest,
}

/// `[remote]`: workers on many machines, coordinated through a git remote (`ralph worker`).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// The remote (default `origin`).
    pub name: String,
    /// How long a claim may stay unchanged, as its observer's own clock times it, before
    /// another worker may take it over (default 5 minutes).
    pub lease_ttl: Duration,
    pub land: Land,
    /// The cost all workers together may spend, summed from the landed commits' `Ralph-Cost`
    /// trailers: no worker claims a task once it is reached.
    pub max_cost: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TuneFile {
    reflector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParallelFile {
    workers: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryFile {
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacklogFile {
    reopen_changed: Option<bool>,
    file: Option<PathBuf>,
    on_spec_edit: Option<SpecEdit>,
}

/// `[backlog] on_spec_edit`: what an edit of the running task's spec does to its iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpecEdit {
    /// Stop the agent, put its work back, and run the task again with the new spec.
    #[default]
    Restart,
    /// Let the iteration finish on the spec it started with; the edit applies next.
    Finish,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    protected: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearningsFile {
    max_bytes: Option<usize>,
    max_entry_chars: Option<usize>,
    require_review: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    preset: Option<String>,
    command: Option<Vec<String>>,
    bin: Option<String>,
    model: Option<String>,
    args: Option<Vec<String>>,
    output_format: Option<Format>,
    retry_wait: Option<HumanDuration>,
    retry_wait_max: Option<HumanDuration>,
    prompt: Option<PromptMode>,
    max_log_size: Option<ByteSize>,
    timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    kill_grace: Option<HumanDuration>,
    pty: Option<bool>,
    completion_promise: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `[agent]` only.
    fallback: Option<Vec<toml::Spanned<String>>>,
    /// `[agent]` only.
    fallback_after: Option<HumanDuration>,
    env_allowlist: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    commands: Option<Vec<String>>,
    timeout: Option<HumanDuration>,
    gate: Option<Gate>,
}

/// What the checks must show for work to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// No failure the clean tree did not already have (per test for the common runners).
    #[default]
    NoNewFailures,
    /// Every check passes.
    AllGreen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    max_iterations: Option<u32>,
    max_duration: Option<HumanDuration>,
    max_tokens: Option<u64>,
    max_cost: Option<Dollars>,
    max_attempts: Option<u32>,
    max_task_tokens: Option<u64>,
    max_task_duration: Option<HumanDuration>,
    max_consecutive_failures: Option<u32>,
    max_no_change: Option<u32>,
    max_same_failure: Option<u32>,
    on_breaker: Option<OnBreaker>,
    context_tokens: Option<u64>,
}

/// What a circuit breaker does when it trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBreaker {
    /// Stop the run (exit 3).
    #[default]
    Stop,
    /// Block the task with the reason and go on with the next.
    Block,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitFile {
    branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    template: Option<toml::Spanned<RepoPath>>,
    plan_template: Option<toml::Spanned<RepoPath>>,
}

/// A cost limit in US dollars: a finite number, zero or more (`nan` would compare false with
/// every cost and so disable the budget; a negative one would end every run at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dollars(pub f64);

impl<'de> Deserialize<'de> for Dollars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_dollars(f64::deserialize(d)?).map(Dollars).map_err(serde::de::Error::custom)
    }
}

/// Checks a cost limit (ralph.toml's `max_cost`, `--max-cost`).
pub fn parse_dollars(v: f64) -> Result<f64, String> {
    if !v.is_finite() {
        Err(format!("a cost limit must be a number of US dollars, not {v}"))
    } else if v < 0.0 {
        Err(format!("a cost limit cannot be negative ({v})"))
    } else {
        Ok(v)
    }
}

/// A path inside the repository, relative to its root: never absolute, never through `..`.
/// (A symbolic link out of the repository is caught when the file is loaded: [`Config::load`].)
#[derive(Debug, Clone, PartialEq)]
pub struct RepoPath(pub PathBuf);

impl<'de> Deserialize<'de> for RepoPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = PathBuf::deserialize(d)?;
        if p.as_os_str().is_empty()
            || p.is_absolute()
            || p.components().any(|c| c == std::path::Component::ParentDir)
        {
            return Err(serde::de::Error::custom(format!(
                "`{}` must be a path inside the repository, relative to it",
                p.display()
            )));
        }
        Ok(RepoPath(p))
    }
}

/// The checks section, with defaults applied.
#[derive(Debug, Clone)]
pub struct ChecksConfig {
    /// Shell commands, run in order by `sh -c` at the repository root.
    pub commands: Vec<String>,
    /// Per command.
    pub timeout: Duration,
    pub gate: Gate,
}

/// The budget section, with defaults applied.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    pub max_iterations: u32,
    /// Active time (ralph running), across stops and resumptions.
    pub max_duration: Option<Duration>,
    /// Tokens the agents reported, all kinds added up.
    pub max_tokens: Option<u64>,
    /// US dollars the agents reported.
    pub max_cost: Option<f64>,
    pub max_attempts: u32,
    /// Per task, across runs; then it is blocked.
    pub max_task_tokens: Option<u64>,
    /// Per task (time its iterations took), across runs; then it is blocked.
    pub max_task_duration: Option<Duration>,
    pub max_consecutive_failures: u32,
    /// Circuit breaker: iterations in a row that change no file.
    pub max_no_change: Option<u32>,
    /// Circuit breaker: iterations in a row with the same failure.
    pub max_same_failure: Option<u32>,
    pub on_breaker: OnBreaker,
    /// Context size at which the agent is ended gracefully and the next iteration starts fresh.
    pub context_tokens: Option<u64>,
}

/// Command-line flags that change how the file is read (others are applied after).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--agent NAME`: the preset, replacing the file's preset or command.
    pub agent: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    pub agent: AgentConfig,
    /// `[agent] fallback`: the agents that run, in this order, while the ones before them are
    /// limited or cannot authenticate (see [`crate::agent::fallback`]).
    pub fallback: Vec<AgentConfig>,
    /// `[agent] fallback_after`: a usage limit that resets later than this falls back to the
    /// next agent; a shorter one is waited out (default 5 minutes).
    pub fallback_after: Duration,
    /// `[agents.NAME]`: agents by name, for `fallback` and a task's `agent:`.
    pub agents: BTreeMap<String, AgentConfig>,
    /// `[review]`: a second agent that approves or rejects green work before it is committed.
    pub review: Option<AgentConfig>,
    pub checks: ChecksConfig,
    pub budget: BudgetConfig,
    /// Branch to create or check out before the first iteration.
    pub branch: Option<String>,
    /// Prompt template override, relative to the repository root.
    pub template: Option<PathBuf>,
    /// `ralph plan`'s template override, relative to the repository root.
    pub plan_template: Option<PathBuf>,
    pub learnings: crate::learnings::Settings,
    /// `[gates] protected`: glob patterns replacing the default protected paths.
    pub protected: Option<Vec<String>>,
    /// `[backlog] reopen_changed`: a done spec edited since is reopened (default true).
    pub reopen_changed: bool,
    /// `[backlog] file`: a prd.json or checklist plan to use instead of `specs/`.
    pub backlog_file: Option<PathBuf>,
    /// `[backlog] on_spec_edit`.
    pub on_spec_edit: SpecEdit,
    /// `[telemetry] otlp_endpoint`: where OTLP/HTTP traces go (off when unset and no
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` is set); validated as an `http://` URL.
    pub otlp_endpoint: Option<String>,
    /// `[parallel] workers`: tasks run at once, each in its own worktree (1: the single loop).
    pub workers: u32,
    /// `[tune] reflector`: the preset `ralph tune`'s reflector runs with (default: the agent).
    pub tune_reflector: Option<String>,
    pub remote: RemoteConfig,
    /// `[sandbox]`: where every agent runs, and what of the environment reaches it.
    pub sandbox: SandboxConfig,
    /// `[[notify]]`: where the run's events are sent, in the file's order.
    pub notify: Vec<NotifyConfig>,
    /// `[hooks]`: the user's commands at the loop's lifecycle points.
    pub hooks: HooksConfig,
}

impl Config {
    /// Where the tasks are kept.
    pub fn source(&self, root: &Path) -> crate::backlog::Source {
        crate::backlog::Source::resolve(root, self.backlog_file.as_deref())
    }

    /// The agent called `name`: the main agent, a fallback, an `[agents.NAME]` table, or a
    /// preset with its defaults (in that order).
    pub fn agent_named(&self, name: &str) -> Option<AgentConfig> {
        if name == self.agent.name {
            return Some(self.agent.clone());
        }
        if let Some(a) = self.fallback.iter().find(|a| a.name == name).or_else(|| self.agents.get(name)) {
            return Some(a.clone());
        }
        preset_agent(name)
    }

    /// The agents an iteration may run, by name, in order of preference: the task's own
    /// (`agent:` in its front matter) first, then the main agent and its fallbacks.
    pub fn chain(&self, task_agent: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = task_agent.map(str::to_string).into_iter().collect();
        for a in std::iter::once(&self.agent).chain(&self.fallback) {
            if !names.contains(&a.name) {
                names.push(a.name.clone());
            }
        }
        names
    }

    /// The environment every configured agent adds (the main one, its fallbacks, the
    /// `[agents]` tables): its values are masked as secrets wherever ralph writes.
    pub fn agents_env(&self) -> Vec<(String, String)> {
        std::iter::once(&self.agent)
            .chain(&self.fallback)
            .chain(self.agents.values())
            .flat_map(|a| a.env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }
}

/// A preset with its defaults, named as the preset: what `[agent] fallback` and a task's
/// `agent:` mean by a preset's name.
fn preset_agent(name: &str) -> Option<AgentConfig> {
    preset::find(name)?;
    let file = AgentFile { preset: Some(name.to_string()), ..AgentFile::default() };
    let invalid = |message: String| ConfigError::Invalid { path: PathBuf::new(), message };
    resolve_agent(&file, name, None, &invalid).ok()
}

/// The backlog's source from `ralph.toml` alone, for read-only commands that must work even
/// when the rest of the file is broken (`ralph status`): `[backlog] file`, else detected.
pub fn backlog_source(root: &Path) -> crate::backlog::Source {
    let configured = crate::fsx::read_input(&root.join(FILE_NAME))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("backlog")?.get("file")?.as_str().map(PathBuf::from));
    crate::backlog::Source::resolve(root, configured.as_deref())
}

/// Defaults, documented in the README's configuration reference.
pub mod defaults {
    use std::time::Duration;
    pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    /// The most `[parallel] workers` (and `-j`): each is a checkout, an agent and its checks.
    pub const MAX_WORKERS: u32 = 32;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Long enough for an agent to save its session, short enough not to stall the loop.
    pub const KILL_GRACE: Duration = Duration::from_secs(5);
    pub const CHECKS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
    /// A night's worth; a loop with no limit at all is how peers burn money.
    pub const MAX_ITERATIONS: u32 = 100;
    pub const MAX_ATTEMPTS: u32 = 3;
    pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;
    /// Breakers: three strikes; 0 in ralph.toml turns one off.
    pub const MAX_NO_CHANGE: u32 = 3;
    pub const MAX_SAME_FAILURE: u32 = 3;
    /// Enough for any honest agent's night; a runaway one is cut here.
    pub const MAX_LOG_SIZE: u64 = 100 * 1024 * 1024;
    pub const RETRY_WAIT: Duration = Duration::from_secs(60);
    pub const RETRY_WAIT_MAX: Duration = Duration::from_secs(3600);
    /// A limit that resets sooner is waited out on the same agent: switching costs a fresh
    /// start on another model, worth it only for a long wait.
    pub const FALLBACK_AFTER: Duration = Duration::from_secs(5 * 60);
}

impl Config {
    /// Reads `ralph.toml` from `root`.
    pub fn load(root: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = crate::fsx::read_input(&root.join(FILE_NAME))
            .map_err(|source| ConfigError::Read { path: PathBuf::from(FILE_NAME), source })?;
        let cfg = Self::parse_with(Path::new(FILE_NAME), &text, overrides)?;
        templates_inside(root, &text)?;
        Ok(cfg)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with(path, text, &Overrides::default())
    }

    /// Parses configuration text with command-line overrides applied.
    pub fn parse_with(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_col(text, span.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };

        let agent = resolve_agent(&file.agent, "agent", overrides.agent.clone(), &invalid)?;
        let review = match &file.review {
            Some(r) if r.fallback.is_some() || r.fallback_after.is_some() => {
                return Err(invalid("[review] has no fallback chain: `fallback` belongs in [agent]".into()));
            }
            Some(r) => Some(resolve_agent(r, "review", None, &invalid)?),
            None => None,
        };
        let (agents, fallback) = resolve_fallback(path, text, &file, &agent)?;
        let fallback_after = file.agent.fallback_after.map_or(defaults::FALLBACK_AFTER, |h| h.0);
        let commands = file.checks.commands.unwrap_or_default();
        if let Some(i) = commands.iter().position(|c| c.trim().is_empty()) {
            return Err(invalid(format!("[checks] commands[{i}] is empty")));
        }
        let max_attempts = file.budget.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(invalid("[budget] max_attempts must be at least 1".into()));
        }
        let max_consecutive_failures =
            file.budget.max_consecutive_failures.unwrap_or(defaults::MAX_CONSECUTIVE_FAILURES);
        if max_consecutive_failures == 0 {
            return Err(invalid("[budget] max_consecutive_failures must be at least 1".into()));
        }
        let nonzero = |d: Option<HumanDuration>, default: Duration, key: &str| {
            let d = d.map(|h| h.0).unwrap_or(default);
            if d.is_zero() { Err(invalid(format!("{key} must be longer than zero"))) } else { Ok(d) }
        };
        let otlp_endpoint = file.telemetry.otlp_endpoint.filter(|e| !e.trim().is_empty());
        if let Some(e) = &otlp_endpoint {
            crate::otlp::Endpoint::base(e)
                .map_err(|err| invalid(format!("[telemetry] otlp_endpoint: {err}")))?;
        }
        let workers = file.parallel.workers.unwrap_or(1);
        if !(1..=defaults::MAX_WORKERS).contains(&workers) {
            return Err(invalid(format!(
                "[parallel] workers must be between 1 and {}, not {workers}",
                defaults::MAX_WORKERS
            )));
        }
        let tune_reflector = file.tune.reflector.filter(|r| !r.trim().is_empty());
        if let Some(r) = &tune_reflector
            && crate::agent::preset::find(r).is_none()
        {
            return Err(invalid(format!("[tune] reflector: `{r}` is not a preset")));
        }
        let remote = RemoteConfig {
            name: file.remote.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "origin".into()),
            lease_ttl: nonzero(file.remote.lease_ttl, Duration::from_secs(300), "[remote] lease_ttl")?,
            land: file.remote.land.unwrap_or_default(),
            max_cost: file.remote.max_cost,
        };
        let sandbox = file.sandbox.resolve().map_err(invalid)?;
        let mut notify = Vec::new();
        for (i, entry) in file.notify.iter().enumerate() {
            let (line, column) = line_col(text, entry.span().start);
            let at = |message: String| ConfigError::Parse { path: path.to_path_buf(), line, column, message };
            notify.push(
                resolve_notify(entry.get_ref(), format!("{}:{line}", path.display()))
                    .map_err(|m| at(format!("[[notify]] #{}: {m}", i + 1)))?,
            );
        }
        let hooks = resolve_hooks(&file.hooks, &invalid)?;
        Ok(Config {
            path: path.to_path_buf(),
            notify,
            hooks,
            sandbox,
            workers,
            remote,
            tune_reflector,
            agent,
            fallback,
            fallback_after,
            agents,
            review,
            checks: ChecksConfig {
                commands,
                timeout: nonzero(file.checks.timeout, defaults::CHECKS_TIMEOUT, "[checks] timeout")?,
                gate: file.checks.gate.unwrap_or_default(),
            },
            budget: BudgetConfig {
                max_iterations: file.budget.max_iterations.unwrap_or(defaults::MAX_ITERATIONS),
                max_duration: file.budget.max_duration.map(|h| h.0),
                max_tokens: file.budget.max_tokens,
                max_cost: file.budget.max_cost.map(|d| d.0),
                max_attempts,
                max_task_tokens: file.budget.max_task_tokens,
                max_task_duration: file.budget.max_task_duration.map(|h| h.0),
                max_consecutive_failures,
                max_no_change: Some(file.budget.max_no_change.unwrap_or(defaults::MAX_NO_CHANGE))
                    .filter(|n| *n > 0),
                max_same_failure: Some(file.budget.max_same_failure.unwrap_or(defaults::MAX_SAME_FAILURE))
                    .filter(|n| *n > 0),
                on_breaker: file.budget.on_breaker.unwrap_or_default(),
                context_tokens: file.budget.context_tokens,
            },
            branch: file.git.branch.filter(|b| !b.trim().is_empty()),
            template: file.prompt.template.as_ref().map(|t| t.get_ref().0.clone()),
            plan_template: file.prompt.plan_template.as_ref().map(|t| t.get_ref().0.clone()),
            protected: file.gates.protected,
            reopen_changed: file.backlog.reopen_changed.unwrap_or(true),
            backlog_file: match file.backlog.file {
                Some(f)
                    if f.is_absolute() || f.components().any(|c| c == std::path::Component::ParentDir) =>
                {
                    return Err(invalid(format!(
                        "[backlog] file `{}` must be a path inside the repository, relative to it",
                        f.display()
                    )));
                }
                f => f,
            },
            on_spec_edit: file.backlog.on_spec_edit.unwrap_or_default(),
            otlp_endpoint,
            learnings: {
                let d = crate::learnings::Settings::default();
                crate::learnings::Settings {
                    max_bytes: file.learnings.max_bytes.unwrap_or(d.max_bytes),
                    max_entry_chars: file.learnings.max_entry_chars.unwrap_or(d.max_entry_chars),
                    require_review: file.learnings.require_review.unwrap_or(d.require_review),
                }
            },
        })
    }
}

/// The `[agents.NAME]` tables, resolved, and the `[agent] fallback` chain they and the presets
/// make; each error names the line of the table or of the entry.
fn resolve_fallback(
    path: &Path,
    text: &str,
    file: &FileConfig,
    main: &AgentConfig,
) -> Result<(BTreeMap<String, AgentConfig>, Vec<AgentConfig>), ConfigError> {
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_col(text, span.start);
        ConfigError::Parse { path: path.to_path_buf(), line, column, message }
    };
    let mut agents = BTreeMap::new();
    for (name, table) in &file.agents {
        let span = table.span();
        let a = table.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(at(
                span,
                format!("[agents.{name}]: a name may hold only letters, digits, `-`, `_` and `.`"),
            ));
        }
        if a.fallback.is_some() || a.fallback_after.is_some() {
            return Err(at(
                span,
                format!("[agents.{name}] has no fallback chain of its own: `fallback` belongs in [agent]"),
            ));
        }
        if *name == main.name {
            return Err(at(
                span,
                format!(
                    "[agents.{name}]: `{name}` is already the [agent] section's agent; give this one another name"
                ),
            ));
        }
        // `[agents.codex]` with neither preset nor command is the codex preset, adjusted.
        let named_preset;
        let a = if a.preset.is_none() && a.command.is_none() && preset::find(name).is_some() {
            named_preset = AgentFile { preset: Some(name.clone()), ..a.clone() };
            &named_preset
        } else {
            a
        };
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        let mut cfg = resolve_agent(a, &format!("agents.{name}"), None, &invalid).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => at(span.clone(), message),
            other => other,
        })?;
        cfg.name.clone_from(name);
        agents.insert(name.clone(), cfg);
    }
    let mut fallback: Vec<AgentConfig> = Vec::new();
    for entry in file.agent.fallback.iter().flatten() {
        let name = entry.get_ref().trim();
        let found = agents.get(name).cloned().or_else(|| preset_agent(name));
        let Some(a) = found else {
            return Err(at(
                entry.span(),
                format!(
                    "[agent] fallback: `{name}` is neither an [agents.{name}] table nor a preset (presets: {})",
                    preset::names()
                ),
            ));
        };
        if a.name == main.name || fallback.iter().any(|f| f.name == a.name) {
            return Err(at(
                entry.span(),
                format!("[agent] fallback names `{name}` twice (the main agent counts)"),
            ));
        }
        fallback.push(a);
    }
    Ok((agents, fallback))
}

/// The events a `[[notify]]` entry can be sent (its `on` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// The run ended, however it ended (the run's summary line, its exit code).
    RunEnd,
    /// A task is done (its work committed, or landed for `-j` and remote workers).
    TaskDone,
    /// A task was blocked (its attempts used up, its own limits, a breaker, a landing refused).
    TaskBlocked,
    /// The run stopped because a budget (iterations, time, tokens, cost, a breaker) is spent.
    BudgetSpent,
    /// The agent hit a usage or rate limit and the run waits it out.
    RateLimited,
    /// The run moved to a fallback agent (`[agent] fallback`).
    AgentFallback,
    /// `red_streak` iterations in a row ended with the checks red (`checks_failed`).
    ChecksRedStreak,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 7] = [
        NotifyOn::RunEnd,
        NotifyOn::TaskDone,
        NotifyOn::TaskBlocked,
        NotifyOn::BudgetSpent,
        NotifyOn::RateLimited,
        NotifyOn::AgentFallback,
        NotifyOn::ChecksRedStreak,
    ];

    /// The name in `on` and in the event's `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::RunEnd => "run_end",
            NotifyOn::TaskDone => "task_done",
            NotifyOn::TaskBlocked => "task_blocked",
            NotifyOn::BudgetSpent => "budget_spent",
            NotifyOn::RateLimited => "rate_limited",
            NotifyOn::AgentFallback => "agent_fallback",
            NotifyOn::ChecksRedStreak => "checks_red_streak",
        }
    }
}

/// Where a URL (or a token) comes from: written in ralph.toml, or read from an environment
/// variable when the run starts (then its value is a secret: masked wherever ralph writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Literal(String),
    Env(String),
}

/// Where a `[[notify]]` entry sends its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySink {
    /// A POST of the event's JSON; `token_env`'s value, if named, as a bearer token.
    Webhook { url: Source, token_env: Option<String> },
    /// A program run with the event's JSON on stdin and in `RALPH_EVENT_*` variables.
    Command(Vec<String>),
    /// A POST of the event's text to an ntfy topic URL.
    Ntfy { url: Source, token_env: Option<String> },
    /// A Slack incoming webhook.
    Slack { url: Source },
    /// A Discord webhook.
    Discord { url: Source },
    /// A Telegram bot's `sendMessage`.
    Telegram { token_env: String, chat_id: String },
}

impl NotifySink {
    /// The kind's name, as ralph.toml spells its key.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifySink::Webhook { .. } => "webhook",
            NotifySink::Command(_) => "command",
            NotifySink::Ntfy { .. } => "ntfy",
            NotifySink::Slack { .. } => "slack",
            NotifySink::Discord { .. } => "discord",
            NotifySink::Telegram { .. } => "telegram",
        }
    }

    /// The environment variables the sink reads when the run starts.
    pub fn env_names(&self) -> Vec<&str> {
        fn url(u: &Source) -> Option<&str> {
            match u {
                Source::Env(n) => Some(n.as_str()),
                Source::Literal(_) => None,
            }
        }
        match self {
            NotifySink::Webhook { url: u, token_env } | NotifySink::Ntfy { url: u, token_env } => {
                url(u).into_iter().chain(token_env.as_deref()).collect()
            }
            NotifySink::Slack { url: u } | NotifySink::Discord { url: u } => url(u).into_iter().collect(),
            NotifySink::Telegram { token_env, .. } => vec![token_env.as_str()],
            NotifySink::Command(_) => Vec::new(),
        }
    }
}

/// One `[[notify]]` entry, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// The events sent (default: run_end, task_blocked, budget_spent).
    pub on: Vec<NotifyOn>,
    pub sink: NotifySink,
    /// Per try: a delivery that takes longer is given up (default 10 s).
    pub timeout: Duration,
    /// Tries after the first failed one, with a backoff (default 2).
    pub retries: u32,
    /// `checks_red_streak` is sent when this many iterations in a row ended red (default 3).
    pub red_streak: u32,
    /// Where the entry is, as "ralph.toml:LINE", for messages.
    pub at: String,
}

/// Defaults of `[[notify]]` and `[hooks]`, documented in the README.
pub mod notify_defaults {
    use super::NotifyOn;
    use std::time::Duration;
    pub const ON: [NotifyOn; 3] = [NotifyOn::RunEnd, NotifyOn::TaskBlocked, NotifyOn::BudgetSpent];
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    pub const RETRIES: u32 = 2;
    /// More would hold a dead endpoint's deliveries for minutes.
    pub const MAX_RETRIES: u32 = 5;
    pub const RED_STREAK: u32 = 3;
    pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
    /// A maintenance window is minutes, not seconds: the skipped task is not asked again sooner.
    pub const SKIP_WAIT: Duration = Duration::from_secs(5 * 60);
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    on: Option<Vec<NotifyOn>>,
    webhook: Option<TargetFile>,
    command: Option<Vec<String>>,
    ntfy: Option<TargetFile>,
    slack: Option<TargetFile>,
    discord: Option<TargetFile>,
    telegram: Option<TelegramFile>,
    timeout: Option<HumanDuration>,
    retries: Option<u32>,
    red_streak: Option<u32>,
}

/// A URL written as a string, or a table naming where it comes from:
/// `{ url = "https://..." }`, `{ url_env = "VAR" }`, each with an optional `token_env`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    url: Option<String>,
    url_env: Option<String>,
    token_env: Option<String>,
}

#[derive(Debug)]
struct TargetFile(TargetTable);

impl<'de> Deserialize<'de> for TargetFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TargetFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL, or a table like { url_env = \"VAR\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetFile, E> {
                Ok(TargetFile(TargetTable { url: Some(v.to_string()), ..TargetTable::default() }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TargetFile, A::Error> {
                TargetTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TargetFile)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramFile {
    token_env: String,
    chat_id: toml::Value,
}

/// Whether `name` can be an environment variable's name.
fn env_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A URL ralph can post to: `http://` or `https://` and a host.
fn url_ok(url: &str) -> Result<(), String> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        Some(_) => Err(format!("`{url}` names no host")),
        None => Err(format!("`{url}` is not an http:// or https:// URL")),
    }
}

/// A `[[notify]]` entry checked: exactly one sink, a URL or an environment variable's name
/// where one is needed, limits in range. Errors are the message after the entry's position.
fn resolve_notify(f: &NotifyFile, at: String) -> Result<NotifyConfig, String> {
    let target = |key: &str, t: &TargetFile, token: bool| -> Result<(Source, Option<String>), String> {
        let t = &t.0;
        if !token && t.token_env.is_some() {
            return Err(format!("{key}: token_env is not used here (the URL carries the credential)"));
        }
        let url = match (&t.url, &t.url_env) {
            (Some(u), None) => {
                url_ok(u).map_err(|e| format!("{key}: {e}"))?;
                Source::Literal(u.trim().to_string())
            }
            (None, Some(n)) if env_name_ok(n) => Source::Env(n.clone()),
            (None, Some(n)) => {
                return Err(format!("{key}: url_env `{n}` is not an environment variable's name"));
            }
            (Some(_), Some(_)) => return Err(format!("{key}: set url or url_env, not both")),
            (None, None) => return Err(format!("{key}: needs a URL (`{key} = \"https://...\"`) or url_env")),
        };
        if let Some(n) = t.token_env.as_deref().filter(|n| !env_name_ok(n)) {
            return Err(format!("{key}: token_env `{n}` is not an environment variable's name"));
        }
        Ok((url, t.token_env.clone()))
    };
    let mut sinks = Vec::new();
    if let Some(t) = &f.webhook {
        let (url, token_env) = target("webhook", t, true)?;
        sinks.push(NotifySink::Webhook { url, token_env });
    }
    if let Some(c) = &f.command {
        if c.is_empty() || c[0].trim().is_empty() {
            return Err("command must name a program: command = [\"notify-send\", \"ralph\"]".into());
        }
        sinks.push(NotifySink::Command(c.clone()));
    }
    if let Some(t) = &f.ntfy {
        let (url, token_env) = target("ntfy", t, true)?;
        sinks.push(NotifySink::Ntfy { url, token_env });
    }
    if let Some(t) = &f.slack {
        sinks.push(NotifySink::Slack { url: target("slack", t, false)?.0 });
    }
    if let Some(t) = &f.discord {
        sinks.push(NotifySink::Discord { url: target("discord", t, false)?.0 });
    }
    if let Some(t) = &f.telegram {
        if !env_name_ok(&t.token_env) {
            return Err(format!(
                "telegram: token_env `{}` is not an environment variable's name",
                t.token_env
            ));
        }
        let chat_id = match &t.chat_id {
            toml::Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            toml::Value::Integer(i) => i.to_string(),
            _ => return Err("telegram: chat_id must be the chat's id (a number, or \"@channel\")".into()),
        };
        sinks.push(NotifySink::Telegram { token_env: t.token_env.clone(), chat_id });
    }
    let sink = match sinks.len() {
        1 => sinks.remove(0),
        0 => {
            return Err(
                "needs one of webhook, command, ntfy, slack, discord or telegram (where to send the events)"
                    .into(),
            );
        }
        _ => {
            let kinds: Vec<&str> = sinks.iter().map(NotifySink::kind).collect();
            return Err(format!("sets {}: one destination per [[notify]] entry", kinds.join(" and ")));
        }
    };
    let mut on = f.on.clone().unwrap_or_else(|| notify_defaults::ON.to_vec());
    if on.is_empty() {
        return Err(format!(
            "on is empty: name the events to send ({})",
            NotifyOn::ALL.map(NotifyOn::as_str).join(", ")
        ));
    }
    on.sort_unstable();
    on.dedup();
    let timeout = f.timeout.map_or(notify_defaults::TIMEOUT, |h| h.0);
    if timeout.is_zero() {
        return Err("timeout must be longer than zero".into());
    }
    let retries = f.retries.unwrap_or(notify_defaults::RETRIES);
    if retries > notify_defaults::MAX_RETRIES {
        return Err(format!("retries must be at most {}, not {retries}", notify_defaults::MAX_RETRIES));
    }
    let red_streak = f.red_streak.unwrap_or(notify_defaults::RED_STREAK);
    if red_streak == 0 {
        return Err("red_streak must be at least 1".into());
    }
    Ok(NotifyConfig { on, sink, timeout, retries, red_streak, at })
}

/// `[hooks]`: shell commands (one, or a list run in order, as `[checks] commands`) at the
/// loop's lifecycle points.
#[derive(Debug, Clone, PartialEq)]
pub struct HooksConfig {
    /// Before each iteration: a non-zero exit skips the task (see `skip_wait`).
    pub before_iteration: Vec<String>,
    /// After each iteration's record.
    pub after_iteration: Vec<String>,
    /// When a task's work lands on the branch (committed; landed for `-j`, pushed for remote
    /// workers).
    pub on_land: Vec<String>,
    /// When a task is blocked.
    pub on_blocked: Vec<String>,
    /// Per command (default 1 minute).
    pub timeout: Duration,
    /// How long a task `before_iteration` skipped is not tried again (default 5 minutes).
    pub skip_wait: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            before_iteration: Vec::new(),
            after_iteration: Vec::new(),
            on_land: Vec::new(),
            on_blocked: Vec::new(),
            timeout: notify_defaults::HOOK_TIMEOUT,
            skip_wait: notify_defaults::SKIP_WAIT,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    before_iteration: Option<Commands>,
    after_iteration: Option<Commands>,
    on_land: Option<Commands>,
    on_blocked: Option<Commands>,
    timeout: Option<HumanDuration>,
    skip_wait: Option<HumanDuration>,
}

/// One shell command, or a list of them.
#[derive(Debug, Clone)]
struct Commands(Vec<String>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Commands;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a shell command, or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Commands, E> {
                Ok(Commands(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Commands, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Commands)
            }
        }
        d.deserialize_any(V)
    }
}

fn resolve_hooks(f: &HooksFile, invalid: &dyn Fn(String) -> ConfigError) -> Result<HooksConfig, ConfigError> {
    let list = |c: &Option<Commands>, key: &str| -> Result<Vec<String>, ConfigError> {
        let v = c.as_ref().map(|c| c.0.clone()).unwrap_or_default();
        if let Some(i) = v.iter().position(|c| c.trim().is_empty()) {
            return Err(invalid(format!("[hooks] {key}[{i}] is empty")));
        }
        Ok(v)
    };
    let d = HooksConfig::default();
    let timeout = f.timeout.map_or(d.timeout, |h| h.0);
    if timeout.is_zero() {
        return Err(invalid("[hooks] timeout must be longer than zero".into()));
    }
    Ok(HooksConfig {
        before_iteration: list(&f.before_iteration, "before_iteration")?,
        after_iteration: list(&f.after_iteration, "after_iteration")?,
        on_land: list(&f.on_land, "on_land")?,
        on_blocked: list(&f.on_blocked, "on_blocked")?,
        timeout,
        skip_wait: f.skip_wait.map_or(d.skip_wait, |h| h.0),
    })
}

impl Config {
    /// Every secret a run knows of, masked wherever it writes: ralph's environment, every
    /// agent's configured variables, the notifiers' URLs and tokens.
    pub fn secrets(&self) -> crate::secrets::Secrets {
        crate::secrets::Secrets::from_env(&self.agents_env()).with_values(self.notify_secrets())
    }

    /// The values of the environment variables `[[notify]]` reads (URLs, tokens): secrets,
    /// masked wherever ralph writes, whatever their names.
    pub fn notify_secrets(&self) -> Vec<String> {
        self.notify
            .iter()
            .flat_map(|n| n.sink.env_names())
            .filter_map(|name| std::env::var(name).ok())
            .filter(|v| !v.trim().is_empty())
            .collect()
    }

    /// The first `[[notify]]` entry whose environment variable is not set, in words (`ralph
    /// run` refuses to start without it: a notifier that cannot send is found at 1 a.m.).
    pub fn notify_env_missing(&self) -> Option<String> {
        self.notify.iter().find_map(|n| {
            n.sink
                .env_names()
                .into_iter()
                .find(|name| std::env::var(name).map_or(true, |v| v.trim().is_empty()))
                .map(|name| {
                    format!(
                        "{}: [[notify]] {}: the environment variable {name} is not set",
                        n.at,
                        n.sink.kind()
                    )
                })
        })
    }
}

/// Resolves an agent section (`[agent]`, `[review]`, `[agents.NAME]`): preset or command,
/// prompt mode, output format, environment, limits.
fn resolve_agent(
    a: &AgentFile,
    section: &str,
    override_preset: Option<String>,
    invalid: &dyn Fn(String) -> ConfigError,
) -> Result<AgentConfig, ConfigError> {
    let preset_name = override_preset.clone().or_else(|| a.preset.clone());
    let user_args = a.args.clone().unwrap_or_default();
    let (preset, command) = match preset_name.as_deref() {
        None | Some("custom") => {
            let mut command = match &a.command {
                Some(c) if !c.is_empty() && !c[0].trim().is_empty() => c.clone(),
                _ if preset_name.is_some() => {
                    return Err(invalid(format!("[{section}] preset = \"custom\" needs `command`")));
                }
                _ => {
                    return Err(invalid(format!(
                        "[{section}] needs a `preset` ({}) or a `command`",
                        preset::names()
                    )));
                }
            };
            if a.model.is_some() {
                return Err(invalid(format!(
                    "[{section}] model needs a preset; put the model flag in `command` or `args`"
                )));
            }
            if let Some(bin) = &a.bin {
                command[0] = bin.clone();
            }
            command.extend(user_args);
            (None, command)
        }
        Some(name) => {
            let Some(p) = preset::find(name) else {
                return Err(invalid(format!(
                    "[{section}] preset `{name}` is unknown (known: {})",
                    preset::names()
                )));
            };
            if a.command.is_some() && override_preset.is_none() {
                return Err(invalid(format!(
                    "[{section}] sets both preset = \"{name}\" and command; use `bin` and `args` to adjust a preset, or preset = \"custom\""
                )));
            }
            if a.model.is_some() && p.model_flag.is_empty() {
                return Err(invalid(format!("[{section}] model: the {name} preset has no model flag")));
            }
            (Some(p), preset::command_line(p, a.bin.as_deref(), a.model.as_deref(), &user_args))
        }
    };
    let prompt = match (a.prompt, preset) {
        (Some(m), _) => m,
        (None, Some(p)) => p.prompt,
        (None, None) => PromptMode::default(),
    };
    let format = a.output_format.or(preset.map(|p| p.format)).unwrap_or_default();
    let mut env: BTreeMap<String, String> = preset
        .map(|p| p.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .unwrap_or_default();
    env.extend(a.env.clone());
    let retry_wait = a.retry_wait.map(|h| h.0).unwrap_or(defaults::RETRY_WAIT);
    let retry_wait_max = a.retry_wait_max.map(|h| h.0).unwrap_or(defaults::RETRY_WAIT_MAX);
    if retry_wait.is_zero() || retry_wait_max < retry_wait {
        return Err(invalid(format!("[{section}] retry_wait must be above zero and at most retry_wait_max")));
    }
    let model = a.model.clone();
    let max_log_size = a.max_log_size.map_or(defaults::MAX_LOG_SIZE, |b| b.0);
    let promise = a.completion_promise.clone().unwrap_or_else(|| DEFAULT_PROMISE.to_string());
    if promise.trim().is_empty() {
        return Err(invalid(format!("[{section}] completion_promise must not be empty")));
    }
    let nonzero = |d: Option<HumanDuration>, default: Duration, key: &str| {
        let d = d.map(|h| h.0).unwrap_or(default);
        if d.is_zero() { Err(invalid(format!("[{section}] {key} must be longer than zero"))) } else { Ok(d) }
    };
    let name = match preset {
        Some(p) => p.name.to_string(),
        None => Path::new(&command[0])
            .file_name()
            .map_or_else(|| command[0].clone(), |n| n.to_string_lossy().into_owned()),
    };
    Ok(AgentConfig {
        name,
        preset,
        command,
        prompt,
        format,
        model,
        retry_wait,
        retry_wait_max,
        timeout: nonzero(a.timeout, defaults::AGENT_TIMEOUT, "timeout")?,
        idle_timeout: nonzero(a.idle_timeout, defaults::IDLE_TIMEOUT, "idle_timeout")?,
        kill_grace: a.kill_grace.map(|h| h.0).unwrap_or(defaults::KILL_GRACE),
        pty: a.pty.unwrap_or(false),
        completion_promise: promise,
        env,
        max_log_size,
        env_allowlist: a.env_allowlist.unwrap_or(false),
    })
}

/// The `[prompt]` templates must stay inside the repository once links are followed: a link
/// out of it would feed the agent a file ralph was never meant to read.
fn templates_inside(root: &Path, text: &str) -> Result<(), ConfigError> {
    let Ok(file) = toml::from_str::<FileConfig>(text) else { return Ok(()) };
    let Ok(real_root) = root.canonicalize() else { return Ok(()) };
    for (key, t) in [("template", &file.prompt.template), ("plan_template", &file.prompt.plan_template)] {
        let Some(t) = t else { continue };
        // A missing file is reported when the template is loaded.
        let Ok(real) = root.join(&t.get_ref().0).canonicalize() else { continue };
        if !real.starts_with(&real_root) {
            let (line, column) = line_col(text, t.span().start);
            return Err(ConfigError::Parse {
                path: PathBuf::from(FILE_NAME),
                line,
                column,
                message: format!(
                    "[prompt] {key} `{}` leads outside the repository (through a symbolic link, to {})",
                    t.get_ref().0.display(),
                    real.display()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("ralph.toml"), text)
    }

    #[test]
    fn contract_keys_parse_with_their_units() {
        let c = parse(
            r#"
[agent]
command = ["my-agent", "--flag"]
prompt = "file"
timeout = "30m"
idle_timeout = "10m"

[checks]
commands = ["cargo test"]
timeout = "20m"

[budget]
max_iterations = 50
max_duration = "8h"
max_attempts = 3
max_consecutive_failures = 5
"#,
        )
        .unwrap();
        assert_eq!(c.agent.command, vec!["my-agent", "--flag"]);
        assert_eq!(c.agent.prompt, PromptMode::File);
        assert_eq!(c.agent.timeout, Duration::from_secs(1800));
        assert_eq!(c.agent.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.checks.timeout, Duration::from_secs(1200));
        assert_eq!(c.budget.max_iterations, 50);
        assert_eq!(c.budget.max_duration, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(c.agent.completion_promise, DEFAULT_PROMISE);
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("[agent]\ncommand = [\"a\"]\ntimeout = \"soon\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("ralph.toml:3:"), "{msg}");
        assert!(msg.contains("invalid duration"), "{msg}");

        let err = parse("[agent]\ncommand = [\"a\"]\ncommnd = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("ralph.toml:3:"), "{err}");
        assert!(err.contains("unknown field"), "{err}");

        let err = parse("[agent\n").unwrap_err().to_string();
        assert!(err.starts_with("ralph.toml:1:"), "{err}");
    }

    #[test]
    fn an_agent_is_required() {
        let err = parse("[checks]\ncommands = []\n").unwrap_err().to_string();
        assert!(err.contains("[agent] needs a `preset` (claude, codex"), "{err}");
    }

    #[test]
    fn presets_resolve_with_bin_model_args_and_env() {
        let c = parse(
            "[agent]\npreset = \"claude\"\nbin = \"/opt/claude\"\nmodel = \"sonnet\"\nargs = [\"--max-turns\", \"9\"]\nretry_wait = \"30s\"\n[agent.env]\nIS_SANDBOX = \"1\"\n",
        )
        .unwrap();
        assert_eq!(c.agent.command[0], "/opt/claude");
        assert!(c.agent.command.ends_with(&[
            "--model".into(),
            "sonnet".into(),
            "--max-turns".into(),
            "9".into()
        ]));
        assert_eq!(c.agent.format, Format::ClaudeStreamJson);
        assert_eq!(c.agent.prompt, PromptMode::Stdin);
        assert_eq!(c.agent.retry_wait, Duration::from_secs(30));
        assert_eq!(c.agent.retry_wait_max, Duration::from_secs(3600));
        assert_eq!(c.agent.env.get("IS_SANDBOX").map(String::as_str), Some("1"));

        let g = parse("[agent]\npreset = \"gemini\"\n").unwrap();
        assert_eq!(g.agent.env.get("GEMINI_CLI_TRUST_WORKSPACE").map(String::as_str), Some("true"));

        let e = parse("[agent]\npreset = \"gpt\"\n").unwrap_err().to_string();
        assert!(e.contains("preset `gpt` is unknown"), "{e}");
        let e = parse("[agent]\npreset = \"claude\"\ncommand = [\"x\"]\n").unwrap_err().to_string();
        assert!(e.contains("use `bin` and `args`"), "{e}");
        let e = parse("[agent]\ncommand = [\"x\"]\nmodel = \"m\"\n").unwrap_err().to_string();
        assert!(e.contains("model needs a preset"), "{e}");

        // --agent replaces whatever the file says.
        let o = Overrides { agent: Some("codex".into()) };
        let c = Config::parse_with(Path::new("ralph.toml"), "[agent]\ncommand = [\"x\"]\n", &o).unwrap();
        assert_eq!(c.agent.command[..2], ["codex".to_string(), "exec".to_string()]);
    }

    #[test]
    fn fallback_agents_are_presets_or_named_tables_with_the_agent_keys() {
        let c = parse(
            r#"
[agent]
preset = "claude"
fallback = ["codex", "cheap", "pi"]
fallback_after = "10m"

[agents.cheap]
command = ["./cheap-agent", "--fast"]
output_format = "codex-json"
timeout = "5m"
[agents.cheap.env]
CHEAP_KEY = "k"

[agents.codex]
model = "o3"
"#,
        )
        .unwrap();
        assert_eq!(c.agent.name, "claude");
        let names: Vec<&str> = c.fallback.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["codex", "cheap", "pi"]);
        assert_eq!(c.fallback_after, Duration::from_secs(600));
        // A table named as a preset, with neither preset nor command, adjusts that preset.
        assert_eq!(c.fallback[0].preset.map(|p| p.name), Some("codex"));
        assert!(c.fallback[0].command.windows(2).any(|w| w == ["-m", "o3"]), "{:?}", c.fallback[0].command);
        assert_eq!(c.fallback[1].command, ["./cheap-agent", "--fast"]);
        assert_eq!(c.fallback[1].format, Format::CodexJson);
        assert_eq!(c.fallback[1].timeout, Duration::from_secs(300));
        assert_eq!(c.fallback[2].preset.map(|p| p.name), Some("pi"));
        assert_eq!(c.chain(None), ["claude", "codex", "cheap", "pi"]);
        assert_eq!(c.chain(Some("pi")), ["pi", "claude", "codex", "cheap"]);
        assert!(c.agents_env().contains(&("CHEAP_KEY".into(), "k".into())));
        assert_eq!(
            c.agent_named("cheap").map(|a| a.command),
            Some(vec!["./cheap-agent".into(), "--fast".into()])
        );
        // A preset nobody configured, with its defaults; an unknown name is nobody.
        assert_eq!(c.agent_named("gemini").map(|a| a.name), Some("gemini".into()));
        assert!(c.agent_named("gpt").is_none());
        // Without a chain: the default wait, only the main agent; a custom command is named
        // by its program.
        let plain = parse("[agent]\ncommand = [\"/opt/bin/my-agent\"]\n").unwrap();
        assert_eq!(plain.fallback_after, Duration::from_secs(300));
        assert_eq!(plain.chain(None), ["my-agent"]);
    }

    #[test]
    fn fallback_errors_name_the_file_and_line() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        let e = err("[agent]\npreset = \"claude\"\nfallback = [\n  \"codex\",\n  \"gpt\",\n]\n");
        assert!(e.starts_with("ralph.toml:5:"), "{e}");
        assert!(e.contains("`gpt` is neither an [agents.gpt] table nor a preset"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\nfallback = [\"claude\"]\n");
        assert!(e.starts_with("ralph.toml:3:") && e.contains("names `claude` twice"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\n\n[agents.x]\nmodel = \"m\"\n");
        assert!(e.starts_with("ralph.toml:4:"), "{e}");
        assert!(e.contains("[agents.x] needs a `preset`"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\n\n[agents.x]\npreset = \"codex\"\ncolour = 1\n");
        assert!(e.starts_with("ralph.toml:6:") && e.contains("unknown field `colour`"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\n\n[agents.x]\npreset = \"codex\"\nfallback = [\"pi\"]\n");
        assert!(e.contains("[agents.x] has no fallback chain of its own"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\n\n[agents.claude]\nmodel = \"m\"\n");
        assert!(e.contains("is already the [agent] section's agent"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\n[review]\npreset = \"codex\"\nfallback = [\"pi\"]\n");
        assert!(e.contains("[review] has no fallback chain"), "{e}");
        let e = err("[agent]\npreset = \"claude\"\nfallback_after = \"later\"\n");
        assert!(e.starts_with("ralph.toml:3:") && e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn the_sandbox_is_off_by_default_and_its_keys_parse() {
        let c = parse("[agent]\ncommand = [\"a\"]\n").unwrap();
        assert_eq!(c.sandbox, SandboxConfig::default());
        assert!(c.sandbox.network && !c.agent.env_allowlist);
        let c = parse(
            "[agent]\npreset = \"claude\"\nenv_allowlist = true\n[sandbox]\nkind = \"container\"\nimage = \"img\"\nengine = \"podman\"\nnetwork = false\nread_only = [\"~/.cargo\"]\nread_write = [\"/srv/cache\"]\nenv = [\"AWS_*\"]\nchecks = true\n",
        )
        .unwrap();
        assert!(c.agent.env_allowlist);
        let s = &c.sandbox;
        assert_eq!(
            (s.kind, s.engine, s.image.as_deref()),
            (crate::sandbox::Kind::Container, Some(crate::sandbox::Engine::Podman), Some("img"))
        );
        assert!(!s.network && s.checks);
        assert_eq!((s.read_only.len(), s.read_write.len(), s.env.len()), (1, 1, 1));
        let e = parse("[agent]\ncommand = [\"a\"]\n[sandbox]\nkind = \"jail\"\n").unwrap_err().to_string();
        assert!(e.starts_with("ralph.toml:4:") && e.contains("unknown variant `jail`"), "{e}");
        let e =
            parse("[agent]\ncommand = [\"a\"]\n[sandbox]\nkind = \"container\"\n").unwrap_err().to_string();
        assert!(e.contains("[sandbox] kind = \"container\" needs an `image`"), "{e}");
    }

    #[test]
    fn notify_entries_take_one_destination_each_with_defaults() {
        let c = parse(
            r#"
[agent]
command = ["a"]

[[notify]]
webhook = "https://example.com/h"

[[notify]]
on = ["task_done", "checks_red_streak", "task_done"]
telegram = { token_env = "TG_TOKEN", chat_id = -1001 }
timeout = "3s"
retries = 0
red_streak = 5

[[notify]]
slack = { url_env = "SLACK_URL" }
"#,
        )
        .unwrap();
        assert_eq!(c.notify.len(), 3);
        let w = &c.notify[0];
        assert_eq!(w.on, notify_defaults::ON.to_vec());
        assert_eq!(
            w.sink,
            NotifySink::Webhook { url: Source::Literal("https://example.com/h".into()), token_env: None }
        );
        assert_eq!((w.timeout, w.retries, w.red_streak), (Duration::from_secs(10), 2, 3));
        assert_eq!(w.at, "ralph.toml:5");
        let t = &c.notify[1];
        assert_eq!(t.on, [NotifyOn::TaskDone, NotifyOn::ChecksRedStreak]);
        assert_eq!(t.sink, NotifySink::Telegram { token_env: "TG_TOKEN".into(), chat_id: "-1001".into() });
        assert_eq!((t.timeout, t.retries, t.red_streak), (Duration::from_secs(3), 0, 5));
        assert_eq!(c.notify[2].sink.env_names(), ["SLACK_URL"]);
    }

    #[test]
    fn a_bad_notify_entry_names_the_file_and_its_line() {
        let bad = [
            ("webhook = \"https://a\"\ncommand = [\"x\"]", "sets webhook and command"),
            ("on = [\"run_end\"]", "needs one of webhook, command"),
            ("webhook = \"ftp://a\"", "is not an http:// or https:// URL"),
            ("slack = { url = \"https://a\", token_env = \"T\" }", "token_env is not used here"),
            ("discord = { url_env = \"not a name\" }", "is not an environment variable's name"),
            ("command = []", "command must name a program"),
            ("webhook = \"https://a\"\non = []", "on is empty"),
            ("webhook = \"https://a\"\nretries = 9", "retries must be at most 5"),
            ("webhook = \"https://a\"\nred_streak = 0", "red_streak must be at least 1"),
            ("webhook = \"https://a\"\non = [\"lunch\"]", "unknown variant `lunch`"),
        ];
        for (entry, want) in bad {
            let text = format!("[agent]\ncommand = [\"a\"]\n\n[[notify]]\n{entry}\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.starts_with("ralph.toml:"), "{entry}: {e}");
            assert!(e.contains(want), "{entry}: {e}");
        }
        // The entry's own line, the second one here.
        let e = parse(
            "[agent]\ncommand = [\"a\"]\n[[notify]]\nwebhook = \"https://a\"\n\n[[notify]]\nntfy = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ralph.toml:6:") && e.contains("[[notify]] #2: ntfy:"), "{e}");
    }

    #[test]
    fn hooks_are_a_command_or_a_list() {
        let c = parse(
            "[agent]\ncommand = [\"a\"]\n[hooks]\nbefore_iteration = \"check-window\"\non_land = [\"a\", \"b\"]\nskip_wait = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.hooks.before_iteration, ["check-window"]);
        assert_eq!(c.hooks.on_land, ["a", "b"]);
        assert!(c.hooks.after_iteration.is_empty() && c.hooks.on_blocked.is_empty());
        assert_eq!((c.hooks.timeout, c.hooks.skip_wait), (Duration::from_secs(60), Duration::from_secs(60)));
        let e = parse("[agent]\ncommand = [\"a\"]\n[hooks]\non_blocked = [\"\"]\n").unwrap_err().to_string();
        assert!(e.contains("[hooks] on_blocked[0] is empty"), "{e}");
        let e = parse("[agent]\ncommand = [\"a\"]\n[hooks]\non_block = \"x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("ralph.toml:4:") && e.contains("unknown field `on_block`"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn durations_accept_bare_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("tomorrow").is_err());
    }
}
