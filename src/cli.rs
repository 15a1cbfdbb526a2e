//! The command line: one enum of subcommands (clap derive).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Runs a coding agent in a loop over a backlog of specs: one fresh agent process per
/// iteration, the project's checks run by ralph itself, commits only when they pass.
#[derive(Debug, Parser)]
#[command(name = "ralph", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up ralph in this repository: ralph.toml, specs/ with an example, AGENTS.md.
    Init(InitArgs),
    /// Run the loop until the backlog is done or a budget runs out.
    Run(RunArgs),
    /// Show the backlog and the current or last run.
    Status(StatusArgs),
    /// Print (or follow) an iteration's logs.
    Logs(LogsArgs),
    /// Figures across runs: first-attempt success, iterations to done, failure causes, cost.
    Stats(StatsArgs),
    /// Write one self-contained HTML page for a run: timeline, cost, tasks, iterations.
    Report(ReportArgs),
    /// Check the configured agent, checks and git state without spending tokens.
    Doctor(DoctorArgs),
    /// Ask the running loop to stop after the current iteration (`--now`: at once, cleanly).
    Stop(StopArgs),
    /// Leave a note for the next iteration's agent, without stopping the run; `--list` shows
    /// the notes not taken yet.
    Note(NoteArgs),
    /// Review what the loop learned: list, show, remove, mark reviewed.
    Learnings(LearningsArgs),
    /// Turn a prd.json or a markdown checklist plan into specs, one file per task.
    Import(ImportArgs),
    /// Let the agent write or update the backlog (split, order, set dependencies), left
    /// uncommitted for review.
    Plan(PlanArgs),
    /// Score the prompt template and AGENTS.md on an eval suite (a folder of cases, or the
    /// tasks earlier runs finished), each trial in a scratch worktree.
    Eval(EvalArgs),
    /// Evolve the prompt template and AGENTS.md on an eval suite (GEPA-style), keeping only
    /// what moves the score; `show` and `apply` review and adopt a result.
    Tune(TuneArgs),
    /// Run the loop on a demo project with the scripted agent: no API key needed.
    Demo(DemoArgs),
    /// The scripted agent: plays a scenario file instead of calling a model.
    ScriptedAgent(ScriptedAgentArgs),
    /// One worker of many, on any machine: claims tasks through the git remote, works on them
    /// in this clone, lands them with an atomic push.
    Worker(WorkerArgs),
    /// One iteration of a parallel run's worker, in its slot's worktree (started by `ralph
    /// run -j N`, not by hand).
    #[command(hide = true)]
    WorkSlot(WorkSlotArgs),
    /// Print a launcher for workers on other machines: a Kubernetes Indexed Job or a GitHub
    /// Actions workflow, each worker `ralph worker --until-empty` in a fresh clone.
    Deploy(DeployArgs),
    /// Print the shell completion script for bash, zsh or fish (also elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing ralph.toml.
    #[arg(long)]
    pub force: bool,
    /// The agent preset to configure (default: claude).
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A folder of cases (one sub-folder each: spec.md, an executable check, optionally start
    /// and setup); without it, the tasks earlier runs finished.
    #[arg(long, value_name = "DIR")]
    pub suite: Option<PathBuf>,
    /// Runs of each case.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub trials: u32,
    /// Iterations each trial may take to finish its task.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_iterations: u32,
    /// Trials run at once, each in its own scratch worktree.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1)]
    pub jobs: u32,
    /// Print one JSON object: `id`, `score`, `cases`, `left_out`, `trials`.
    #[arg(long)]
    pub json: bool,
    /// A prompt template to score instead of the configured one.
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// An AGENTS.md to score instead of each case's own.
    #[arg(long, value_name = "FILE")]
    pub agents_md: Option<PathBuf>,
    /// Use this agent preset, whatever ralph.toml says.
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TuneArgs {
    #[command(subcommand)]
    pub action: Option<TuneAction>,
    /// A folder of cases (as `ralph eval --suite`); without it, the tasks earlier runs finished.
    #[arg(long, value_name = "DIR")]
    pub suite: Option<PathBuf>,
    /// Rounds of reflection at most.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub rounds: u32,
    /// Stop once the trials and the reflector have reported this cost in US dollars.
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Stop once the trials and the reflector have reported this many tokens.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Stop starting rounds after this much wall-clock time, e.g. "2h".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<std::time::Duration>,
    /// Train/validation/held-out percentages.
    #[arg(long, value_name = "T/V/H", default_value = "60/20/20", value_parser = parse_split)]
    pub split: [u32; 3],
    /// The seed of the split and the minibatches (recorded; random when not given).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Runs of each case per candidate.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub trials: u32,
    /// Train cases per round.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub minibatch: u32,
    /// Stop after this many rounds without a better validation score.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub patience: u32,
    /// Trials run at once, each in its own scratch worktree.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1)]
    pub jobs: u32,
    /// Iterations each trial may take.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_iterations: u32,
    /// The agent preset the trials use, whatever ralph.toml says.
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
    /// The reflector's preset (default: the configured agent).
    #[arg(long, value_name = "PRESET")]
    pub reflector: Option<String>,
    /// Resume the tune with this id (after a kill, or to run more rounds).
    #[arg(long, value_name = "ID")]
    pub resume: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TuneAction {
    /// The front, the lineage, each candidate's diff against today's files and its diagnosis.
    Show {
        /// The tune (default: the latest).
        id: Option<String>,
    },
    /// Write a candidate's template and AGENTS.md into the repository, uncommitted.
    Apply {
        id: String,
        /// The candidate (default: the front's newest).
        candidate: Option<u32>,
    },
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// End once no task is left to do (none runnable, none claimed by another worker).
    #[arg(long)]
    pub until_empty: bool,
    /// End after this many tasks, landed or blocked.
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<u32>,
}

#[derive(Debug, Args)]
pub struct WorkSlotArgs {
    /// The task to work on.
    #[arg(long)]
    pub task: String,
    /// The run's id and iteration number the coordinator gave this iteration.
    #[arg(long)]
    pub run_id: String,
    #[arg(long)]
    pub iteration: u32,
    /// The coordinator's run folder, where the iteration's folder goes.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// The worker's number.
    #[arg(long)]
    pub worker: u32,
    /// What is left of the run's time budget, in milliseconds.
    #[arg(long)]
    pub time_left_ms: Option<u64>,
    /// The agent preset the coordinator runs with (`ralph run --agent`).
    #[arg(long)]
    pub agent: Option<String>,
    /// The agent to run the iteration with, by name, when not the main one (a fallback, the
    /// task's own `agent:`).
    #[arg(long)]
    pub agent_name: Option<String>,
    /// A prompt template instead of the configured one (`ralph eval`'s candidate).
    #[arg(long)]
    pub template: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run this many tasks at once, each in its own worktree, landed one at a time after
    /// its checks pass again on the combined result (overrides [parallel] workers).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<u32>,
    /// Stop after this many iterations (overrides [budget] max_iterations).
    #[arg(long, value_name = "N")]
    pub max_iterations: Option<u32>,
    /// Stop after this much wall-clock time, e.g. "2h" (overrides [budget] max_duration).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<std::time::Duration>,
    /// Start even with uncommitted changes; they go into ralph's first commit, and a revert
    /// puts them back.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Use this agent preset (claude, codex, gemini, opencode, pi, qwen, aider, amp, cursor),
    /// whatever ralph.toml says.
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
    /// Stop once the agents have reported this many tokens in the run (overrides
    /// [budget] max_tokens).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Stop once the agents have reported this cost in US dollars (overrides [budget] max_cost).
    #[arg(long, value_name = "USD", value_parser = parse_cost)]
    pub max_cost: Option<f64>,
    /// Start a new run with fresh budgets instead of resuming the last one.
    #[arg(long)]
    pub new_run: bool,
    /// With nothing left to do, wait for new or changed specs instead of exiting.
    #[arg(long)]
    pub watch: bool,
}

fn parse_cost(s: &str) -> Result<f64, String> {
    crate::config::parse_dollars(s.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"))?)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// The claims of `ralph worker`s on the git remote, and who holds them (fetched now).
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// What to plan, in your words (e.g. "split 020-auth into small tasks"); optional.
    #[arg(value_name = "REQUEST")]
    pub request: Vec<String>,
    /// Use this agent preset, whatever ralph.toml says.
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// prd.json (snarktank/ralph) or a checklist plan (IMPLEMENTATION_PLAN.md, fix_plan.md).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct LearningsArgs {
    #[command(subcommand)]
    pub action: Option<LearningsAction>,
    /// List retired entries too.
    #[arg(long, global = true)]
    pub all: bool,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LearningsAction {
    /// One entry with its provenance.
    Show { id: String },
    /// Retire an entry: it leaves AGENTS.md (committed).
    Remove { id: String },
    /// Mark an entry reviewed; a pending one (`require_review`) reaches AGENTS.md.
    Review { id: String },
}

#[derive(Debug, Args)]
pub struct NoteArgs {
    /// The note: its words are joined with spaces ("prefer the existing http client").
    #[arg(required_unless_present_any = ["list", "clear"], conflicts_with_all = ["list", "clear"])]
    pub text: Vec<String>,
    /// Show the notes the next iteration will carry.
    #[arg(long)]
    pub list: bool,
    /// Withdraw the notes not taken yet.
    #[arg(long, conflicts_with = "list")]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Stop at once: the agent is ended, the tree restored, the iteration recorded as interrupted.
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this agent preset instead of the configured one.
    #[arg(long, value_name = "PRESET")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The iteration (default: the latest).
    pub iteration: Option<u32>,
    /// Follow the live iteration, and the next ones as they start.
    #[arg(short, long)]
    pub follow: bool,
    /// A run id (default: the latest run).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Print the checks' log instead of the agent's.
    #[arg(long, conflicts_with_all = ["prompt", "patch"])]
    pub checks: bool,
    /// Print the prompt the agent was given.
    #[arg(long, conflicts_with = "patch")]
    pub prompt: bool,
    /// Print the rejected diff of a reverted iteration.
    #[arg(long)]
    pub patch: bool,
    /// Print the output of the iteration's `[hooks]` (hooks.log).
    #[arg(long, conflicts_with_all = ["checks", "prompt", "patch"])]
    pub hooks: bool,
    /// Print the agent's output as it wrote it, instead of readable lines.
    #[arg(long)]
    pub raw: bool,
    /// A parallel run's worker: its current iteration (with -f: it, then the worker's next
    /// ones, until the run ends).
    #[arg(long, value_name = "N", conflicts_with = "iteration")]
    pub worker: Option<u32>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON for scripts (the shape is documented in the README).
    #[arg(long)]
    pub json: bool,
    /// Only this run (default: every run under .ralph/runs/).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// What `ralph worker`s landed and spent, rebuilt from the target branch's history on the
    /// git remote (its commits' trailers) alone.
    #[arg(long)]
    pub remote: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run (default: the latest run).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    /// Where to write the page (default: .ralph/runs/<run-id>/report.html).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo project (default: a new temporary directory, kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ScriptedAgentArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// The prompt (default: read from --prompt-file, else from stdin).
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
}

/// The most workers `ralph deploy` starts: a GitHub Actions matrix runs at most 256 jobs (the
/// same bound serves Kubernetes, where it is a sanity check).
pub const DEPLOY_MAX_WORKERS: u32 = 256;

/// The image the Kubernetes workers run when `--image` is not given: a name to build and push,
/// not a published image.
pub const DEPLOY_IMAGE: &str = "ralph-worker:latest";

/// The Kubernetes Secret the workers read their credentials from by default.
pub const DEPLOY_SECRET: &str = "ralph-agent";

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub target: DeployTarget,
}

#[derive(Debug, Subcommand)]
pub enum DeployTarget {
    /// A Kubernetes Indexed Job: one pod per worker, the clone in an init container, the
    /// agent's credentials from a Secret.
    Kubernetes(KubernetesArgs),
    /// A GitHub Actions workflow: a matrix of workers, started by hand (workflow_dispatch), one
    /// dispatch at a time.
    GithubActions(ActionsArgs),
}

/// What both launchers take.
#[derive(Debug, Args)]
pub struct DeployCommon {
    /// Workers to start (for GitHub Actions, the default of the dispatch's input).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(DEPLOY_MAX_WORKERS)))]
    pub workers: u32,
    /// The branch the workers work on (default: [git] branch in ralph.toml, else the branch
    /// checked out).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
}

#[derive(Debug, Args)]
pub struct KubernetesArgs {
    #[command(flatten)]
    pub common: DeployCommon,
    /// The image the workers run: git, ralph and the agent CLI (the default is a placeholder
    /// name to build).
    #[arg(long, value_name = "IMAGE", default_value = DEPLOY_IMAGE)]
    pub image: String,
    /// The URL the workers clone (default: `git remote get-url origin`).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The Secret holding the agent's credentials and GIT_TOKEN.
    #[arg(long, value_name = "NAME", default_value = DEPLOY_SECRET)]
    pub secret: String,
}

#[derive(Debug, Args)]
pub struct ActionsArgs {
    #[command(flatten)]
    pub common: DeployCommon,
    /// Run the workers in this container image (git, ralph and the agent CLI) instead of
    /// installing ralph and the agent on the runner.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The shell command that installs ralph on the runner, e.g. `cargo install --locked --git
    /// <ralph's repository>` or a download of a release binary (without it, a placeholder).
    #[arg(long, value_name = "COMMAND", conflicts_with = "image")]
    pub install_ralph: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write ralph.1 and one page per subcommand (ralph-run.1, ...) into this directory
    /// instead of printing ralph.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Parses `--split 60/20/20`: train, validation and held-out percentages summing to 100.
fn parse_split(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<u32> = s
        .split('/')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not three whole numbers like 60/20/20"))?;
    match parts.as_slice() {
        [a, b, c] if a + b + c == 100 && *a > 0 => Ok([*a, *b, *c]),
        _ => Err(format!("`{s}`: train/validation/held-out percentages summing to 100, train above 0")),
    }
}
