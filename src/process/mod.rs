//! Child processes: the agent and the checks. One API over two backends, pipes
//! ([`pipe`]) and a pseudo-terminal ([`pty`]), and one supervisor that enforces the wall-clock
//! and idle timeouts.
//!
//! Invariants: every child leads its own process group and gets stdin from `/dev/null` unless
//! ralph writes to it; a child is never left running when its supervisor returns (or is
//! dropped); stopping is SIGTERM to the group, a grace period while output is still drained,
//! then SIGKILL to the group; after the leader exits, the rest of its group is killed and the
//! pipes are drained with a bound, so a grandchild holding stdout open cannot hang ralph.

pub mod group;
mod pipe;
mod pty;
pub mod reaper;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long to keep reading output after the process group is gone. Pipes held by an escaped
/// grandchild are abandoned after this (codex uses 2 s for the same purpose).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a [`SpawnRequest::cleanup`] command may take.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Size of one read from a child's output.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the readers and the supervisor; bounds ralph's memory under a
/// flood of output (the child blocks on a full pipe instead).
const CHANNEL_CHUNKS: usize = 16;

/// Marks every descriptor above stderr close-on-exec, so that no child of ralph (the agent, the
/// checks, git and its hooks) gets one. Everything ralph opens is close-on-exec already; this is
/// for what ralph inherited: a pipe a shell or a harness left open would otherwise reach an
/// agent that may be hostile, and an orphan of it holding the pipe keeps whoever reads the
/// other end (ralph's caller) waiting. ralph keeps them open itself.
pub fn seal_inherited_descriptors() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return;
    }
    seal_one_by_one();
}

/// [`seal_inherited_descriptors`] before Linux 5.11 (no `close_range`): one at a time. The
/// listing's own descriptor is closed once it has been read; setting the flag on it then fails
/// harmlessly.
fn seal_one_by_one() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> =
        entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; a closed one fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start `{program}`")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{program}` under a pseudo-terminal: {message}")]
    Pty { program: String, message: String },
}

/// Which output stream a chunk came from. A PTY merges both into `Stdout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of a child's output, as it arrived.
#[derive(Debug)]
pub struct Chunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Added to (or replacing in) the inherited environment.
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Start from an empty environment: the child gets `env` and nothing it would inherit
    /// (the sandbox's and `env_allowlist`'s environment, built by [`crate::sandbox`]).
    pub env_clear: bool,
    /// Start the child in a session of its own (still leading its process group), away from
    /// ralph's controlling terminal: a sandboxed agent must not reach the user's terminal
    /// (`TIOCSTI` could type into it).
    pub new_session: bool,
    /// The graceful stop's SIGTERM goes to the group's members but not its leader: bubblewrap
    /// leads a sandboxed agent's group, dies of SIGTERM, and with `--die-with-parent` takes the
    /// agent with it at once, where the agent is owed its grace period. bwrap exits when the
    /// agent does; SIGKILL after the grace still goes to the whole group.
    pub spare_leader: bool,
    /// A command run once the child's process group is gone, for what the group's kill cannot
    /// reach: the container an engine runs for a sandboxed agent (`docker rm -f NAME`). Its
    /// output is dropped; it is given [`CLEANUP_TIMEOUT`].
    pub cleanup: Option<Vec<String>>,
    /// Written to stdin, which is then closed; `None` means stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Run under a pseudo-terminal.
    pub pty: bool,
}

/// Whether `p` is a file this user may run (links followed, as `exec` follows them).
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `program` in the folders of `path` (a `PATH` value): the first executable file.
pub fn find_on(path: &str, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(program)).find(|p| is_executable(p))
}

impl SpawnRequest {
    /// A user's shell command (`sh -c`), as the checks and the hooks run it: in `cwd`, with
    /// `env` added to the inherited environment, stdin `/dev/null`, no sandbox.
    pub fn shell(command: &str, cwd: &Path, env: Vec<(String, String)>) -> SpawnRequest {
        SpawnRequest::program("sh", &["-c", command], cwd, env)
    }

