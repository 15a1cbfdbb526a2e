//! `ralph note`: a note for the next iteration's agent, so a person can steer a run without
//! stopping it (see [`crate::notes`]); `--list` shows the notes not taken yet, `--clear`
//! withdraws them. Takes no lock: it works while a run is going on.

use crate::cli::NoteArgs;
use crate::error::CliError;
use crate::notes::{self, NoteError};
use crate::state::{RALPH_DIR, RunLock};
use std::path::Path;

/// Runs `ralph note`.
pub fn run(cwd: &Path, a: &NoteArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    if a.list {
        let pending = notes::pending(&root);
        if pending.is_empty() {
            crate::outln!("no notes waiting: `ralph note \"...\"` leaves one for the next iteration");
        }
        for (_, n) in pending {
            crate::outln!("{}  {}", n.added_at, crate::term::sanitize(&n.text, false));
        }
        return Ok(crate::exit_code::OK);
    }
    if a.clear {
        let n = notes::clear(&root);
        crate::outln!("withdrew {n} note(s)");
        return Ok(crate::exit_code::OK);
    }
    let text = a.text.join(" ");
    notes::add(&root, &text).map_err(|e| match e {
        NoteError::State(s) => CliError::from(s),
        other => CliError::usage(other.to_string()),
    })?;
    let running = RunLock::holder(&root.join(RALPH_DIR)).is_some();
    crate::outln!(
        "noted: the next iteration's prompt carries it, once{}",
        if running {
            " (the run going on takes it when its next iteration starts)"
        } else {
            " (no run is going on: the next `ralph run` takes it)"
        }
    );
    Ok(crate::exit_code::OK)
}
