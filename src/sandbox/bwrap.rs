//! Bubblewrap (`kind = "bwrap"`): the [`Layout`] as `bwrap` arguments. The mounts are applied
//! parents first (ordered by the depth of where they go, in a stable order), so a deeper one
//! always wins: the worktree read-write inside a read-only git folder (a parallel slot lives
//! under `.git/ralph-slots/`), `.git` read-only and `.ralph` hidden inside the worktree, the
//! prompt shown inside the hidden `.ralph`, a tool folder shown inside the empty home.
//!
//! bwrap runs with `--die-with-parent` (ralph killed, the sandbox goes) and its own PID
//! namespace: when the agent exits, bwrap (its PID 1) exits and the kernel kills whatever is
//! left in the namespace, daemons that left the process group included. Every capability is
//! dropped, which matters when ralph runs as root: root in the sandbox cannot undo its mounts.

use super::{Host, Layout, SandboxError};
use crate::process::SpawnRequest;
use std::path::{Path, PathBuf};

/// `dest`'s depth: how many components it has.
fn depth(dest: &Path) -> usize {
    dest.components().count()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The arguments before the command: namespaces, then the mounts.
pub fn args(layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = [
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if !layout.network {
        out.push("--unshare-net".into());
    }
    let mut mounts: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut mount = |dest: &Path, args: Vec<String>| mounts.push((dest.to_path_buf(), args));
    mount(Path::new("/"), vec!["--ro-bind".into(), "/".into(), "/".into()]);
    mount(Path::new("/dev"), vec!["--dev".into(), "/dev".into()]);
    mount(Path::new("/proc"), vec!["--proc".into(), "/proc".into()]);
    let private = super::PRIVATE.iter().chain(&["/var/run"]).map(Path::new);
    for dir in private {
        // /var/run is usually a link to /run: a link is left alone (its target is private).
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            mount(dir, vec!["--tmpfs".into(), s(dir)]);
        }
    }
    // Name resolution may live in /run (systemd-resolved's stub-resolv.conf): its folder alone
    // comes back, read-only.
    if let Ok(resolv) = Path::new("/etc/resolv.conf").canonicalize()
        && let Some(dir) = resolv.parent()
        && (dir.starts_with("/run") || dir.starts_with("/var/run"))
    {
        mount(dir, vec!["--ro-bind".into(), s(dir), s(dir)]);
    }
    if let Some(home) = &layout.home {
        mount(home, vec!["--tmpfs".into(), s(home)]);
    }
    for b in &layout.binds {
        let flag = if b.write { "--bind" } else { "--ro-bind" };
        mount(&b.dest, vec![flag.into(), s(&b.src), s(&b.dest)]);
    }
    mount(&layout.root, vec!["--bind".into(), s(&layout.root_src), s(&layout.root)]);
    if let Some(g) = &layout.git_entry {
        mount(g, vec!["--ro-bind".into(), s(g), s(g)]);
    }
    for h in &layout.hidden {
        mount(h, vec!["--tmpfs".into(), s(h)]);
    }
    for p in &layout.shown {
        mount(p, vec!["--ro-bind".into(), s(p), s(p)]);
    }
    mounts.sort_by_key(|(dest, _)| depth(dest));
    out.extend(mounts.into_iter().flat_map(|(_, a)| a));
    // Once the prompt is in place, ralph's folders turn read-only.
    for h in &layout.hidden {
        out.extend(["--remount-ro".to_string(), s(h)]);
    }
    out.extend(["--chdir".to_string(), s(&layout.root)]);
    out
}

/// `req` run by bwrap in `layout`.
/// Whether bubblewrap at `program` can make a sandbox on this machine: installed is not
/// enough where unprivileged user namespaces are off (Ubuntu 24.04's AppArmor, a container).
pub fn runs_here(program: &Path) -> bool {
    let mut cmd = std::process::Command::new(program);
    cmd.args([
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--unshare-pid",
        "--die-with-parent",
        "true",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let Ok(mut child) = cmd.spawn() else { return false };
    // It answers at once or not at all: a few seconds is plenty.
    for _ in 0..100 {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

pub fn wrap(host: &Host, mut req: SpawnRequest, layout: &Layout) -> Result<SpawnRequest, SandboxError> {
    let bwrap = host.find("bwrap").ok_or(SandboxError::Missing { program: "bwrap".into() })?;
    let mut args = args(layout);
    args.push("--".into());
    args.push(std::mem::take(&mut req.program));
    args.append(&mut req.args);
    req.program = bwrap.to_string_lossy().into_owned();
    req.args = args;
    // The real temporary folder is hidden: the private /tmp is the agent's.
    req.env.retain(|(k, _)| k != "TMPDIR");
    req.env.push(("TMPDIR".into(), "/tmp".into()));
    req.new_session = true;
    req.spare_leader = true;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::super::Bind;
    use super::*;

    fn layout() -> Layout {
        Layout {
            root: "/home/u/.git/ralph-slots/1".into(),
            root_src: "/home/u/.git/ralph-slots/1".into(),
            home: Some("/home/u".into()),
            binds: vec![
                Bind { src: "/home/u/dotfiles/claude".into(), dest: "/home/u/.claude".into(), write: true },
                Bind { src: "/home/u/.git".into(), dest: "/home/u/.git".into(), write: false },
            ],
            git_entry: Some("/home/u/.git/ralph-slots/1/.git".into()),
            hidden: vec!["/home/u/.git/ralph-slots/1/.ralph".into(), "/home/u/.ralph".into()],
            shown: vec!["/home/u/.ralph/runs/r/iter-0001/prompt.md".into()],
            network: false,
        }
    }

    /// The position of `--flag a b` in `args`.
    fn at(args: &[String], flag: &str, dest: &str) -> usize {
        args.windows(3)
            .position(|w| w[0] == flag && w[2] == dest)
            .unwrap_or_else(|| panic!("no {flag} … {dest} in {args:?}"))
    }

    #[test]
    fn deeper_mounts_come_after_the_folders_they_sit_in() {
        let a = args(&layout());
        assert!(a.contains(&"--unshare-net".to_string()) && a.contains(&"--die-with-parent".to_string()));
        let tmpfs = |d: &str| a.windows(2).position(|w| w[0] == "--tmpfs" && w[1] == d).unwrap();
        let home = tmpfs("/home/u");
        let common = at(&a, "--ro-bind", "/home/u/.git");
        let slot = at(&a, "--bind", "/home/u/.git/ralph-slots/1");
        let git = at(&a, "--ro-bind", "/home/u/.git/ralph-slots/1/.git");
        let main_ralph = tmpfs("/home/u/.ralph");
        let prompt = at(&a, "--ro-bind", "/home/u/.ralph/runs/r/iter-0001/prompt.md");
        assert!(at(&a, "--ro-bind", "/") < home);
        assert!(home < common && common < slot && slot < git, "{a:?}");
        assert!(main_ralph < prompt && home < at(&a, "--bind", "/home/u/.claude"));
        let remount = a.iter().position(|x| x == "--remount-ro").unwrap();
        assert!(remount > prompt);
        assert_eq!(a[a.len() - 2..], ["--chdir", "/home/u/.git/ralph-slots/1"]);
    }

    #[test]
    fn the_command_follows_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("bwrap");
        std::fs::write(&fake, "").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let host = Host { vars: vec![("PATH".into(), dir.path().to_string_lossy().into_owned())] };
        let mut req = crate::process::tests::sh("echo hi");
        req.env = vec![("TMPDIR".into(), "/home/u/tmp".into())];
        let w = wrap(&host, req, &layout()).unwrap();
        assert_eq!(Path::new(&w.program), fake);
        let dash = w.args.iter().position(|a| a == "--").unwrap();
        assert_eq!(w.args[dash + 1..], ["sh", "-c", "echo hi"]);
        assert_eq!(w.env, vec![("TMPDIR".to_string(), "/tmp".to_string())]);
        assert!(w.new_session && w.spare_leader);
    }
}