    /// `program` with `args`, as [`SpawnRequest::shell`] runs `sh`.
    pub fn program(program: &str, args: &[&str], cwd: &Path, env: Vec<(String, String)>) -> SpawnRequest {
        SpawnRequest {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: cwd.to_path_buf(),
            env,
            env_remove: vec![],
            env_clear: false,
            new_session: false,
            spare_leader: false,
            cleanup: None,
            stdin: None,
            pty: false,
        }
    }
}

/// A started child: its group id, its output, and its exit.
pub struct Spawned {
    /// The child's pid, which is also its process group id.
    pub pgid: u32,
    output: mpsc::Receiver<Chunk>,
    exit: oneshot::Receiver<Option<i32>>,
    guard: group::GroupGuard,
    /// [`SpawnRequest::cleanup`], run by [`supervise`] at the end.
    cleanup: Option<Vec<String>>,
    /// [`SpawnRequest::spare_leader`].
    spare_leader: bool,
    /// Resources the backend keeps alive until the child is done (the PTY master).
    _keep: Option<Box<dyn Send>>,
}

/// Starts a child in its own process group.
pub fn spawn(req: &SpawnRequest) -> Result<Spawned, SpawnError> {
    let mut child = if req.pty { pty::spawn(req) } else { pipe::spawn(req) }?;
    child.cleanup = req.cleanup.clone();
    child.spare_leader = req.spare_leader;
    // Arguments may carry the prompt (and so whatever it quotes): only their count is logged.
    tracing::debug!(program = %req.program, args = req.args.len(), pgid = child.pgid, pty = req.pty, "spawned");
    Ok(child)
}

/// Limits the supervisor enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall clock from start.
    pub timeout: Duration,
    /// No output for this long.
    pub idle_timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// Why the child stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself.
    Exited,
    /// The wall-clock limit was reached.
    Timeout,
    /// No output for the idle limit.
    IdleTimeout,
    /// ralph was asked to stop (Ctrl-C, SIGTERM, SIGHUP).
    Cancelled,
    /// The output callback asked for a graceful end (the agent's context grew past its budget).
    Yielded,
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub ending: Ending,
    /// The exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Output was still open after the group was killed and the drain bound passed.
    pub output_leaked: bool,
}

/// Supervises `child` until it ends, feeding each output chunk to `on_output` as it arrives;
/// `on_output` returning `Break` ends the child gracefully ([`Ending::Yielded`]). `cancel`
/// stops it gracefully; `force` (a second Ctrl-C) skips the grace period.
pub async fn supervise(
    mut child: Spawned,
    limits: Limits,
    cancel: &CancellationToken,
    force: &CancellationToken,
    mut on_output: impl FnMut(&Chunk) -> ControlFlow<()>,
) -> Finished {
    let start = Instant::now();
    let deadline = start + limits.timeout;
    let idle = limits.idle_timeout;
    let mut idle_deadline = idle.map(|d| start + d);
    let mut output_open = true;
    let far = start + Duration::from_secs(100 * 365 * 24 * 3600);

    let (ending, exit_code) = loop {
        tokio::select! {
            biased;
            code = &mut child.exit => break (Ending::Exited, code.ok().flatten()),
            chunk = child.output.recv(), if output_open => match chunk {
                Some(c) => {
                    if on_output(&c).is_break() {
                        break (Ending::Yielded, None);
                    }
                    if let Some(d) = idle { idle_deadline = Some(Instant::now() + d); }
                }
                None => output_open = false,
            },
            _ = cancel.cancelled() => break (Ending::Cancelled, None),
            _ = tokio::time::sleep_until(deadline) => break (Ending::Timeout, None),
            _ = tokio::time::sleep_until(idle_deadline.unwrap_or(far)) => break (Ending::IdleTimeout, None),
        }
    };

    let exit_code = if ending == Ending::Exited {
        exit_code
    } else {
        stop(&mut child, limits.grace, force, &mut on_output, &mut output_open).await
    };
    tracing::debug!(pgid = child.pgid, ?ending, ?exit_code, "child ended");
    // Whatever the leader did, nothing of its group outlives the iteration.
    group::kill(child.pgid);
    let output_leaked = drain(&mut child, &mut on_output, output_open).await;
    child.guard.disarm();
    if let Some(cmd) = child.cleanup.take() {
        cleanup(&cmd).await;
    }
    Finished { ending, exit_code, output_leaked }
}

