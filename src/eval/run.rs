//! Running an evaluation: each case's trials, each in its own scratch worktree under
//! `<git common dir>/ralph-eval/<eval id>/`, on a scratch branch `ralph/eval/...` started at the
//! case's start commit. A trial sets the case up (today's ralph.toml, the case's spec, the
//! candidate AGENTS.md, the case's `setup`) in one scratch commit, then runs the normal
//! iteration (`ralph work-slot`: the same agent, checks and gates as a run) until the task is
//! done or `max_iterations` are spent, then the hidden check.
//!
//! Invariants: the user's checkout, index and branches are never touched; every scratch
//! worktree and branch is removed when its trial ends (and by the next eval after a crash).
//! The hidden check lives outside the scratch tree (a suite's `check`) or is put back from the
//! commit that finished the task (a history case's test files) after the agent is done: the
//! agent never sees it, and cannot pass by weakening it. A trial during which a gate caught the
//! agent changing a protected path or weakening a test scores 0 whatever its check says.

use super::{Case, Check};
use crate::error::CliError;
use crate::git;
use crate::record::{Cause, IterationRecord, Outcome};
use crate::runner::worker::{SlotTask, WorkerResult};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Usage-limit waits a trial sits out before it gives up.
const MAX_LIMIT_WAITS: u32 = 3;

/// What every trial of an evaluation shares.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The user's checkout.
    pub root: PathBuf,
    pub eval_id: String,
    /// Where the trials' logs go (`.ralph/eval/<id>/`).
    pub dir: PathBuf,
    pub max_iterations: u32,
    /// The candidate's prompt template (absolute), if not the configured one.
    pub template: Option<PathBuf>,
    /// The candidate's AGENTS.md text, if not the start commit's.
    pub agents_md: Option<String>,
    /// `--agent`.
    pub agent: Option<String>,
    /// ralph's own program, to start workers.
    pub exe: PathBuf,
}

/// How one trial went.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    pub case: String,
    pub trial: u32,
    pub passed: bool,
    /// A gate caught the agent gaming the checks: scored 0.
    pub gamed: bool,
    pub iterations: u32,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// Why the trial could not be scored as usual (an agent that cannot work, a worker that
    /// died), if so.
    pub note: Option<String>,
    /// The hidden check passed before the agent ran: the case measures nothing.
    #[serde(default)]
    pub passes_at_start: bool,
    /// Why the case cannot be scored (its `setup` failed, its check cannot run): it is left
    /// out, and the evaluation goes on with the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// Where the scratch worktrees of `root`'s repository go.
pub fn scratch_folder(root: &Path) -> PathBuf {
    git::common_dir(root).unwrap_or_else(|| root.join(".git")).join("ralph-eval")
}

/// Takes the evaluations' lock (`.ralph/eval/lock`; one `ralph eval` or `ralph tune` at a
/// time in a repository) and removes what a killed one left: each starts by removing the
/// scratch checkouts it finds, which would pull a running one's from under its agents.
/// ralph's folder is made as every command makes it (git-ignored). Returns the lock, and the
/// evaluations' folder.
pub fn exclusive(root: &Path) -> Result<(crate::state::RunLock, PathBuf), CliError> {
    let evals = crate::state::ensure_ralph_dir(root)?.join("eval");
    let lock = crate::state::RunLock::acquire(&evals).map_err(|e| match e {
        crate::state::StateError::Locked { pid } => CliError::usage(format!(
            "another `ralph eval` or `ralph tune` (pid {pid}) is already running in this repository"
        ))
        .hint("wait for it to finish"),
        other => other.into(),
    })?;
    remove_scratch(root);
    Ok((lock, evals))
}

