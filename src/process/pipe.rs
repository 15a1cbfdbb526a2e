//! The pipe backend: stdout and stderr as separate pipes, read as they arrive.

use super::{CHANNEL_CHUNKS, CHUNK_BYTES, Chunk, SpawnError, SpawnRequest, Spawned, Stream, group};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

pub(super) fn spawn(req: &SpawnRequest) -> Result<Spawned, SpawnError> {
    let mut cmd = tokio::process::Command::new(&req.program);
    cmd.args(&req.args).current_dir(&req.cwd);
    if req.new_session {
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent. A session
        // leader leads its process group too (pgid = pid), so the group is signalled as usual.
        unsafe {
            cmd.pre_exec(|| if libc::setsid() == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
        }
    } else {
        cmd.process_group(0);
    }
    cmd.kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Agents read a non-terminal stdin to EOF or wait on it; /dev/null ends that at once.
        .stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    if req.env_clear {
        cmd.env_clear();
    }
    for key in &req.env_remove {
        cmd.env_remove(key);
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    // Many CLIs (node, bun) trust $PWD over getcwd(): an inherited PWD would send them to
    // ralph's own directory instead of the repository.
    cmd.env("PWD", &req.cwd);
    let mut child = cmd.spawn().map_err(|source| SpawnError::Io { program: req.program.clone(), source })?;
    let pgid = child.id().unwrap_or(0);
    let guard = group::GroupGuard::new(pgid);

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_into(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_into(err, Stream::Stderr, tx));
    }
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), req.stdin.clone()) {
        tokio::spawn(async move {
            // A child that exits without reading its stdin breaks the pipe: not our error.
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        });
    }
    let (exit_tx, exit_rx) = oneshot::channel();
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| s.code());
        let _ = exit_tx.send(code);
    });
    Ok(Spawned { pgid, output: rx, exit: exit_rx, guard, cleanup: None, spare_leader: false, _keep: None })
}

async fn read_into(mut reader: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<Chunk>) {
    // Read into spare capacity: a zeroed 64 KiB buffer per stream per child cost more than
    // a quiet child's whole output.
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    loop {
        buf.clear();
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(Chunk { stream, data: buf.clone() }).await.is_err() {
                    return;
                }
            }
        }
    }
}
