//! `ralph stop`: asks the running loop (whose pid the run lock holds) to stop after the current
//! iteration (SIGUSR1), or at once with `--now` (SIGTERM: the agent is ended, the tree
//! restored, the iteration recorded as `interrupted`). The run can be resumed with `ralph run`.

use crate::error::CliError;
use crate::state::{RALPH_DIR, RunLock};
use std::path::Path;

/// Runs `ralph stop`.
pub fn run(cwd: &Path, now: bool) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let Some(pid) = RunLock::holder(&root.join(RALPH_DIR)) else {
        return Err(CliError::usage("no `ralph run` is running in this repository"));
    };
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| CliError::failure(format!("bad pid {pid} in .ralph/lock")))?;
    let signal = if now { libc::SIGTERM } else { libc::SIGUSR1 };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(CliError::failure(format!(
            "cannot signal ralph (pid {pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    if now {
        crate::outln!("asked ralph (pid {pid}) to stop now: the agent is being ended and the tree restored");
    } else {
        crate::outln!("asked ralph (pid {pid}) to stop after the current iteration");
    }
    Ok(crate::exit_code::OK)
}
