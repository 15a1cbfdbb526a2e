//! The documented exit codes of `ralph`. Scripts rely on these numbers: never renumber them.

/// The backlog is done (or the command succeeded).
pub const OK: u8 = 0;
/// An unexpected runtime failure (git failed, the disk is full, ...).
pub const FAILURE: u8 = 1;
/// Usage or configuration error: bad flags, malformed ralph.toml or spec, not a git repository,
/// a dirty tree, a detached HEAD or a git operation in progress (rebase, merge, cherry-pick,
/// ...), a missing agent binary, another run holding the lock. Nothing was changed.
pub const USAGE: u8 = 2;
/// A budget ran out (iterations, duration, consecutive failures) with work left.
pub const BUDGET: u8 = 3;
/// Nothing runnable is left, but some tasks are blocked (or held back by blocked tasks).
pub const BLOCKED: u8 = 4;
/// The agent cannot work at all: its authentication failed or its model does not exist.
/// Retrying would only spin, so the run stops.
pub const AGENT: u8 = 5;
/// Interrupted by Ctrl-C, SIGTERM or SIGHUP.
pub const INTERRUPTED: u8 = 130;