/// Runs a [`SpawnRequest::cleanup`] command to its end (or [`CLEANUP_TIMEOUT`]); a failure is
/// only logged: the container it removes may be gone already.
async fn cleanup(cmd: &[String]) {
    let Some((program, args)) = cmd.split_first() else { return };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(mut c) => {
            if tokio::time::timeout(CLEANUP_TIMEOUT, c.wait()).await.is_err() {
                tracing::debug!(%program, "cleanup timed out");
                let _ = c.kill().await;
            }
        }
        Err(e) => tracing::debug!(%program, error = %e, "cleanup could not start"),
    }
}

/// SIGTERM, the grace period (output still read), SIGKILL; returns the exit code if any.
async fn stop(
    child: &mut Spawned,
    grace: Duration,
    force: &CancellationToken,
    on_output: &mut impl FnMut(&Chunk) -> ControlFlow<()>,
    output_open: &mut bool,
) -> Option<i32> {
    if child.spare_leader {
        group::terminate_members(child.pgid);
    } else {
        group::terminate(child.pgid);
    }
    let grace_end = Instant::now() + grace;
    loop {
        tokio::select! {
            biased;
            code = &mut child.exit => return code.ok().flatten(),
            chunk = child.output.recv(), if *output_open => match chunk {
                Some(c) => {
                    let _ = on_output(&c);
                }
                None => *output_open = false,
            },
            _ = force.cancelled() => break,
            _ = tokio::time::sleep_until(grace_end) => break,
        }
    }
    group::kill(child.pgid);
    (&mut child.exit).await.ok().flatten()
}

