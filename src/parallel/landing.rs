//! Landing a worker's green work on the target branch, one task at a time (the merge queue):
//! in the worker's own checkout, its commit is rebased onto the branch's current tip, the
//! coordinator writes the task's status and AGENTS.md into it (amending the one commit), the
//! checks run again when the base moved, and only then the branch moves, by a
//! compare-and-swap from the tip the rebase started from.
//!
//! Invariants: the user's checkout is never checked out, merged or reset; when it has the
//! target branch checked out, the branch moves by `git merge --ff-only` there (its files with
//! it, local changes kept as git keeps them), else by `git update-ref <ref> <new> <old>`.
//! Nothing is recorded landed that is not on the branch. Work that does not land is kept as
//! the iteration's `rejected.patch` by the caller.

use crate::backlog::{Spec, Status};
use crate::checks;
use crate::config::Config;
use crate::error::CliError;
use crate::git::{self, CommitResult};
use crate::learnings;
use crate::secrets::{Secrets, StreamMasker};
use crate::signal::Stop;
use std::path::{Path, PathBuf};

/// How often the compare-and-swap is retried when the branch moved under it (the user
/// committed on it meanwhile).
const MAX_TRIES: u32 = 3;

/// How a landing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// On the branch: the landed commit.
    Landed(String),
    /// The work does not apply on the new tip: git's words.
    Conflict(String),
    /// The checks fail on the combined result: the failure's tail.
    Red(String),
    /// A commit hook refused the amended commit: its words.
    Refused(String),
}

/// Moves the branch `target` from `tip` to `new` if it is still at `tip`: by `git merge
/// --ff-only` in the user's checkout when it has the branch checked out (its HEAD still `tip`),
/// else by a compare-and-swap of the ref. `Ok(false)` when the branch moved meanwhile; `Err`
/// git's words when the fast-forward could not update the user's files (local changes in the
/// way).
pub fn move_target(
    root: &Path,
    target: &str,
    new: &str,
    tip: &str,
) -> Result<Result<bool, String>, CliError> {
    if git::current_branch(root)?.as_deref() != Some(target) {
        return Ok(Ok(git::update_ref_from(root, &format!("refs/heads/{target}"), new, tip)?));
    }
    if git::head(root)?.as_deref() != Some(tip) {
        // The user committed meanwhile.
        return Ok(Ok(false));
    }
    match git::fast_forward(root, new)? {
        Ok(()) => Ok(Ok(true)),
        Err(text) if git::head(root)?.as_deref() != Some(tip) => {
            tracing::debug!("the branch moved during the fast-forward: {text}");
            Ok(Ok(false))
        }
        Err(text) => Ok(Err(text)),
    }
}

/// The work to land: the commit checked out in `slot` (made on `base`) for `task`, whose
/// status becomes `status`.
pub struct Work<'a> {
    pub slot: &'a Path,
    pub task: &'a Spec,
    pub status: Status,
    pub base: &'a str,
}

/// What landing needs of the run.
pub struct Lander<'a> {
    /// The user's checkout.
    pub root: &'a Path,
    /// The branch work lands on.
    pub target: &'a str,
    pub cfg: &'a Config,
    pub secrets: &'a Secrets,
    pub stop: &'a Stop,
    pub run_id: &'a str,
}

