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
    let text = text.trim();
    if text.is_empty() {
        return Err(CliError::usage(NoteError::Empty.to_string()));
    }
    if text.len() > notes::MAX_NOTE_BYTES {
        return Err(CliError::usage(NoteError::TooLong(text.len()).to_string()));
    }
    // A run going on takes the note itself, from a process it can tell is not its agent's.
    let offered = notes::offer(&root, text)
        .map_err(|e| CliError::failure(format!("cannot hand the note to the run going on: {e}")))?;
    match offered {
        notes::Offered::Taken => {
            crate::outln!("noted: the run going on carries it in its next iteration's prompt, once");
            Ok(crate::exit_code::OK)
        }
        notes::Offered::Refused(why) => {
            Err(CliError::usage(format!("the run going on refused the note: {why}")))
        }
        notes::Offered::NoRun => {
            if RunLock::holder(&root.join(RALPH_DIR)).is_some() {
                // A run that listens on no socket carries only the notes it found at its start.
                return Err(CliError::usage("the run going on cannot take notes (its socket is not open)")
                    .hint("leave the note after it ends: the next `ralph run` takes it"));
            }
            notes::add(&root, text).map_err(|e| match e {
                NoteError::State(s) => CliError::from(s),
                other => CliError::usage(other.to_string()),
            })?;
            crate::outln!(
                "noted: no run is going on: the next `ralph run` carries it in its first iteration's prompt, once"
            );
            Ok(crate::exit_code::OK)
        }
    }
}
