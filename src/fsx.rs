//! Files opened without following symbolic links: everything ralph reads or writes under
//! `.ralph/`, and the inputs it reads from the working tree (specs, prd.json, checklist plans,
//! ralph.toml, the prompt template) as bounded regular files.
//!
//! Why: the agent runs with ralph's permissions and may plant a symbolic link (or a hard link,
//! a FIFO, a device) where ralph expects one of its own files. Followed, it would make ralph
//! truncate any file on the machine (as root, any at all), read `/dev/zero` until memory runs
//! out, or block on a FIFO forever.
//!
//! Invariants: a path under `.ralph/` is walked from the folder holding (the first) `.ralph` one component
//! at a time with `openat(O_NOFOLLOW)`, so no component (`.ralph` included) is a link ralph
//! follows, and no race between a check and the open lets one in. The file itself is opened
//! with `O_NOFOLLOW | O_NONBLOCK` and must be a regular file; one with other hard links is never
//! written through. A link (or anything else that is not ralph's) found in the way is an error
//! naming the path: it is never followed, and never removed to make way here (only
//! `state::replace` removes its own scratch files). A path without a `.ralph` component gets
//! the same checks on its last component only: the folders above it are the user's.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The largest spec, prd.json, checklist plan, ralph.toml or prompt template ralph reads
/// (documented in README.md): far above any real one, and a bound on what a hostile file costs.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// ralph's folder at the repository root. Never committed, never touched by a revert.
pub const RALPH_DIR: &str = ".ralph";

/// ralph's own folder: paths are checked from here down.
const ANCHOR: &str = RALPH_DIR;

/// The error for a symbolic link in ralph's way.
fn link_error(path: &Path) -> io::Error {
    io::Error::other(format!("{} is a symbolic link, which ralph does not follow", path.display()))
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// What is at a name, not following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// An open folder, and its path for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Opens the folder at `path`, checking every component from `.ralph` down (see the module's
/// doc); with `create`, missing folders are made.
pub fn open_dir(path: &Path, create: bool) -> io::Result<Dir> {
    let comps: Vec<_> = path.components().collect();
    // The first `.ralph`: a path may hold another below it (the frame keeps copies of
    // `.ralph/` files in an iteration's folder), and every component below the first is ralph's.
    let Some(at) = comps.iter().position(|c| c.as_os_str() == ANCHOR) else {
        if create {
            std::fs::create_dir_all(path)?;
        }
        return Dir::open_path(path);
    };
    let base: PathBuf = comps[..at].iter().collect();
    let mut dir = Dir::open_path(if base.as_os_str().is_empty() { Path::new(".") } else { &base })?;
    let below: PathBuf = comps[at..].iter().collect();
    // One call where the kernel can check every component itself; anything it refuses (a
    // link, a missing folder, an old kernel) takes the walk, which makes what is missing and
    // names what is in the way.
    if let Some(fd) = dir.beneath(&below) {
        return Ok(Dir { fd, path: dir.path.join(below) });
    }
    for c in &comps[at..] {
        dir = dir.sub(c.as_os_str(), create)?;
    }
    Ok(dir)
}

/// The folder holding `path` (made when `create`), and the file's name in it.
fn parent_of(path: &Path, create: bool) -> io::Result<(Dir, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))
    })?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((open_dir(parent, create)?, name))
}

/// `create_dir_all` that refuses a symbolic link on the way instead of following it.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    open_dir(path, true).map(drop)
}

/// Creates (or truncates) a file for writing, in an existing folder.
pub fn create(path: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(path, false)?;
    dir.open_write(name, true, false)
}

/// Opens a file for appending, created if missing, in an existing folder.
pub fn append(path: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(path, false)?;
    dir.open_write(name, false, true)
}

/// Writes a whole file (not atomically: for logs; see `state::atomic_write` otherwise).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    io::Write::write_all(&mut create(path)?, bytes)
}

/// Opens a regular file for reading.
pub fn open(path: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(path, false)?;
    dir.open_read(name)
}

/// Reads a whole regular file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read`] as text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one of the user's inputs (a spec, ralph.toml, ...): a regular file of at most
/// [`MAX_INPUT_BYTES`], not reached through a symbolic link. The error says which rule it broke
/// (a missing file stays `NotFound`).
pub fn read_input(path: &Path) -> io::Result<String> {
    read_bounded(open(path)?)
}