impl Lander<'_> {
    fn target_ref(&self) -> String {
        format!("refs/heads/{}", self.target)
    }

    /// Lands `work`, with AGENTS.md rendered from `store`; `baseline` is what the checks
    /// already failed on a clean tree. The landing's check output goes to `log`.
    pub async fn land(
        &self,
        work: &Work<'_>,
        store: &learnings::Store,
        baseline: Option<&crate::state::Baseline>,
        log: &Path,
    ) -> Result<Landing, CliError> {
        let Work { slot, task, status, base } = *work;
        let mut base = base.to_string();
        // The commit before an earlier try rendered AGENTS.md into HEAD: its AGENTS.md is put
        // back before the rebase onto a tip that moved (rendered again there; rebased, the
        // rendering could conflict with the tip's).
        let mut rendered: Option<String> = None;
        for _ in 0..MAX_TRIES {
            let tip = git::rev_parse(self.root, &self.target_ref())?
                .ok_or_else(|| CliError::failure(format!("the branch {} is gone", self.target)))?;
            let moved = tip != base;
            if moved
                && let Some(before) = rendered.take()
                && let CommitResult::Refused(text) =
                    git::put_back_in_head(slot, &before, learnings::AGENTS_MD)?
            {
                return Ok(Landing::Refused(self.secrets.mask(&text)));
            }
            if moved && let Err(text) = git::rebase(slot, &tip)? {
                return Ok(Landing::Conflict(self.secrets.mask(&text)));
            }
            base.clone_from(&tip);
            let before = git::head(slot)?;
            match self.write_own_files(slot, task, status, store)? {
                Ok(agents_md) => rendered = before.filter(|_| agents_md),
                Err(refused) => return Ok(Landing::Refused(refused)),
            }
            // Failures the tip's clean tree already had (named tests) are tolerated, as in the
            // single loop.
            let known = baseline.filter(|b| b.head == tip);
            if moved && let Some(failure) = self.check(slot, task, known, log).await? {
                return Ok(Landing::Red(failure));
            }
            let new =
                git::head(slot)?.ok_or_else(|| CliError::failure("the worker's checkout lost its HEAD"))?;
            if self.swap(&new, &tip)? {
                return Ok(Landing::Landed(new));
            }
        }
        Ok(Landing::Conflict(format!(
            "the branch {} kept moving while ralph landed the work ({MAX_TRIES} tries)",
            self.target
        )))
    }

    /// The task's status and AGENTS.md, written by the coordinator into the one commit: whether
    /// AGENTS.md changed, or the words of a hook that refused the commit.
    fn write_own_files(
        &self,
        slot: &Path,
        task: &Spec,
        status: Status,
        store: &learnings::Store,
    ) -> Result<Result<bool, String>, CliError> {
        let spec = slot.join(&task.path);
        let before = crate::fsx::read_input(&spec)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", spec.display())))?;
        let mut include: Vec<PathBuf> = Vec::new();
        if crate::backlog::set_status(slot, task, &before, status, None)? {
            include.push(task.path.clone());
        }
        let agents_md = learnings::write_agents_md(slot, store, &self.cfg.learnings, self.secrets)?;
        if agents_md {
            include.push(PathBuf::from(learnings::AGENTS_MD));
        }
        if include.is_empty() {
            return Ok(Ok(false));
        }
        git::add_paths(slot, &include.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
        match git::amend(slot)? {
            CommitResult::Committed(_) => Ok(Ok(agents_md)),
            CommitResult::Refused(text) => Ok(Err(self.secrets.mask(&text))),
        }
    }

    /// The checks on the combined result; the failure's tail when they fail.
    pub(crate) async fn check(
        &self,
        slot: &Path,
        task: &Spec,
        baseline: Option<&crate::state::Baseline>,
        log: &Path,
    ) -> Result<Option<String>, CliError> {
        let mut cfg = self.cfg.checks.clone();
        cfg.commands.extend(task.checks.iter().cloned());
        let mut file = crate::fsx::create(log)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", log.display())))?;
        let mut masker = StreamMasker::new(self.secrets.clone());
        let env = [
            ("RALPH_RUN_ID".to_string(), self.run_id.to_string()),
            ("RALPH_ROOT".to_string(), slot.to_string_lossy().into_owned()),
        ];
        let ctx = checks::Ctx::new(&env, slot, self.cfg.agent.kill_grace, self.stop, &self.cfg.sandbox);
        let judge = checks::Judge { keep_going: false, baseline, strict: &task.checks };
        let r = checks::run(&cfg, &ctx, &mut file, &mut masker, &judge)
            .await
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", log.display())))?;
        if r.interrupted {
            return Ok(Some("interrupted while the checks ran on the combined result".into()));
        }
        Ok(r.failure.map(|f| self.secrets.mask(&f)))
    }

    /// Moves the branch from `tip` to `new` if it is still at `tip`.
    fn swap(&self, new: &str, tip: &str) -> Result<bool, CliError> {
        match move_target(self.root, self.target, new, tip)? {
            Ok(moved) => Ok(moved),
            Err(text) => Err(CliError::failure(format!(
                "cannot fast-forward your checkout of {} to land a task's work: {}",
                self.target,
                text.trim()
            ))
            .hint("commit or stash the changes in the way, then `ralph run -j` again (the work is kept on its worker's branch)")
            .hint("or set [git] branch in ralph.toml to land on a branch you do not have checked out")),
        }
    }
}
