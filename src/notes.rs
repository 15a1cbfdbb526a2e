//! `ralph note`: notes from the person running the loop to the next iteration's agent, so a
//! run can be steered without stopping it. Each note is its own file in `.ralph/notes/`,
//! written whole and synced (`durable::atomic_write`) by `ralph note`; the loop takes every
//! pending note when an iteration starts (a parallel run's coordinator, when it starts a
//! worker), the prompt carries them once, and the iteration's record lists them.
//!
//! Invariants: no lock is shared with a running loop: `ralph note` only creates a new file
//! under a name of its own (time, pid, a random part), and the loop only reads and removes
//! whole files, so neither waits for the other and no note is torn or lost between them. A
//! note is removed only once it was read; files that are not notes (a partly written
//! temporary file, anything else) are left alone. Everything goes through `fsx` (no link is
//! followed).

use crate::fsx;
use crate::state::{self, RALPH_DIR};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The folder under `.ralph/` that holds the pending notes.
pub const NOTES_DIR: &str = "notes";

/// The longest note: a paragraph or two of steering, not a spec.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;

/// Why a note could not be added.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("the note is empty")]
    Empty,
    #[error(
        "the note is {0} bytes; a note holds at most {MAX_NOTE_BYTES} (put longer guidance in a spec or AGENTS.md)"
    )]
    TooLong(usize),
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// One pending note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub text: String,
    /// When `ralph note` wrote it (RFC 3339).
    pub added_at: String,
}

/// The folder of pending notes.
pub fn dir(root: &Path) -> PathBuf {
    root.join(RALPH_DIR).join(NOTES_DIR)
}

/// Adds a note for the next iteration; returns its file.
pub fn add(root: &Path, text: &str) -> Result<PathBuf, NoteError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(NoteError::Empty);
    }
    if text.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLong(text.len()));
    }
    state::ensure_ralph_dir(root)?;
    let note = Note { text: text.to_string(), added_at: crate::logs::now_rfc3339() };
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Sorted by name is sorted by time; the pid and the random part keep two notes written
    // in the same nanosecond apart.
    let name = format!("{nanos:024}-{}-{:08x}.json", std::process::id(), fastrand::u32(..));
    let path = dir(root).join(name);
    let bytes = serde_json::to_vec_pretty(&note).unwrap_or_default();
    state::atomic_write(&path, &bytes)?;
    Ok(path)
}

/// The pending notes, oldest first, with their files. A file that is not a note is skipped.
pub fn pending(root: &Path) -> Vec<(PathBuf, Note)> {
    let folder = dir(root);
    let Ok(d) = fsx::open_dir(&folder, false) else { return Vec::new() };
    let mut names: Vec<String> = d
        .names()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let path = folder.join(&n);
            let text = fsx::read_input(&path).ok()?;
            let note: Note = serde_json::from_str(&text).ok()?;
            Some((path, note))
        })
        .collect()
}

/// Takes the pending notes for the iteration about to start: their texts, oldest first; each
/// file is removed once read (one that cannot be removed is not taken, so it is never carried
/// twice).
pub fn take(root: &Path) -> Vec<String> {
    pending(root).into_iter().filter(|(path, _)| fsx::remove_any(path).is_ok()).map(|(_, n)| n.text).collect()
}

/// The file in an iteration's folder by which a coordinator (`ralph run -j`, a remote worker)
/// hands the notes it took to the `ralph work-slot` process that runs the iteration.
pub const HANDED: &str = "notes.json";

/// Hands `notes` to the iteration whose folder is `iter_dir` (nothing is written for none).
pub fn hand(iter_dir: &Path, notes: &[String]) -> Result<(), state::StateError> {
    if notes.is_empty() {
        return Ok(());
    }
    state::atomic_write(&iter_dir.join(HANDED), &serde_json::to_vec(notes).unwrap_or_default())
}

/// The notes handed to the iteration whose folder is `iter_dir`.
pub fn handed(iter_dir: &Path) -> Vec<String> {
    fsx::read_input(&iter_dir.join(HANDED))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Removes every pending note; how many there were.
pub fn clear(root: &Path) -> usize {
    take(root).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_taken_once_in_the_order_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(take(root).is_empty(), "no folder yet: nothing pending");
        add(root, "  first  ").unwrap();
        add(root, "second").unwrap();
        // Not a note: left alone.
        std::fs::write(super::dir(root).join(".ralph-tmp-x"), "half").unwrap();
        let listed: Vec<String> = pending(root).into_iter().map(|(_, n)| n.text).collect();
        assert_eq!(listed, ["first", "second"]);
        assert_eq!(take(root), ["first", "second"]);
        assert!(take(root).is_empty(), "a note is carried once");
        assert!(super::dir(root).join(".ralph-tmp-x").exists());
    }

    #[test]
    fn empty_and_oversized_notes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(add(dir.path(), " \n "), Err(NoteError::Empty)));
        let long = "x".repeat(MAX_NOTE_BYTES + 1);
        assert!(matches!(add(dir.path(), &long), Err(NoteError::TooLong(_))));
        assert!(pending(dir.path()).is_empty());
    }

    #[test]
    fn a_link_in_place_of_the_folder_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        add(elsewhere.path(), "planted").unwrap();
        std::fs::create_dir_all(dir.path().join(RALPH_DIR)).unwrap();
        std::os::unix::fs::symlink(super::dir(elsewhere.path()), super::dir(dir.path())).unwrap();
        assert!(pending(dir.path()).is_empty());
        assert!(take(dir.path()).is_empty());
        assert_eq!(pending(elsewhere.path()).len(), 1, "the link's target is untouched");
    }
}
