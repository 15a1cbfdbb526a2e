//! `ralph eval`: scores the agent's instructions (the prompt template and AGENTS.md) on real
//! tasks. A case is a task with a start commit and a hidden check the agent never sees; each
//! trial runs the normal iteration (same agent, checks, gates) in a scratch worktree, never in
//! the user's checkout or on their branches, then runs the hidden check.
//!
//! Cases come from a folder (`--suite DIR`, [`suite`]) or from the history of earlier runs
//! ([`history`]).

pub mod history;
pub mod suite;

use std::path::PathBuf;

/// One evaluation case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The case's name (its folder, or the task's id).
    pub id: String,
    /// The commit the case starts from (a full sha).
    pub start: String,
    /// The task's spec as the agent is given it (front matter allowed).
    pub spec: String,
    /// What decides whether the agent's result passes; never shown to the agent.
    pub check: Check,
    /// An executable run at the scratch checkout's root before the agent (folder suites).
    pub setup: Option<PathBuf>,
}

/// A case's hidden check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// An executable run at the scratch checkout's root after the agent; exit 0 passes.
    Script(PathBuf),
    /// The task's check commands, run after `files` are put back as they are at `commit` (the
    /// test files of the commit that finished the task, over the agent's result, so that
    /// weakening them cannot pass).
    Restored { commands: Vec<String>, commit: String, files: Vec<String> },
}
