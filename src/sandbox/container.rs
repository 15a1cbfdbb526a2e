//! A container engine (`kind = "container"`): the [`Layout`] as `podman run` or `docker run`
//! arguments, for users who already run their agents in containers. The image supplies the
//! system and the agent's program (it must hold both); the worktree, git's folders, the
//! agent's configuration and the user's paths are mounted at their own paths; the image's
//! root file system is read-only; `--init` reaps and ends what the agent leaves running.
//!
//! A container outlives a killed engine client (docker's daemon, podman's conmon keep it
//! running), so each gets a name of its own and `rm -f NAME` as the request's cleanup, run
//! once the client's process group is gone.
//!
//! The variables reach the container by name only (`--env NAME`): the engine reads their
//! values from its own environment (the allowlisted one), so no value shows in a process
//! listing. `PATH` is the image's.

use super::{Engine, Host, Layout, SandboxConfig, SandboxError};
use crate::process::SpawnRequest;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The engine and its program: `[sandbox] engine`, else podman if installed, else docker.
pub fn engine(host: &Host, cfg: &SandboxConfig) -> Result<(Engine, std::path::PathBuf), SandboxError> {
    let candidates: &[Engine] = match cfg.engine {
        Some(e) => &[e][..],
        None => &[Engine::Podman, Engine::Docker],
    };
    candidates.iter().find_map(|e| host.find(e.program()).map(|p| (*e, p))).ok_or_else(|| {
        SandboxError::Missing { program: cfg.engine.map_or("podman or docker", |e| e.program()).into() }
    })
}

fn mount(kind: &str, src: Option<&Path>, dest: &Path, readonly: bool) -> Result<String, SandboxError> {
    for p in src.into_iter().chain([dest]) {
        if p.to_string_lossy().contains(',') {
            return Err(SandboxError::Unbindable { path: p.to_path_buf() });
        }
    }
    let mut m = format!("type={kind}");
    if let Some(src) = src {
        m.push_str(&format!(",source={}", src.display()));
    }
    m.push_str(&format!(",destination={}", dest.display()));
    match (kind, readonly) {
        ("bind", true) => m.push_str(",readonly"),
        // Writable by the user the agent runs as (not root, under docker's --user).
        ("tmpfs", false) => m.push_str(",tmpfs-mode=1777"),
        // Root's and empty: the agent cannot write it.
        _ => {}
    }
    Ok(m)
}

/// A name no other container of this machine has.
fn name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("ralph-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The arguments of `ENGINE run` up to the image, for a container named `name`.
pub fn args(
    engine: Engine,
    layout: &Layout,
    req: &SpawnRequest,
    name: &str,
) -> Result<Vec<String>, SandboxError> {
    let mut a: Vec<String> = ["run", "--rm", "--init", "--name", name, "--read-only", "--cap-drop", "ALL"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    a.extend(["--network".into(), if layout.network { "host" } else { "none" }.into()]);
    if req.stdin.is_some() {
        a.push("--interactive".into());
    }
    if req.pty {
        a.push("--tty".into());
    }
    match engine {
        // Rootless podman: the user's own id inside, so the worktree's files stay theirs.
        // Podman run by root refuses keep-id; root inside is then the user already.
        // SAFETY: geteuid cannot fail and touches no memory.
        Engine::Podman if unsafe { libc::geteuid() } != 0 => a.push("--userns=keep-id".into()),
        Engine::Podman => {}
        Engine::Docker => {
            // SAFETY: geteuid and getegid cannot fail and touch no memory.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            a.extend(["--user".into(), format!("{uid}:{gid}")]);
        }
    }
    let mut mounts = vec![mount("tmpfs", None, Path::new("/tmp"), false)?];
    if let Some(home) = &layout.home {
        mounts.push(mount("tmpfs", None, home, false)?);
    }
    for b in &layout.binds {
        mounts.push(mount("bind", Some(&b.src), &b.dest, !b.write)?);
    }
    mounts.push(mount("bind", Some(&layout.root_src), &layout.root, false)?);
    if let Some(g) = &layout.git_entry {
        mounts.push(mount("bind", Some(g), g, true)?);
    }
    for h in &layout.hidden {
        mounts.push(mount("tmpfs", None, h, true)?);
    }
    for p in &layout.shown {
        mounts.push(mount("bind", Some(p), p, true)?);
    }
    for m in mounts {
        a.extend(["--mount".into(), m]);
    }
    a.extend(["--workdir".into(), layout.root.to_string_lossy().into_owned()]);
    for (k, _) in &req.env {
        if k != "PATH" {
            a.extend(["--env".into(), k.clone()]);
        }
    }
    Ok(a)
}

/// `req` run in a container of `cfg.image`.
pub fn wrap(
    host: &Host,
    cfg: &SandboxConfig,
    mut req: SpawnRequest,
    layout: &Layout,
) -> Result<SpawnRequest, SandboxError> {
    let (engine, program) = engine(host, cfg)?;
    let name = name();
    req.env.retain(|(k, _)| k != "TMPDIR");
    req.env.push(("TMPDIR".into(), "/tmp".into()));
    let mut args = args(engine, layout, &req, &name)?;
    args.push(cfg.image.clone().unwrap_or_default());
    args.push(std::mem::take(&mut req.program));
    args.append(&mut req.args);
    let program = program.to_string_lossy().into_owned();
    req.cleanup = Some(vec![program.clone(), "rm".into(), "-f".into(), name]);
    req.program = program;
    req.args = args;
    req.new_session = true;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::super::Bind;
    use super::*;

    #[test]
    fn the_container_gets_the_same_policy() {
        let layout = Layout {
            root: "/w".into(),
            root_src: "/w".into(),
            home: Some("/home/u".into()),
            binds: vec![Bind { src: "/home/u/.codex".into(), dest: "/home/u/.codex".into(), write: true }],
            git_entry: Some("/w/.git".into()),
            hidden: vec!["/w/.ralph".into()],
            shown: vec!["/w/.ralph/p.md".into()],
            network: false,
        };
        let mut req = crate::process::tests::sh("x");
        req.stdin = Some(b"prompt".to_vec());
        req.env = vec![("PATH".into(), "/bin".into()), ("OPENAI_API_KEY".into(), "sk-secret-value".into())];
        let a = args(Engine::Docker, &layout, &req, "n").unwrap().join(" ");
        for want in [
            "--network none",
            "--interactive",
            "--read-only",
            "--mount type=bind,source=/w,destination=/w ",
            "--mount type=bind,source=/w/.git,destination=/w/.git,readonly",
            "--mount type=tmpfs,destination=/w/.ralph ",
            "--mount type=bind,source=/w/.ralph/p.md,destination=/w/.ralph/p.md,readonly",
            "--mount type=bind,source=/home/u/.codex,destination=/home/u/.codex ",
            "--env OPENAI_API_KEY",
            "--workdir /w",
        ] {
            assert!(a.contains(want), "{want} not in {a}");
        }
        assert!(!a.contains("sk-secret-value") && !a.contains("--env PATH"), "{a}");
        let bad = Layout { root: "/a,b".into(), ..layout };
        assert!(matches!(args(Engine::Podman, &bad, &req, "n"), Err(SandboxError::Unbindable { .. })));
    }
}
