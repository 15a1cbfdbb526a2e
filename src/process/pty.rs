//! The PTY backend (portable-pty), for agents that insist on a terminal. stdout and stderr
//! arrive merged. The child is a session leader, so its pid is its process group id, and the
//! group is killed with `killpg`: portable-pty's own killer signals only the child (see codex
//! PR #12688).

use super::{CHANNEL_CHUNKS, CHUNK_BYTES, Chunk, SpawnError, SpawnRequest, Spawned, Stream, group};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::Read;
use tokio::sync::{mpsc, oneshot};

pub(super) fn spawn(req: &SpawnRequest) -> Result<Spawned, SpawnError> {
    let err = |message: String| SpawnError::Pty { program: req.program.clone(), message };
    let pair = native_pty_system()
        .openpty(PtySize { rows: 50, cols: 200, pixel_width: 0, pixel_height: 0 })
        .map_err(|e| err(e.to_string()))?;
    let mut cmd = CommandBuilder::new(&req.program);
    cmd.args(&req.args);
    cmd.cwd(&req.cwd);
    if req.env_clear {
        cmd.env_clear();
    }
    for key in &req.env_remove {
        cmd.env_remove(key);
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    // See the pipe backend: $PWD must name the child's directory.
    cmd.env("PWD", &req.cwd);
    // portable-pty reports a missing program only after forking; check first for a clear error.
    if which(&req.program, req).is_none() {
        return Err(SpawnError::Io {
            program: req.program.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        });
    }
    let mut child = pair.slave.spawn_command(cmd).map_err(|e| err(e.to_string()))?;
    drop(pair.slave);
    let pgid = child.process_id().unwrap_or(0);
    let guard = group::GroupGuard::new(pgid);
    let mut reader = pair.master.try_clone_reader().map_err(|e| err(e.to_string()))?;
    if let Some(bytes) = req.stdin.clone() {
        let mut writer = pair.master.take_writer().map_err(|e| err(e.to_string()))?;
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = writer.write_all(&bytes);
            // End of input for a terminal in canonical mode.
            let _ = writer.write_all(b"\n\x04");
        });
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match reader.read(&mut buf) {
                // EIO once the last slave fd closes: that is the end of output on Linux.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(Chunk { stream: Stream::Stdout, data: buf[..n].to_vec() }).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (exit_tx, exit_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let code = child
            .wait()
            .ok()
            .filter(|s| s.signal().is_none())
            .and_then(|s| i32::try_from(s.exit_code()).ok());
        let _ = exit_tx.send(code);
    });
    Ok(Spawned {
        pgid,
        output: rx,
        exit: exit_rx,
        guard,
        cleanup: None,
        spare_leader: false,
        _keep: Some(Box::new(pair.master)),
    })
}

/// Resolves a program the way `execvp` would, honouring an overridden PATH.
fn which(program: &str, req: &SpawnRequest) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(program);
    if program.contains('/') {
        let p = if path.is_absolute() { path.to_path_buf() } else { req.cwd.join(path) };
        return p.is_file().then_some(p);
    }
    let search = req
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())?;
    std::env::split_paths(&search).map(|d| d.join(program)).find(|p| p.is_file())
}