/// Reads what is left in the pipes, for at most [`DRAIN_TIMEOUT`]. Returns whether the output
/// was still open when the bound passed.
async fn drain(
    child: &mut Spawned,
    on_output: &mut impl FnMut(&Chunk) -> ControlFlow<()>,
    open: bool,
) -> bool {
    if !open {
        return false;
    }
    let end = Instant::now() + DRAIN_TIMEOUT;
    loop {
        tokio::select! {
            chunk = child.output.recv() => match chunk {
                Some(c) => {
                    let _ = on_output(&c);
                }
                None => return false,
            },
            _ = tokio::time::sleep_until(end) => return true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn descriptors_are_sealed_one_by_one_where_close_range_is_missing() {
        let flags = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: a fresh descriptor, without close-on-exec, closed below.
        let fd = unsafe { libc::dup(2) };
        assert!(fd > 2);
        assert_eq!(flags(fd) & libc::FD_CLOEXEC, 0);
        seal_one_by_one();
        assert_eq!(flags(fd) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        unsafe { libc::close(fd) };
    }

    /// `sh -c script` in the temporary folder: the tests' child (the session's tests too).
    pub(crate) fn sh(script: &str) -> SpawnRequest {
        SpawnRequest::shell(script, &std::env::temp_dir(), vec![])
    }

    fn limits(timeout_ms: u64, idle_ms: Option<u64>) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            idle_timeout: idle_ms.map(Duration::from_millis),
            grace: Duration::from_millis(300),
        }
    }

    async fn run(req: SpawnRequest, l: Limits) -> (Finished, String) {
        let child = spawn(&req).unwrap();
        let mut out = Vec::new();
        let t = CancellationToken::new();
        let f = supervise(child, l, &t, &t, |c| {
            out.extend_from_slice(&c.data);
            ControlFlow::Continue(())
        })
        .await;
        (f, String::from_utf8_lossy(&out).into_owned())
    }

    /// Whether `pid` runs; a zombie (killed, not yet reaped by init) counts as gone.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn exit_code_and_output_are_reported() {
        let (f, out) = run(sh("echo hi; echo err >&2; exit 3"), limits(10_000, None)).await;
        assert_eq!(f.ending, Ending::Exited);
        assert_eq!(f.exit_code, Some(3));
        assert!(out.contains("hi") && out.contains("err"), "{out}");
    }

    #[tokio::test]
    async fn stdin_is_dev_null_unless_given() {
        let (_, out) = run(sh("cat; echo end"), limits(10_000, None)).await;
        assert_eq!(out.trim(), "end");
        let mut req = sh("cat");
        req.stdin = Some(b"the prompt".to_vec());
        let (_, out) = run(req, limits(10_000, None)).await;
        assert_eq!(out, "the prompt");
    }

    #[tokio::test]
    async fn idle_timeout_kills_the_group_including_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("gc.pid");
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 1000' & echo started; sleep 1000",
            pidfile.display()
        );
        let (f, out) = run(sh(&script), limits(60_000, Some(500))).await;
        assert_eq!(f.ending, Ending::IdleTimeout);
        assert!(out.contains("started"));
        let gc: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The grandchild ignored SIGTERM; SIGKILL to the group must still have reached it.
        let mut gone = false;
        for _ in 0..50 {
            if !alive(gc) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {gc} survived");
    }

    #[tokio::test]
    async fn wall_clock_timeout_applies_despite_output() {
        let (f, _) = run(sh("while true; do echo tick; sleep 0.05; done"), limits(400, Some(5_000))).await;
        assert_eq!(f.ending, Ending::Timeout);
    }

    #[tokio::test]
    async fn a_grandchild_holding_stdout_does_not_hang_the_supervisor() {
        let started = std::time::Instant::now();
        let (f, out) = run(sh("setsid sleep 30 & sleep 0.3; echo done"), limits(60_000, None)).await;
        assert_eq!(f.ending, Ending::Exited);
        assert_eq!(f.exit_code, Some(0));
        assert!(out.contains("done"));
        assert!(f.output_leaked, "{f:?} after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn cancel_stops_the_child() {
        let child = spawn(&sh("sleep 1000")).unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let force = CancellationToken::new();
        let f = supervise(child, limits(60_000, None), &cancel, &force, |_| ControlFlow::Continue(())).await;
        assert_eq!(f.ending, Ending::Cancelled);
        assert_eq!(f.exit_code, None);
    }

    #[tokio::test]
    async fn pty_mode_gives_the_child_a_terminal() {
        let mut req = sh("test -t 1 && echo tty || echo notty");
        req.pty = true;
        let (f, out) = run(req, limits(10_000, None)).await;
        assert_eq!(f.exit_code, Some(0));
        assert!(out.contains("tty") && !out.contains("notty"), "{out}");
    }

    #[tokio::test]
    async fn the_output_callback_can_end_the_child() {
        let child = spawn(&sh("echo one; sleep 1000")).unwrap();
        let t = CancellationToken::new();
        let f = supervise(child, limits(60_000, None), &t, &t, |c| {
            if c.data.starts_with(b"one") { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .await;
        assert_eq!(f.ending, Ending::Yielded);
    }

    #[tokio::test]
    async fn pwd_names_the_childs_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = sh("echo $PWD");
        req.cwd = dir.path().to_path_buf();
        let (_, out) = run(req, limits(10_000, None)).await;
        assert_eq!(out.trim(), dir.path().to_string_lossy());
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let mut req = sh("");
        req.program = "/nonexistent/agent".into();
        assert!(matches!(spawn(&req), Err(SpawnError::Io { .. })));
    }
}