/// [`read_input`] for AGENTS.md, which users often keep as a link to CLAUDE.md (or the
/// reverse): a link is followed, but what it leads to must be a regular file of at most
/// [`MAX_INPUT_BYTES`] (never `/dev/zero`, never a FIFO).
pub fn read_input_following(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    read_bounded(file)
}

fn read_bounded(file: File) -> io::Result<String> {
    let too_large = || {
        io::Error::other(format!("it is larger than {} KiB, the most ralph reads", MAX_INPUT_BYTES / 1024))
    };
    if file.metadata()?.len() > MAX_INPUT_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows meanwhile.
    file.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What is at `path` (not following a link), `None` when nothing is.
pub fn kind(path: &Path) -> io::Result<Option<Kind>> {
    let (dir, name) = parent_of(path, false)?;
    dir.kind(name)
}

/// Removes whatever is at `path`: a file, a link (never its target), a FIFO, a folder with
/// everything in it. For ralph's own files, where the agent planted something else.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_of(path, false)?;
    dir.remove_any(name)
}

impl Dir {
    fn open_path(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        // SAFETY: a valid NUL-terminated path; the descriptor returned is owned below.
        let fd =
            cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: a descriptor just opened, owned by nothing else.
        Ok(Dir { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: path.to_path_buf() })
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int, mode: libc::c_uint) -> io::Result<OwnedFd> {
        let c = cstr(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid folder descriptor and NUL-terminated name; the result is owned below.
        let fd = cvt(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, mode) })?;
        // SAFETY: a descriptor just opened, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The folder at `rel` below this one, opened in one `openat2` that follows no link and
    /// does not leave this folder (`RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`): what the walk of
    /// [`Dir::sub`] checks one component at a time. `None` when it fails, for whatever reason.
    #[cfg(target_os = "linux")]
    fn beneath(&self, rel: &Path) -> Option<OwnedFd> {
        let c = cstr(rel.as_os_str()).ok()?;
        // SAFETY: zeroed is a valid `open_how` (all fields are integers).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_BENEATH;
        // SAFETY: a valid folder descriptor, NUL-terminated path and `open_how` of the size
        // given; the result is a new descriptor owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: a descriptor just opened, owned by nothing else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[cfg(not(target_os = "linux"))]
    fn beneath(&self, _rel: &Path) -> Option<OwnedFd> {
        None
    }

    /// The names in this folder (`.` and `..` left out), read through the open descriptor,
    /// so a link put in place of the folder since it was opened is not listed.
    pub fn names(&self) -> io::Result<Vec<std::ffi::OsString>> {
        let through = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let entries = match std::fs::read_dir(&through) {
            Ok(e) => e,
            // No /proc: the path, checked when the folder was opened.
            Err(_) => std::fs::read_dir(&self.path)?,
        };
        entries.map(|e| e.map(|e| e.file_name())).collect()
    }

    /// The sub-folder `name`, made when missing and `create`.
    pub fn sub(&self, name: &OsStr, create: bool) -> io::Result<Dir> {
        let path = self.path.join(name);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let opened = match self.openat(name, flags, 0) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let c = cstr(name)?;
                // SAFETY: a valid folder descriptor and NUL-terminated name.
                match cvt(unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o777) }) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                    _ => self.openat(name, flags, 0),
                }
            }
            other => other,
        };
        match opened {
            Ok(fd) => Ok(Dir { fd, path }),
            Err(e) => Err(self.explain(name, Kind::Dir, e)),
        }
    }

    /// What is at `name`, `None` when nothing is.
    pub fn kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        Ok(self.lstat(name)?.map(|st| match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        }))
    }

    /// `fstatat` without following a link.
    fn lstat(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let c = cstr(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor, name and out-pointer; `st` is read only on success.
        let rc = unsafe {
            libc::fstatat(self.fd.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        };
        match cvt(rc) {
            // SAFETY: fstatat succeeded, so it filled `st`.
            Ok(_) => Ok(Some(unsafe { st.assume_init() })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The permission bits of the file at `name`, when it is a regular file.
    pub fn mode_of(&self, name: &OsStr) -> Option<u32> {
        self.lstat(name)
            .ok()
            .flatten()
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .map(|st| st.st_mode & 0o7777)
    }

    /// Why opening `name` as a `want` failed, in words when something else is in the way.
    fn explain(&self, name: &OsStr, want: Kind, e: io::Error) -> io::Error {
        let path = self.path.join(name);
        match self.kind(name) {
            Ok(Some(Kind::Link)) => link_error(&path),
            Ok(Some(k)) if k != want => io::Error::other(format!(
                "{} is not a {}",
                path.display(),
                if want == Kind::Dir { "folder" } else { "regular file" }
            )),
            _ => e,
        }
    }

    /// Opens `name` with `flags` (never blocking on a FIFO) and checks it is a regular file.
    fn open_file(&self, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
        let fd = self
            .openat(name, flags | libc::O_NONBLOCK, 0o666)
            .map_err(|e| self.explain(name, Kind::File, e))?;
        let file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                self.path.join(name).display()
            )));
        }
        // SAFETY: a valid descriptor; only the status flags change.
        cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
        Ok(file)
    }

    /// Opens `name` for reading.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        self.open_file(name, libc::O_RDONLY)
    }

    /// [`read_input`] of the file `name` in this folder: many files of one folder (the specs)
    /// read without opening the folder again for each.
    pub fn read_input(&self, name: &OsStr) -> io::Result<String> {
        read_bounded(self.open_read(name)?)
    }

    /// Opens `name` for writing (created if missing); refuses a file with other hard links, whose
    /// other names may be anywhere on the file system.
    pub fn open_write(&self, name: &OsStr, truncate: bool, append: bool) -> io::Result<File> {
        let flags = libc::O_CREAT | if append { libc::O_WRONLY | libc::O_APPEND } else { libc::O_RDWR };
        let file = self.open_file(name, flags)?;
        let meta = file.metadata()?;
        if meta.nlink() > 1 {
            return Err(io::Error::other(format!(
                "{} has other hard links, which ralph does not write through (remove it)",
                self.path.join(name).display()
            )));
        }
        // Not when it is empty (a file just made): on ext4 a truncation to zero marks the file
        // to be written out when it is closed, a disk write for every new log of an iteration.
        if truncate && meta.len() > 0 {
            file.set_len(0)?;
        }
        Ok(file)
    }

    /// Creates `name`, which must not exist (no link, no file), for writing.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR;
        let fd = self.openat(name, flags, mode).map_err(|e| self.explain(name, Kind::File, e))?;
        Ok(File::from(fd))
    }

    /// Removes the name `name` (a link itself, never its target).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: a valid folder descriptor and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Removes whatever is at `name` (see [`remove_any`]); nothing there is no error.
    pub fn remove_any(&self, name: &OsStr) -> io::Result<()> {
        match self.kind(name)? {
            None => Ok(()),
            // Through the open folder's own descriptor: a link put in place of one of the folders
            // above meanwhile is not followed (std's `remove_dir_all` follows no link below).
            Some(Kind::Dir) => {
                let mut at = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
                at.push(name);
                std::fs::remove_dir_all(at)
            }
            Some(_) => self.remove(name),
        }
    }

    /// The device and inode of the regular file at `name` (not following a link).
    pub fn file_id(&self, name: &OsStr) -> io::Result<Option<(u64, u64)>> {
        Ok(self
            .lstat(name)?
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .map(|st| (st.st_dev, st.st_ino)))
    }

    /// Renames `from` to `to` in this folder; whatever was at `to` (a link included) is replaced,
    /// never followed.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid folder descriptor and NUL-terminated names.
        cvt(unsafe { libc::renameat(fd, a.as_ptr(), fd, b.as_ptr()) }).map(drop)
    }

    /// Swaps the names `a` and `b` in one step.
    #[cfg(target_os = "linux")]
    pub fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
        let (a, b) = (cstr(a)?, cstr(b)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid folder descriptor and NUL-terminated names.
        cvt(unsafe { libc::renameat2(fd, a.as_ptr(), fd, b.as_ptr(), libc::RENAME_EXCHANGE) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A repository-like folder with `.ralph/`, and a file outside it that must never change.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ralph = dir.path().join("repo/.ralph");
        std::fs::create_dir_all(&ralph).unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "precious").unwrap();
        (dir, ralph, outside)
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let (_dir, ralph, outside) = setup();
        let p = ralph.join("agent.log");
        symlink(&outside, &p).unwrap();
        for r in [create(&p).map(drop), append(&p).map(drop), write(&p, b"x"), read(&p).map(drop)] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("agent.log is a symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink(), "the link is left as it is");
    }

    #[test]
    fn remove_any_removes_the_name_never_what_it_leads_to() {
        let (dir, ralph, outside) = setup();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("keep"), "kept").unwrap();
        symlink(&outside, ralph.join("state.json")).unwrap();
        symlink(&elsewhere, ralph.join("lock")).unwrap();
        std::fs::create_dir_all(ralph.join("learnings.json/deep")).unwrap();
        symlink(&elsewhere, ralph.join("learnings.json/deep/way-out")).unwrap();
        std::fs::write(ralph.join("plain"), "x").unwrap();
        for name in ["state.json", "lock", "learnings.json", "plain", "absent"] {
            remove_any(&ralph.join(name)).unwrap();
            assert!(std::fs::symlink_metadata(ralph.join(name)).is_err(), "{name} is still there");
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert_eq!(std::fs::read(elsewhere.join("keep")).unwrap(), b"kept");
    }

    #[test]
    fn a_linked_folder_on_the_way_is_refused_not_followed() {
        let (dir, ralph, outside) = setup();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::create_dir_all(ralph.join("runs")).unwrap();
        symlink(&elsewhere, ralph.join("runs/r")).unwrap();
        let e = create_dir_all(&ralph.join("runs/r/iter-0001")).unwrap_err().to_string();
        assert!(e.contains("runs/r is a symbolic link"), "{e}");
        let e = write(&ralph.join("runs/r/x"), b"x").unwrap_err().to_string();
        assert!(e.contains("runs/r is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A link that stays inside `.ralph`, to a folder that is there: still not followed.
        std::fs::create_dir_all(ralph.join("other/iter-0001")).unwrap();
        symlink("../other", ralph.join("runs/s")).unwrap();
        let e = open_dir(&ralph.join("runs/s/iter-0001"), false).unwrap_err().to_string();
        assert!(e.contains("runs/s is a symbolic link"), "{e}");
        let e = write(&ralph.join("runs/s/iter-0001/x"), b"x").unwrap_err().to_string();
        assert!(e.contains("runs/s is a symbolic link"), "{e}");
        assert!(!ralph.join("other/iter-0001/x").exists());
        // `.ralph` itself as a link.
        let repo2 = dir.path().join("repo2");
        std::fs::create_dir(&repo2).unwrap();
        symlink(&elsewhere, repo2.join(".ralph")).unwrap();
        let e = create_dir_all(&repo2.join(".ralph/runs")).unwrap_err().to_string();
        assert!(e.contains("repo2/.ralph is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        let _ = outside;
    }

    #[test]
    fn a_hard_link_is_not_written_through() {
        let (_dir, ralph, outside) = setup();
        let p = ralph.join("checks.log");
        std::fs::hard_link(&outside, &p).unwrap();
        let e = create(&p).unwrap_err().to_string();
        assert!(e.contains("has other hard links"), "{e}");
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    }

    #[test]
    fn folders_are_made_and_files_written_and_read() {
        let (_dir, ralph, _) = setup();
        let p = ralph.join("runs/r/iter-0001/prompt.md");
        create_dir_all(p.parent().unwrap()).unwrap();
        write(&p, b"hello").unwrap();
        io::Write::write_all(&mut append(&p).unwrap(), b" world").unwrap();
        assert_eq!(read_to_string(&p).unwrap(), "hello world");
        write(&p, b"new").unwrap();
        assert_eq!(read(&p).unwrap(), b"new");
        assert_eq!(read(&ralph.join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn inputs_are_bounded_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("a.md");
        std::fs::write(&spec, "# A\n").unwrap();
        assert_eq!(read_input(&spec).unwrap(), "# A\n");
        let zero = dir.path().join("zero.md");
        symlink("/dev/zero", &zero).unwrap();
        let e = read_input(&zero).unwrap_err().to_string();
        assert!(e.contains("zero.md is a symbolic link"), "{e}");
        let fifo = dir.path().join("fifo.md");
        let c = cstr(fifo.as_os_str()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_input(&fifo).unwrap_err().to_string();
        assert!(e.contains("fifo.md is not a regular file"), "{e}");
        // AGENTS.md may be a link (to CLAUDE.md), but not to a device or a FIFO.
        let agents = dir.path().join("AGENTS.md");
        symlink(&spec, &agents).unwrap();
        assert_eq!(read_input_following(&agents).unwrap(), "# A\n");
        let e = read_input_following(&zero).unwrap_err().to_string();
        assert!(e.contains("zero.md is not a regular file"), "{e}");
        let e = read_input_following(&fifo).unwrap_err().to_string();
        assert!(e.contains("fifo.md is not a regular file"), "{e}");
        let big = dir.path().join("big.md");
        std::fs::write(&big, vec![b'a'; MAX_INPUT_BYTES as usize + 1]).unwrap();
        let e = read_input(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        assert_eq!(read_input(&dir.path().join("none.md")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
