//! `ralph plan`: the configured agent runs once over the backlog to write or update it (split
//! large tasks, order them, set dependencies), and the result is left as an uncommitted change
//! for the user to review before `ralph run`.
//!
//! Invariants: the backlog's files must have no uncommitted change before (so the plan is a
//! change of its own); anything the agent changed outside the backlog is put back (its diff
//! kept in the plan's folder); nothing is committed; the backlog it leaves is validated and an
//! invalid one is named with its file and line.

use crate::agent::session::Session;
use crate::agent::{self, IterationEnv};
use crate::backlog::{Backlog, SPECS_DIR, Source};
use crate::config::{self, Overrides};
use crate::error::CliError;
use crate::exit_code;
use crate::git;
use crate::process::Ending;
use crate::runner;
use crate::secrets::Secrets;
use crate::signal::Stop;
use crate::state::{self, RunLock};
use serde::Serialize;
use std::path::Path;

/// The built-in planning prompt.
pub const PLAN_TEMPLATE: &str = include_str!("../../templates/plan.md");

#[derive(Serialize)]
struct PlanContext {
    source: String,
    /// "specs", "prd" or "checklist".
    format: &'static str,
    tasks: Vec<PlanTask>,
    request: String,
    agents_md: String,
}

#[derive(Serialize)]
struct PlanTask {
    label: String,
    status: String,
    depends_on: Vec<String>,
    body: String,
}

/// Whether `path` (relative to the root) belongs to the backlog.
fn in_backlog(source: &Source, path: &str) -> bool {
    match source.file() {
        None => path.starts_with(&format!("{SPECS_DIR}/")),
        Some(f) => Path::new(path) == f,
    }
}

fn render(
    template: (&str, &str),
    source: &Source,
    backlog: &Backlog,
    request: &str,
    agents_md: &str,
) -> Result<String, CliError> {
    let ctx = PlanContext {
        source: source.describe(),
        format: match source {
            Source::Specs => "specs",
            Source::Prd(_) => "prd",
            Source::Checklist(_) => "checklist",
        },
        tasks: backlog
            .tasks
            .iter()
            .map(|t| PlanTask {
                label: t.label(),
                status: t.status.as_str().to_string(),
                depends_on: t.depends_on.clone(),
                body: t.body.trim().to_string(),
            })
            .collect(),
        request: request.trim().to_string(),
        agents_md: agents_md.trim().to_string(),
    };
    let (name, text) = template;
    let mut env = minijinja::Environment::new();
    env.add_template("plan", text)
        .and_then(|()| env.get_template("plan")?.render(minijinja::value::Serde(&ctx)))
        .map_err(|e| CliError::usage(format!("{name}:{}: {e}", e.line().unwrap_or(1))))
}

