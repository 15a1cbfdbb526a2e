//! The top-level error every command returns: a message, optional hints, and the exit code it
//! maps to. Subsystem errors convert into it, and their kind picks the code (after jj's
//! `CommandError`).

use crate::exit_code;
pub use crate::text::chain;
use std::fmt;

/// An error that ends a `ralph` command.
#[derive(Debug)]
pub struct CliError {
    /// The exit code, from [`crate::exit_code`].
    pub code: u8,
    /// One line that reads well after "error: ".
    pub message: String,
    /// Follow-up lines that tell the user what to do.
    pub hints: Vec<String>,
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: exit_code::USAGE, message: message.into(), hints: Vec::new() }
    }

    /// A runtime failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self { code: exit_code::FAILURE, message: message.into(), hints: Vec::new() }
    }

    /// Adds a hint line.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for CliError {}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::usage(chain(&e))
    }
}

impl From<crate::backlog::BacklogError> for CliError {
    fn from(e: crate::backlog::BacklogError) -> Self {
        match e {
            // Writing a status is ralph failing, not bad input.
            crate::backlog::BacklogError::State(e) => e.into(),
            e => CliError::usage(chain(&e)),
        }
    }
}

impl From<crate::prompt::PromptError> for CliError {
    fn from(e: crate::prompt::PromptError) -> Self {
        CliError::usage(chain(&e))
    }
}

impl From<crate::git::GitError> for CliError {
    fn from(e: crate::git::GitError) -> Self {
        CliError::failure(format!("git failed: {}", chain(&e)))
    }
}

impl From<crate::state::StateError> for CliError {
    fn from(e: crate::state::StateError) -> Self {
        match e {
            crate::state::StateError::NotOurs { .. } => CliError::usage(chain(&e)),
            crate::state::StateError::NotOurFile { name, .. } => CliError::usage(chain(&e)).hint(format!(
                "remove it: `rm {}/{name}` (ralph makes its files itself)",
                crate::state::RALPH_DIR
            )),
            e => CliError::failure(chain(&e)),
        }
    }
}

impl From<crate::sandbox::SandboxError> for CliError {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        let hint = e.hint();
        CliError::usage(chain(&e)).hint(hint)
    }
}

impl From<crate::process::SpawnError> for CliError {
    fn from(e: crate::process::SpawnError) -> Self {
        CliError::failure(chain(&e))
    }
}
