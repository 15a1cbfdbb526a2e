//! Named fault points for the crash-safety tests: with `RALPH_FAULT=<name>` in its environment,
//! ralph kills itself with SIGKILL when it reaches the point of that name, as a power cut or
//! `kill -9` would. Without the variable each point is one cached check.

use std::sync::OnceLock;

fn target() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var("RALPH_FAULT").ok().filter(|s| !s.is_empty())).as_deref()
}

/// Whether any fault point is armed (to skip building names for [`point`]).
pub fn armed() -> bool {
    target().is_some()
}

/// Dies here if `RALPH_FAULT` names this point.
pub fn point(name: &str) {
    if target() == Some(name) {
        // SAFETY: kill has no memory-safety preconditions; SIGKILL to ourselves never returns.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