/// Runs `ralph plan [REQUEST]`.
pub async fn run(
    cwd: &Path,
    agent_preset: Option<String>,
    request: &str,
    stop: Stop,
) -> Result<u8, CliError> {
    let root = runner::repo_root(cwd)?;
    state::check_ralph_dir(&root)?;
    let cfg = runner::load_config(&root, &Overrides { agent: agent_preset })?;
    let source = cfg.source(&root);
    let backlog = Backlog::load(&root, &source)?;
    crate::sandbox::runner(&cfg.sandbox)?;
    if cfg.sandbox.kind != crate::sandbox::Kind::Container
        && agent::resolve_program(&cfg.agent, &root).is_none()
    {
        return Err(CliError::usage(format!(
            "{}: [agent] command: `{}` was not found",
            config::FILE_NAME,
            cfg.agent.command[0]
        ))
        .hint("install the agent, or set [agent] command to its full path"));
    }
    if git::head(&root)?.is_none() {
        return Err(CliError::usage("the repository has no commits yet")
            .hint("commit your project before `ralph plan`, so its change can be reviewed"));
    }
    let dirty: Vec<String> = git::dirty_entries(&root)?
        .into_iter()
        .filter(|l| in_backlog(&source, l.get(3..).unwrap_or_default()))
        .collect();
    if !dirty.is_empty() {
        return Err(CliError::usage(format!(
            "{} has uncommitted changes:\n{}",
            source.describe(),
            dirty.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
        ))
        .hint("commit or stash them first, so that the plan is a change of its own to review"));
    }
    let ralph_dir = state::ensure_ralph_dir(&root)?;
    let _lock = RunLock::acquire(&ralph_dir).map_err(|e| match e {
        state::StateError::Locked { .. } => {
            CliError::usage(e.to_string()).hint("a run is changing the backlog: plan when it has stopped")
        }
        other => other.into(),
    })?;

    let env_vars: Vec<(String, String)> = cfg.agent.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let secrets = Secrets::from_env(&env_vars);
    let agents_md =
        crate::fsx::read_input_following(&root.join(crate::learnings::AGENTS_MD)).unwrap_or_default();
    let custom = match &cfg.plan_template {
        Some(p) => Some((
            p.display().to_string(),
            crate::fsx::read_input(&root.join(p)).map_err(|e| {
                CliError::usage(format!(
                    "{}: [prompt] plan_template: cannot read {}: {e}",
                    config::FILE_NAME,
                    p.display()
                ))
            })?,
        )),
        None => None,
    };
    let template = match &custom {
        Some((name, text)) => (name.as_str(), text.as_str()),
        None => ("templates/plan.md (built in)", PLAN_TEMPLATE),
    };
    let prompt = secrets.mask(&render(template, &source, &backlog, request, &agents_md)?);
    let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    let dir = ralph_dir.join("plans").join(&stamp);
    crate::fsx::create_dir_all(&dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
    let prompt_path = dir.join("prompt.md");
    state::atomic_write(&prompt_path, prompt.as_bytes())?;
    let before = git::snapshot(&root, &ralph_dir.join("plan-index"))?;

    eprintln!(
        "ralph plan: the agent is planning {} (its log: {})",
        source.describe(),
        rel(&root, &dir.join("agent.log"))
    );
    let env = IterationEnv {
        run_id: format!("plan-{stamp}"),
        iteration: 1,
        task: "plan".into(),
        task_iteration: 1,
        iter_dir: dir.clone(),
    };
    let req = agent::request(&cfg.agent, &cfg.sandbox, &root, &prompt, &prompt_path, &env)?;
    let log_path = dir.join("agent.log");
    let ended = Session::new(&cfg.agent, "agent", &req, &prompt, &secrets, &stop.cancel, &stop.force)
        .run(&log_path, &mut ())
        .await
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", log_path.display())))?;
    let finished = match ended.finished {
        Ok(f) => f,
        Err(e) => {
            return Err(CliError::failure(format!("the agent could not start: {}", crate::error::chain(&e))));
        }
    };
    let report = ended.report;

    // Only the backlog is the plan's: anything else the agent changed is put back.
    let after = git::snapshot(&root, &ralph_dir.join("plan-index"))?;
    let changes = git::name_status(&root, &before, &after)?;
    let (planned, stray): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, p)| in_backlog(&source, p));
    if !stray.is_empty() {
        let paths: Vec<String> = stray.iter().map(|(_, p)| p.clone()).collect();
        let patch = git::tree_patch(&root, &before, &after, &paths)?;
        let patch_path = dir.join("rejected.patch");
        crate::fsx::write(&patch_path, &secrets.mask_bytes(&patch))
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", patch_path.display())))?;
        for p in &paths {
            git::put_back_path(&root, &before, p)?;
        }
        eprintln!(
            "ralph plan: the agent changed files outside the backlog; put back (its diff: {}):\n{}",
            rel(&root, &patch_path),
            paths.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
        );
    }

    // Like the loop's agent.log: a log that cannot be written (a full disk) is an error.
    if let Some(e) = ended.write_error {
        return Err(CliError::failure(format!("cannot write {}: {e}", log_path.display()))
            .hint("what the agent wrote is left uncommitted: review it with `git diff`, or drop it"));
    }
    if finished.ending == Ending::Cancelled {
        eprintln!("ralph plan: interrupted; what the agent wrote so far is left for review");
        return Ok(exit_code::INTERRUPTED);
    }
    if let Some(f) = &report.fatal {
        return Err(CliError {
            code: exit_code::AGENT,
            ..CliError::failure(format!("the agent cannot work: {}", f.message()))
        });
    }
    let failed = finished.ending != Ending::Exited || finished.exit_code != Some(0) || report.is_error;
    let summary = print_summary(&root, &source, &planned);
    if failed {
        let how = match (finished.ending, finished.exit_code) {
            (Ending::Timeout, _) => "was stopped at its time limit".to_string(),
            (Ending::IdleTimeout, _) => "printed nothing for too long and was stopped".to_string(),
            (_, Some(c)) if c != 0 => format!("exited with code {c}"),
            _ => "reported an error".to_string(),
        };
        return Err(CliError::failure(format!("the planning agent {how}; see {}", rel(&root, &log_path)))
            .hint("what it wrote is left uncommitted: review it with `git diff`, or drop it"));
    }
    // The plan must be a backlog ralph can run.
    if let Err(e) = Backlog::load(&root, &source) {
        return Err(CliError::failure(format!(
            "the plan left an invalid backlog: {}",
            crate::error::chain(&e)
        ))
        .hint(format!("fix it by hand, or drop the plan: {}", drop_hint(&source))));
    }
    if planned.is_empty() {
        crate::outln!("The agent left the backlog as it was.");
        return Ok(exit_code::OK);
    }
    crate::out!("{summary}");
    crate::outln!(
        "\nNothing is committed. Review it: `git diff -- {0}` and `git status -- {0}`; then commit it and `ralph run`.\nTo drop it: {1}",
        source.file().map_or_else(|| SPECS_DIR.to_string(), |f| f.display().to_string()),
        drop_hint(&source)
    );
    Ok(exit_code::OK)
}

fn drop_hint(source: &Source) -> String {
    match source.file() {
        None => format!("`git checkout -- {SPECS_DIR} && git clean -fd -- {SPECS_DIR}`"),
        Some(f) => format!("`git checkout -- {}`", f.display()),
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// What the plan changed, then the backlog it leaves.
fn print_summary(root: &Path, source: &Source, planned: &[(char, String)]) -> String {
    let mut out = String::new();
    for (kind, path) in planned {
        let word = match kind {
            'A' => "added   ",
            'D' => "removed ",
            _ => "changed ",
        };
        out.push_str(&format!("{word} {path}\n"));
    }
    if let Ok(b) = Backlog::load(root, source) {
        out.push_str(&format!(
            "\nThe backlog now ({} task(s), in the order ralph will take them):\n",
            b.tasks.len()
        ));
        let w = b.tasks.iter().map(|t| t.id.len()).max().unwrap_or(0);
        for t in b.in_order() {
            let deps = if t.depends_on.is_empty() {
                String::new()
            } else {
                format!("  (after {})", t.depends_on.join(", "))
            };
            out.push_str(&format!("  {:<7} {:<w$}  {}{deps}\n", t.status.as_str(), t.id, t.title));
        }
    }
    out
}
