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
//!
//! A note speaks with the person's voice, so the agent must not be able to write one: an
//! unsandboxed agent can write any file under `.ralph/`. While a run goes on, its [`Inbox`]
//! is the only way in: `ralph note` hands the text over an abstract Unix socket whose peer
//! the loop checks (the same user, and not a process descended from ralph itself: the agent,
//! its daemons, the checks), and the loop writes the file itself. A run carries only the
//! notes that were there when it started and those it wrote; any other file that appears in
//! the folder while it runs is refused, removed, and said. After a run killed mid-way (its
//! agent may have written into the folder before it was ended), the notes found are set aside
//! and said, not carried.

use crate::fsx;
use crate::state::{self, RALPH_DIR};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// The notes a run may carry, and the socket through which `ralph note` reaches it while it
/// runs (see the module's doc). Dropping it closes the socket.
pub struct Inbox {
    root: PathBuf,
    /// The note files the run trusts, by name, with their texts as the run read or wrote them:
    /// there when it started, or written by it. The text carried is this one, not the file's
    /// (which the agent could rewrite); a file withdrawn (`ralph note --clear`) is not carried.
    trusted: Arc<Mutex<BTreeMap<String, String>>>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

/// What an iteration about to start gets from the [`Inbox`].
#[derive(Debug, Default)]
pub struct Taken {
    /// The notes' texts, oldest first.
    pub notes: Vec<String>,
    /// Files that appeared in the folder not through `ralph note` (removed, not carried).
    pub refused: Vec<String>,
}

impl Inbox {
    /// Opens the run's inbox: the notes now in the folder are trusted; the socket is bound
    /// (when it cannot be, only those notes are carried, and `ralph note` says its note waits
    /// for the next run). Needs a tokio runtime.
    pub fn open(root: &Path) -> Inbox {
        let trusted: BTreeMap<String, String> =
            pending(root).into_iter().filter_map(|(p, n)| Some((file_name(&p)?, n.text))).collect();
        let trusted = Arc::new(Mutex::new(trusted));
        let listener = match bind(root) {
            Ok(l) => Some(tokio::spawn(serve(l, root.to_path_buf(), trusted.clone()))),
            Err(e) => {
                tracing::debug!("cannot open the notes' socket: {e}");
                None
            }
        };
        Inbox { root: root.to_path_buf(), trusted, listener }
    }

    /// Takes the pending notes for the iteration about to start. Note files the run did not
    /// write and did not find at its start are removed and named in [`Taken::refused`].
    pub fn take(&self) -> Taken {
        let mut taken = Taken::default();
        let Ok(mut trusted) = self.trusted.lock() else { return taken };
        for (path, _) in pending(&self.root) {
            let Some(name) = file_name(&path) else { continue };
            if fsx::remove_any(&path).is_err() {
                continue;
            }
            match trusted.remove(&name) {
                Some(text) => taken.notes.push(text),
                None => taken.refused.push(name),
            }
        }
        taken
    }
}

/// Takes `inbox`'s notes for iteration `number`, each said in a line to `say` (masked), and
/// each refused file too; the notes' texts.
pub fn take_for(
    inbox: &Inbox,
    number: u32,
    secrets: &crate::secrets::Secrets,
    say: &mut dyn FnMut(&str),
) -> Vec<String> {
    let taken = inbox.take();
    for name in &taken.refused {
        say(&format!(
            "a note file appeared in .ralph/{NOTES_DIR}/ while the run went on, not through `ralph note` ({name}): refused and removed (an agent may not speak as you)"
        ));
    }
    for n in &taken.notes {
        say(&format!("note for iteration {number} (`ralph note`): {}", secrets.mask(n)));
    }
    taken.notes
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// The socket's name in the abstract namespace (no file, no link to plant, gone with the
/// process): one per user and repository.
fn socket_name(root: &Path) -> Vec<u8> {
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    format!("ralph-note-{uid}-{h:016x}").into_bytes()
}

fn address(root: &Path) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(socket_name(root))
}

fn bind(root: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let l = std::os::unix::net::UnixListener::bind_addr(&address(root)?)?;
    l.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(l)
}

/// Whether process `pid` descends from process `ancestor` (its parents, read from `/proc`).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        if p == ancestor {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
            return false;
        };
        let Ok(next) = ppid.parse() else { return false };
        p = next;
    }
    false
}

/// Why a peer may not leave a note, if it may not.
fn refuse(peer: Option<(u32, Option<i32>)>) -> Option<&'static str> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    match peer {
        None => Some("who is writing cannot be told"),
        Some((uid, _)) if uid != me => Some("another user's note"),
        Some((_, None)) => Some("who is writing cannot be told"),
        Some((_, Some(pid))) => {
            let pid = u32::try_from(pid).unwrap_or(0);
            descends_from(pid, std::process::id())
                .then_some("the run's own processes (the agent, the checks, a hook) cannot leave notes")
        }
    }
}