/// Removes every scratch worktree and branch evaluations left (a killed one's).
pub fn remove_scratch(root: &Path) {
    let dir = scratch_folder(root);
    let _ = git::remove_worktrees_under(root, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = git::worktree_remove(root, &dir);
    for (name, _) in git::branches(root, "ralph/eval/").unwrap_or_default() {
        let _ = git::update_ref(root, &format!("refs/heads/{name}"), None);
    }
}

/// Runs trial `trial` of `case`; with `check_start`, first runs the hidden check on the set-up
/// tree and stops there if it already passes.
pub async fn trial(s: Setup, case: Case, trial: u32, check_start: bool) -> Result<Trial, CliError> {
    let started = Instant::now();
    let name = format!("{}-{trial}", case.id);
    let path = scratch_folder(&s.root).join(&s.eval_id).join(&name);
    let branch = format!("ralph/eval/{}/{}", s.eval_id, branch_part(&name));
    let logs = s.dir.join(&case.id).join(trial.to_string());
    crate::fsx::create_dir_all(&logs)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", logs.display())))?;
    git::worktree_add(&s.root, &path, &branch, &case.start, &format!("ralph eval {}", s.eval_id))?;
    let result = run_trial(&s, &case, trial, check_start, &path, &logs).await;
    let _ = git::worktree_remove(&s.root, &path);
    let _ = git::update_ref(&s.root, &format!("refs/heads/{branch}"), None);
    let mut t = result?;
    t.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(t)
}

/// `name` as one component of a branch name: itself when git takes it as is, otherwise with
/// every other character made `_` and a hash of the name added, so that two names that differ
/// only there still get two branches. A case is named by its folder or its task's spec file,
/// and either may hold a space or a `~`, which git refuses in a branch.
fn branch_part(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.is_empty()
        && name.chars().all(plain)
        && !name.starts_with('.')
        && !name.contains("..")
        && !name.ends_with(".lock")
        && !name.ends_with('.')
    {
        return name.to_string();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{safe}-{:08x}", h.finish() as u32)
}

async fn run_trial(
    s: &Setup,
    case: &Case,
    trial: u32,
    check_start: bool,
    path: &Path,
    logs: &Path,
) -> Result<Trial, CliError> {
    let mut t = Trial { case: case.id.clone(), trial, ..Trial::default() };
    if let Err(e) = set_up(s, case, path, logs).await {
        t.broken = Some(e.message);
        return Ok(t);
    }
    if check_start {
        match hidden_check(case, path, &logs.join("check-at-start.log")).await {
            Ok(true) => {
                t.passes_at_start = true;
                return Ok(t);
            }
            Ok(false) => {}
            Err(e) => {
                t.broken = Some(e.message);
                return Ok(t);
            }
        }
        // The check's restored files go again: the agent starts from the set-up commit.
        git::restore(path, "HEAD")?;
    }
    let mut records: Vec<IterationRecord> = Vec::new();
    let mut n = 0;
    let mut waits = 0;
    while n < s.max_iterations {
        n += 1;
        let Some(result) = work(s, case, path, logs, n).await? else {
            t.note = Some(format!("the worker of iteration {n} ended without a result (see its worker.log)"));
            break;
        };
        if let Some(fatal) = &result.fatal {
            t.note = Some(fatal.clone());
            records.push(result.record);
            break;
        }
        if let Some((reset_at, message)) = &result.limit {
            if waits >= MAX_LIMIT_WAITS {
                t.note = Some(format!("a usage limit: {message}"));
                records.push(result.record);
                break;
            }
            waits += 1;
            let limit = crate::agent::limits::Limit {
                reset_at: reset_at.as_deref().and_then(|r| r.parse().ok()),
                message: message.clone(),
            };
            let wait =
                crate::agent::limits::wait_for(&limit, jiff::Timestamp::now(), Duration::from_secs(30));
            tokio::time::sleep(wait).await;
            // A limit uses no iteration of the case.
            n -= 1;
            records.push(result.record);
            continue;
        }
        let done = result.record.outcome == Outcome::Done;
        records.push(result.record);
        if done {
            break;
        }
    }
    t.iterations = u32::try_from(records.iter().filter(|r| r.outcome != Outcome::RateLimited).count())
        .unwrap_or(u32::MAX);
    t.tokens = records.iter().map(|r| r.tokens.map_or(0, |x| x.total())).sum();
    t.cost_usd = records.iter().map(|r| r.cost_usd.unwrap_or(0.0)).sum();
    t.gamed = records.iter().any(|r| r.cause.is_some_and(Cause::is_gaming));
    let passed = match hidden_check(case, path, &logs.join("check.log")).await {
        Ok(p) => p,
        Err(e) => {
            t.broken = Some(e.message);
            return Ok(t);
        }
    };
    t.passed = passed && !t.gamed;
    Ok(t)
}

/// The case's start, as the agent finds it: today's ralph.toml, the case's spec, the
/// candidate's AGENTS.md, what `setup` made; all in one scratch commit.
async fn set_up(s: &Setup, case: &Case, path: &Path, logs: &Path) -> Result<(), CliError> {
    let write = |rel: &str, text: &[u8]| {
        let p = path.join(rel);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&p, text).map_err(|e| CliError::failure(format!("cannot write {}: {e}", p.display())))
    };
    let toml = crate::fsx::read_input(&s.root.join(crate::config::FILE_NAME))
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", crate::config::FILE_NAME)))?;
    write(crate::config::FILE_NAME, toml.as_bytes())?;
    // The case's spec is the task's: a task of that id at the start (a history case's own, or
    // a suite case named like a spec of the project) gets the case's text in its own file, so
    // that there is one task of that id; otherwise it is a new spec.
    let source = crate::config::backlog_source(path);
    let existing = crate::backlog::Backlog::load(path, &source).ok().and_then(|b| b.get(&case.id).cloned());
    match existing {
        Some(t) if t.origin == crate::backlog::Origin::File => {
            let now = std::fs::read_to_string(path.join(&t.path)).unwrap_or_default();
            if now != case.spec {
                write(&t.path.to_string_lossy(), case.spec.as_bytes())?;
            }
        }
        // A story or an item keeps its file: its text is the start's.
        Some(_) => {}
        None => write(&format!("{}/{}.md", crate::backlog::SPECS_DIR, case.id), case.spec.as_bytes())?,
    }
    if let Some(md) = &s.agents_md {
        write(crate::learnings::AGENTS_MD, md.as_bytes())?;
    }
    if let Some(setup) = &case.setup {
        let log = crate::fsx::create(&logs.join("setup.log"))
            .map_err(|e| CliError::failure(format!("cannot create the setup log: {e}")))?;
        let err =
            log.try_clone().map_err(|e| CliError::failure(format!("cannot share the setup log: {e}")))?;
        let status = tokio::process::Command::new(setup)
            .current_dir(path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .await
            .map_err(|e| CliError::failure(format!("cannot run {}: {e}", setup.display())))?;
        if !status.success() {
            return Err(CliError::failure(format!(
                "case {}: its setup {} failed ({status}); see {}",
                case.id,
                setup.display(),
                logs.join("setup.log").display()
            )));
        }
    }
    git::commit_scratch(path, &format!("ralph eval: case {}", case.id))?;
    Ok(())
}

/// One iteration of the case's task by a worker in the scratch checkout.
async fn work(
    s: &Setup,
    case: &Case,
    path: &Path,
    logs: &Path,
    n: u32,
) -> Result<Option<WorkerResult>, CliError> {
    let mut cmd = SlotTask {
        slot: path.to_path_buf(),
        task: case.id.clone(),
        run_id: format!("eval-{}", s.eval_id),
        iteration: n,
        run_dir: logs.to_path_buf(),
        worker: 1,
        time_left: None,
        agent: s.agent.clone(),
        agent_name: None,
        template: s.template.clone(),
    }
    .command(&s.exe)?;
    cmd.env("RALPH_EVAL", &s.eval_id).kill_on_drop(true);
    let dir = crate::logs::iter_dir(logs, n);
    cmd.status().await.map_err(|e| CliError::failure(format!("cannot start a worker: {e}")))?;
    Ok(WorkerResult::load(&dir))
}

/// Runs the case's hidden check in the scratch checkout; whether it passed.
async fn hidden_check(case: &Case, path: &Path, log: &Path) -> Result<bool, CliError> {
    let out = crate::fsx::create(log)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", log.display())))?;
    let err =
        out.try_clone().map_err(|e| CliError::failure(format!("cannot share {}: {e}", log.display())))?;
    let status = |mut cmd: tokio::process::Command, out: std::fs::File, err: std::fs::File| async move {
        cmd.current_dir(path)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .status()
            .await
            .map(|s| s.success())
            .map_err(|e| CliError::failure(format!("cannot run case {}'s check: {e}", case.id)))
    };
    match &case.check {
        Check::Script(script) => status(tokio::process::Command::new(script), out, err).await,
        Check::Restored { commands, commit, files } => {
            git::checkout_files(path, commit, files)?;
            for c in commands {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.args(["-c", c]);
                let (o, e) = (
                    out.try_clone()
                        .map_err(|e| CliError::failure(format!("cannot share {}: {e}", log.display())))?,
                    err.try_clone()
                        .map_err(|e| CliError::failure(format!("cannot share {}: {e}", log.display())))?,
                );
                if !status(cmd, o, e).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_parts_are_names_git_takes_and_tell_cases_apart() {
        assert_eq!(branch_part("010-parser.v2-1"), "010-parser.v2-1");
        let odd =
            ["has space-1", "has_space-1", "a~b-1", "a..b-1", ".hidden-1", "x.lock", "dé-1", "a:b^c?-1"];
        let parts: Vec<String> = odd.iter().map(|n| branch_part(n)).collect();
        for (n, p) in odd.iter().zip(&parts) {
            let ok = std::process::Command::new("git")
                .args(["check-ref-format", &format!("refs/heads/ralph/eval/1/{p}")])
                .status()
                .unwrap()
                .success();
            assert!(ok, "{n:?} -> {p:?}");
        }
        let distinct: std::collections::BTreeSet<&String> = parts.iter().collect();
        assert_eq!(distinct.len(), parts.len(), "{parts:?}");
    }
}