async fn serve(
    listener: tokio::net::UnixListener,
    root: PathBuf,
    trusted: Arc<Mutex<BTreeMap<String, String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of descriptors, say: not a reason to spin.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        let peer = stream.peer_cred().ok().map(|c| (c.uid(), c.pid()));
        let mut text = Vec::new();
        let read = {
            let mut limited = (&mut stream).take(MAX_NOTE_BYTES as u64 + 1);
            tokio::time::timeout(std::time::Duration::from_secs(5), limited.read_to_end(&mut text)).await
        };
        let reply = match read {
            Ok(Ok(_)) => match refuse(peer) {
                Some(why) => format!("refused: {why}\n"),
                None => match add(&root, &String::from_utf8_lossy(&text)) {
                    Ok(path) => {
                        if let (Some(name), Ok(mut t)) = (file_name(&path), trusted.lock()) {
                            t.insert(name, String::from_utf8_lossy(&text).trim().to_string());
                        }
                        "ok\n".to_string()
                    }
                    Err(e) => format!("refused: {e}\n"),
                },
            },
            _ => continue,
        };
        let _ = stream.write_all(reply.as_bytes()).await;
    }
}

/// What became of a note `ralph note` offered a running loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// The run took it: the next iteration carries it.
    Taken,
    /// The run refused it, with why.
    Refused(String),
    /// No run listens (none is going on): the note is for the next run, written to the folder.
    NoRun,
}

/// Offers `text` to the run going on in `root`, if one listens.
pub fn offer(root: &Path, text: &str) -> std::io::Result<Offered> {
    let stream = match std::os::unix::net::UnixStream::connect_addr(&address(root)?) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Offered::NoRun),
        Err(e) => return Err(e),
    };
    // The listener must be this user's: a name squatted by another is not handed a note.
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    let cred = peer_uid(&stream)?;
    if cred != me {
        return Ok(Offered::Refused("the socket is another user's".into()));
    }
    let mut stream = stream;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(text.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(match reply.trim().strip_prefix("refused: ") {
        None if reply.trim() == "ok" => Offered::Taken,
        None => Offered::Refused(format!("the run answered {:?}", reply.trim())),
        Some(why) => Offered::Refused(why.to_string()),
    })
}

/// The user id of the process at the other end of `stream`.
fn peer_uid(stream: &std::os::unix::net::UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of the size given.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
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

/// After a run was killed while its agent may have been running: the pending notes, which
/// that agent may have written, are removed and their texts returned, for the person to
/// leave again.
pub fn set_aside(root: &Path) -> Vec<String> {
    pending(root).into_iter().filter(|(path, _)| fsx::remove_any(path).is_ok()).map(|(_, n)| n.text).collect()
}

/// Removes every pending note; how many there were.
pub fn clear(root: &Path) -> usize {
    set_aside(root).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_there_at_the_start_are_taken_once_in_order_and_files_that_appear_later_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(Inbox::open(root).take().notes.is_empty(), "no folder yet: nothing pending");
        add(root, "  first  ").unwrap();
        add(root, "second").unwrap();
        // Not a note: left alone.
        std::fs::write(super::dir(root).join(".ralph-tmp-x"), "half").unwrap();
        let listed: Vec<String> = pending(root).into_iter().map(|(_, n)| n.text).collect();
        assert_eq!(listed, ["first", "second"]);
        let inbox = Inbox::open(root);
        // Written while the run goes on, not through it: an agent's forgery.
        add(root, "forged").unwrap();
        let taken = inbox.take();
        assert_eq!(taken.notes, ["first", "second"]);
        assert_eq!(taken.refused.len(), 1, "{taken:?}");
        assert!(pending(root).is_empty(), "the forgery is removed too");
        assert!(inbox.take().notes.is_empty(), "a note is carried once");
        assert!(super::dir(root).join(".ralph-tmp-x").exists());
        // A trusted note's file rewritten while the run goes on: its own text is carried.
        let path = add(root, "mine").unwrap();
        let inbox = Inbox::open(root);
        std::fs::write(&path, r#"{"text":"rewritten","added_at":"x"}"#).unwrap();
        assert_eq!(inbox.take().notes, ["mine"]);
    }

    #[tokio::test]
    async fn the_runs_own_processes_cannot_hand_a_note_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let inbox = Inbox::open(&root);
        // This process is the run: what it starts (an agent) descends from it.
        let offered =
            tokio::task::spawn_blocking(move || offer(&root, "from the agent")).await.unwrap().unwrap();
        assert!(
            matches!(&offered, Offered::Refused(why) if why.contains("the run's own processes")),
            "{offered:?}"
        );
        assert!(inbox.take().notes.is_empty());
        drop(inbox);
        // The aborted listener is dropped, and its socket closed, when the runtime next runs it.
        tokio::task::yield_now().await;
        // Without a run listening: for the next run.
        assert_eq!(offer(dir.path(), "later").unwrap(), Offered::NoRun);
    }

    #[test]
    fn ancestry_is_read_from_proc() {
        let me = std::process::id();
        assert!(descends_from(me, me));
        assert!(!descends_from(1, me));
        let child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(descends_from(child.id(), me));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
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
        assert_eq!(clear(dir.path()), 0);
        assert_eq!(pending(elsewhere.path()).len(), 1, "the link's target is untouched");
    }
}
