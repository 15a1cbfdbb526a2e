//! The agent's sandbox (`[sandbox]`): what an agent may see and change, and which of ralph's
//! environment reaches it. [`apply`] turns an agent's [`SpawnRequest`] into one that runs
//! inside the sandbox, through bubblewrap ([`bwrap`]) or a container engine ([`container`]),
//! with its environment cut to an allowlist ([`env`]). Every agent ralph starts (the
//! iteration's, `[review]`'s, `ralph plan`'s, `ralph tune`'s reflector, and so those of
//! parallel slots, eval trials and remote workers, which run the iteration) gets its request
//! from `agent::request`, which applies the sandbox; the checks go through it only with
//! `[sandbox] checks = true`.
//!
//! The policy ([`Layout`] resolves it; both kinds carry it out):
//!
//! - the system read-only; a private `/tmp` (and `/var/tmp`); `/run` empty but for the folder
//!   that holds `/etc/resolv.conf`, so no daemon's socket (docker, systemd, D-Bus) is reachable;
//!   `/home` and `/root` empty;
//! - the worktree read-write; its `.git` read-only, and so are git's own folders when the
//!   worktree is a linked one (`.git` is then a file naming `<repo>/.git/worktrees/<n>`; that
//!   folder and the common `<repo>/.git` are bound read-only);
//! - `.ralph/` (the worktree's, and the main checkout's for a linked worktree, where the
//!   iteration's folder lives) an empty read-only folder holding only the iteration's
//!   `prompt.md` (and its `.gitignore`), read-only, at its own path, so `RALPH_PROMPT_FILE` and
//!   `prompt = "file"` work;
//! - the home directory an empty one at the same path, holding only the agent's own
//!   configuration and credentials (its preset's `home` paths, and the folders its `home_env`
//!   variables name), bound read-write, and `~/.gitconfig` read-only; the folders on `PATH` that
//!   the empty home or the
//!   private `/tmp` would hide, and the agent's program (its npm package) read-only; then
//!   `[sandbox] read_only` and `read_write`;
//! - its own PID namespace (`--unshare-pid`; a container: `--init`), so nothing it starts
//!   outlives it, `setsid` daemons included; its own session, away from ralph's terminal;
//! - the network shared (the agent must reach its model) unless `network = false`.
//!
//! **Git inside.** `git status`, `git diff` and `git log` work against the read-only `.git`: git
//! refreshes the index only when it can take `index.lock`, and skips it quietly otherwise.
//! `git add` and `git commit` fail with "Read-only file system" (ralph commits; the prompt says
//! so). There is no private index: a `GIT_INDEX_FILE` in the agent's environment would apply
//! to every repository the agent or its tests touch.
//!
//! Invariants: every path bound is one ralph resolved itself before the agent starts (the
//! configuration folders canonicalized from the real home, git's folders from git); a link
//! where ralph binds its own folders (`.git`, `.ralph`, the prompt) is refused, never
//! followed; the environment is built from an allowlist on an empty one, never by removing
//! names.

pub mod bwrap;
pub mod container;
pub mod env;

use crate::process::SpawnRequest;
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

/// `[sandbox] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The agent runs as the user, with the user's files and environment in reach.
    #[default]
    None,
    /// Bubblewrap: namespaces, no daemon (Linux).
    Bwrap,
    /// A container through podman or docker.
    Container,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Bwrap => "bwrap",
            Kind::Container => "container",
        }
    }
}

/// `[sandbox] engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Podman,
    Docker,
}

impl Engine {
    pub fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }
}

/// `[sandbox]`, with defaults applied: built by [`crate::config`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    pub kind: Kind,
    /// The agent shares the machine's network (default true).
    pub network: bool,
    /// More paths the agent may read (absolute, or `~/...`).
    pub read_only: Vec<String>,
    /// More paths the agent may change.
    pub read_write: Vec<String>,
    /// More variables (names or `PREFIX_*`) that reach the agent.
    pub env: Vec<String>,
    /// The checks run inside the sandbox too (default false: they run as the user).
    pub checks: bool,
    /// The container's image (`kind = "container"`).
    pub image: Option<String>,
    /// The container engine; default: podman if installed, else docker.
    pub engine: Option<Engine>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            kind: Kind::None,
            network: true,
            read_only: Vec::new(),
            read_write: Vec::new(),
            env: Vec::new(),
            checks: false,
            image: None,
            engine: None,
        }
    }
}

impl SandboxConfig {
    /// What makes no sense in it, in words for `ralph.toml: [sandbox] ...`.
    pub fn validate(&self) -> Result<(), String> {
        for (key, paths) in [("read_only", &self.read_only), ("read_write", &self.read_write)] {
            for p in paths {
                if !(p.starts_with('/') || p.starts_with("~/")) {
                    return Err(format!(
                        "[sandbox] {key}: `{p}` must be an absolute path or start with ~/ (the worktree is the agent's already)"
                    ));
                }
                if p.contains(',') || p.contains(':') {
                    return Err(format!(
                        "[sandbox] {key}: `{p}`: a path with a comma or a colon cannot be bound"
                    ));
                }
            }
        }
        if let Some(bad) = self.env.iter().find(|p| !env::valid_pattern(p)) {
            return Err(format!(
                "[sandbox] env: `{bad}` is not a variable's name (or a prefix ending in *, like \"AWS_*\")"
            ));
        }
        if self.kind == Kind::Container && self.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            return Err(
                "[sandbox] kind = \"container\" needs an `image` that holds the agent's program".into()
            );
        }
        Ok(())
    }
}

/// Why an agent (or a check) cannot be put in its sandbox. Reads well after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("set up the sandbox: {} is a symbolic link (ralph binds it itself and follows no link there)", path.display())]
    Link { path: PathBuf },
    #[error("set up the sandbox: {} cannot be resolved", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("set up the sandbox: `{program}` was not found on PATH")]
    Missing { program: String },
    #[error("set up the sandbox: {} cannot be bound into a container (a comma in a path)", path.display())]
    Unbindable { path: PathBuf },
}

impl SandboxError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            SandboxError::Missing { program } if program == "bwrap" => {
                "install bubblewrap (apt install bubblewrap, dnf install bubblewrap), or set [sandbox] kind = \"none\"".into()
            }
            SandboxError::Missing { .. } => {
                "install podman or docker, or set [sandbox] engine to the one installed, or kind = \"bwrap\"".into()
            }
            SandboxError::Link { .. } => "remove the link; ralph makes its folders again".into(),
            _ => "see `ralph doctor`".into(),
        }
    }
}

/// What an agent needs from outside its worktree: its preset's facts, the program ralph
/// resolved, the prompt. [`Needs::default`] is a check's: nothing.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Its configuration under the home directory (relative paths), bound read-write.
    pub home: &'static [&'static str],
    /// Variables naming its configuration folder elsewhere, bound read-write when set.
    pub home_env: &'static [&'static str],
    /// The variables it reads (patterns): its credentials and settings.
    pub env: Vec<&'static str>,
    /// The program, as ralph resolved it (`None`: not found, or left to the sandbox's PATH).
    pub program: Option<PathBuf>,
    /// The saved prompt, shown read-only at its own path.
    pub prompt_file: Option<PathBuf>,
}

/// What the sandbox reads of ralph's own process: its environment (the real home, PATH).
#[derive(Debug, Clone)]
pub struct Host {
    pub vars: Vec<(String, String)>,
}

impl Host {
    pub fn current() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The real home: an absolute folder other than `/`.
    pub fn home(&self) -> Option<PathBuf> {
        let h = PathBuf::from(self.var("HOME")?);
        (h.is_absolute() && h != Path::new("/") && h.is_dir()).then_some(h)
    }

    /// `program` on ralph's own PATH.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        crate::process::find_on(self.var("PATH")?, program)
    }
}

/// The allowlist for `needs` under `cfg`: [`env::BASE`], the agent's own variables, `[sandbox]
/// env`.
pub fn allowlist<'a>(cfg: &'a SandboxConfig, needs: &'a Needs) -> Vec<&'a str> {
    let mut patterns: Vec<&str> = env::BASE.to_vec();
    patterns.extend(needs.env.iter().copied());
    patterns.extend(needs.home_env.iter().copied());
    patterns.extend(cfg.env.iter().map(String::as_str));
    patterns
}

/// Puts `req` in the sandbox `cfg` describes; with `kind = "none"`, only cuts its environment
/// to the allowlist when `allowlist` (`[agent] env_allowlist`) says so.
pub fn apply(
    cfg: &SandboxConfig,
    allowlist: bool,
    req: SpawnRequest,
    needs: &Needs,
) -> Result<SpawnRequest, SandboxError> {
    apply_on(&Host::current(), cfg, allowlist, req, needs)
}

/// [`apply`] for a given host.
pub fn apply_on(
    host: &Host,
    cfg: &SandboxConfig,
    allowlist_too: bool,
    mut req: SpawnRequest,
    needs: &Needs,
) -> Result<SpawnRequest, SandboxError> {
    if cfg.kind == Kind::None && !allowlist_too {
        return Ok(req);
    }
    req.env = env::allowed(&host.vars, &allowlist(cfg, needs), &req.env, &req.env_remove);
    req.env_clear = true;
    match cfg.kind {
        Kind::None => Ok(req),
        Kind::Bwrap => {
            let layout = Layout::resolve(host, cfg, &req, needs)?;
            bwrap::wrap(host, req, &layout)
        }
        Kind::Container => {
            let layout = Layout::resolve(host, cfg, &req, needs)?;
            container::wrap(host, cfg, req, &layout)
        }
    }
}

/// The program that carries the sandbox out (bwrap, the container engine), found on ralph's
/// PATH; `None` for `kind = "none"`.
pub fn runner(cfg: &SandboxConfig) -> Result<Option<PathBuf>, SandboxError> {
    let host = Host::current();
    match cfg.kind {
        Kind::None => Ok(None),
        Kind::Bwrap => host.find("bwrap").map(Some).ok_or(SandboxError::Missing { program: "bwrap".into() }),
        Kind::Container => container::engine(&host, cfg).map(|(_, p)| Some(p)),
    }
}

/// One bind: `src` (resolved by ralph) shown at `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub write: bool,
}

/// The sandbox's file system, resolved before the agent starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The worktree, as ralph names it (the agent's working directory).
    pub root: PathBuf,
    /// The worktree, canonical: what is bound there.
    pub root_src: PathBuf,
    /// The real home, replaced by an empty one.
    pub home: Option<PathBuf>,
    /// The agent's configuration, the folders the sandbox would hide that it needs, the
    /// user's `read_only` and `read_write`, git's folders outside the worktree.
    pub binds: Vec<Bind>,
    /// `<worktree>/.git` (a folder, or a linked worktree's file), read-only.
    pub git_entry: Option<PathBuf>,
    /// ralph's folders (`.ralph`), shown empty and read-only.
    pub hidden: Vec<PathBuf>,
    /// ralph's files shown read-only at their own paths inside the hidden folders: the saved
    /// prompt, `.ralph/.gitignore` (so git inside tells nothing of `.ralph/`).
    pub shown: Vec<PathBuf>,
    pub network: bool,
}

/// What every agent sees of the home, read-only: git's own settings (the agent's `git` and its
/// tests' scratch repositories want the user's name). Not `~/.config/git`: git's credential
/// store may live there.
pub const HOME_READ_ONLY: &[&str] = &[".gitconfig"];

/// Folders the sandbox replaces with empty ones, besides the home: the temporary ones, the
/// daemons' sockets, every home (other users', root's; the user's own even when `HOME` points
/// elsewhere).
pub const PRIVATE: &[&str] = &["/tmp", "/var/tmp", "/run", "/home", "/root"];

/// ralph's folder's name (`state::RALPH_DIR`, which sits above this module).
const RALPH_DIR: &str = ".ralph";

fn canonical(p: &Path) -> Result<PathBuf, SandboxError> {
    p.canonicalize().map_err(|source| SandboxError::Resolve { path: p.to_path_buf(), source })
}

/// `p`'s metadata, not following a link; `None` when it does not exist.
fn lstat(p: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(p).ok()
}

/// Refuses a link at one of ralph's own paths; whether something is there.
fn not_a_link(p: &Path) -> Result<bool, SandboxError> {
    match lstat(p) {
        Some(m) if m.file_type().is_symlink() => Err(SandboxError::Link { path: p.to_path_buf() }),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// Expands a `read_only`/`read_write` entry: `~/x` is under the real home.
fn expand(p: &str, home: Option<&Path>) -> Option<PathBuf> {
    match p.strip_prefix("~/") {
        Some(rest) => Some(home?.join(rest)),
        None => Some(PathBuf::from(p)),
    }
}

/// The nearest folder of `file` (itself excluded) that holds a `package.json`, below `stop`:
/// an npm package, bound whole so its `require`s resolve; when it sits in a `node_modules`
/// folder, that folder, since npm hoists a package's dependencies (Codex's native binary is
/// the sibling package `@openai/codex-linux-x64`) beside it.
fn package_root(file: &Path, stop: &Path) -> Option<PathBuf> {
    let below = |a: &Path| a.starts_with(stop) && a != stop;
    let pkg = file.ancestors().skip(1).take_while(|a| below(a)).find(|a| a.join("package.json").is_file())?;
    let modules = pkg
        .ancestors()
        .skip(1)
        .take_while(|a| below(a))
        .find(|a| a.file_name() == Some("node_modules".as_ref()));
    Some(modules.unwrap_or(pkg).to_path_buf())
}

impl Layout {
    /// Whether the sandbox would hide `p`: under the home or a [`PRIVATE`] folder.
    pub fn hides(&self, p: &Path) -> bool {
        self.home.as_deref().is_some_and(|h| p.starts_with(h))
            || PRIVATE.iter().any(|d| p.starts_with(d))
            || self.hidden.iter().any(|h| p.starts_with(h))
    }

    /// Resolves the sandbox of `req` (its working directory is the worktree).
    pub fn resolve(
        host: &Host,
        cfg: &SandboxConfig,
        req: &SpawnRequest,
        needs: &Needs,
    ) -> Result<Layout, SandboxError> {
        let root = req.cwd.clone();
        let root_src = canonical(&root)?;
        // A home inside the worktree (or the worktree itself) stays the worktree's.
        let home = host.home().filter(|h| !h.starts_with(&root_src) && !h.starts_with(&root));
        let mut layout = Layout {
            root: root.clone(),
            root_src: root_src.clone(),
            home: home.clone(),
            binds: Vec::new(),
            git_entry: None,
            hidden: Vec::new(),
            shown: Vec::new(),
            network: cfg.network,
        };
        // ralph's folders: the worktree's, the one holding the prompt (the iteration's folder),
        // and a linked worktree's main checkout's.
        let git_dir = crate::git::git_dir(&root).and_then(|p| p.canonicalize().ok());
        let common_dir = crate::git::common_dir(&root).and_then(|p| p.canonicalize().ok());
        let mut hidden = vec![root.join(RALPH_DIR)];
        if let Some(pf) = &needs.prompt_file
            && let Some(i) = pf.components().position(|c| c == Component::Normal(RALPH_DIR.as_ref()))
        {
            hidden.push(pf.components().take(i + 1).collect());
        }
        if let (Some(g), Some(c)) = (&git_dir, &common_dir)
            && g != c
            && c.file_name().is_some_and(|n| n == ".git")
            && let Some(main) = c.parent()
        {
            hidden.push(main.join(RALPH_DIR));
        }
        for h in hidden {
            if not_a_link(&h)? && h.is_dir() && !layout.hidden.contains(&h) {
                let ignore = h.join(".gitignore");
                if lstat(&ignore).is_some_and(|m| m.is_file()) {
                    layout.shown.push(ignore);
                }
                layout.hidden.push(h);
            }
        }
        if let Some(pf) = &needs.prompt_file
            && not_a_link(pf)?
            && pf.is_file()
        {
            layout.shown.push(pf.clone());
        }
        let git_entry = root.join(".git");
        if not_a_link(&git_entry)? {
            layout.git_entry = Some(git_entry);
        }
        // The agent's configuration, from the real home.
        if let Some(h) = &home {
            let home_paths =
                HOME_READ_ONLY.iter().map(|r| (r, false)).chain(needs.home.iter().map(|r| (r, true)));
            for (rel, write) in home_paths {
                let dest = h.join(rel);
                if lstat(&dest).is_some()
                    && let Ok(src) = dest.canonicalize()
                {
                    layout.binds.push(Bind { src, dest, write });
                }
            }
        }
        for var in needs.home_env {
            if let Some(v) = req.env.iter().find(|(k, _)| k == var).map(|(_, v)| PathBuf::from(v))
                && v.is_absolute()
                && let Ok(src) = v.canonicalize()
                && src.is_dir()
            {
                layout.binds.push(Bind { src, dest: v, write: true });
            }
        }
        // What the agent runs that the empty home or the private folders would hide.
        let path = req.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        for dir in path.iter().flat_map(std::env::split_paths) {
            if dir.is_absolute()
                && layout.hides(&dir)
                && !dir.starts_with(&root)
                && let Ok(src) = dir.canonicalize()
                && src.is_dir()
            {
                layout.binds.push(Bind { src, dest: dir, write: false });
            }
        }
        if let Some(program) = &needs.program
            && let Ok(real) = program.canonicalize()
            && (layout.hides(program) || layout.hides(&real))
            && !real.starts_with(&root_src)
        {
            if let Some(parent) = program.parent()
                && let Ok(src) = parent.canonicalize()
            {
                layout.binds.push(Bind { src, dest: parent.to_path_buf(), write: false });
            }
            let stop = PRIVATE
                .iter()
                .map(Path::new)
                .chain(home.as_deref())
                .find(|d| real.starts_with(d))
                .unwrap_or(Path::new("/"));
            let pkg = package_root(&real, stop).or_else(|| real.parent().map(Path::to_path_buf));
            if let Some(pkg) = pkg {
                layout.binds.push(Bind { src: pkg.clone(), dest: pkg, write: false });
            }
        }
        // The user's own.
        for (paths, write) in [(&cfg.read_only, false), (&cfg.read_write, true)] {
            for p in paths {
                if let Some(dest) = expand(p, host.home().as_deref())
                    && let Ok(src) = dest.canonicalize()
                {
                    layout.binds.push(Bind { src, dest, write });
                }
            }
        }
        // Git's folders outside the worktree (a linked worktree's): read-only, where the
        // sandbox would hide them; the common one first, its `worktrees/<n>` is inside.
        for dir in [&common_dir, &git_dir].into_iter().flatten() {
            if !dir.starts_with(&root_src) && !layout.binds.iter().any(|b| &b.dest == dir) {
                layout.binds.push(Bind { src: dir.clone(), dest: dir.clone(), write: false });
            }
        }
        // One mount per place (a PATH that names a folder twice, a user's path that is also a
        // preset's): container engines refuse a second; writable if any asked for it.
        let mut seen: Vec<Bind> = Vec::with_capacity(layout.binds.len());
        for b in std::mem::take(&mut layout.binds) {
            match seen.iter_mut().find(|s| s.dest == b.dest) {
                Some(s) => s.write |= b.write,
                None => seen.push(b),
            }
        }
        layout.binds = seen;
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let ok = SandboxConfig {
            kind: Kind::Bwrap,
            read_only: vec!["/opt/tools".into(), "~/.cargo".into()],
            env: vec!["AWS_*".into(), "MY_VAR".into()],
            ..SandboxConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |c: SandboxConfig| c.validate().unwrap_err();
        let e = bad(SandboxConfig { read_write: vec!["cache".into()], ..ok.clone() });
        assert!(e.contains("[sandbox] read_write: `cache` must be an absolute path"), "{e}");
        let e = bad(SandboxConfig { env: vec!["A-B".into()], ..ok.clone() });
        assert!(e.contains("[sandbox] env: `A-B`"), "{e}");
        let e = bad(SandboxConfig { kind: Kind::Container, ..ok.clone() });
        assert!(e.contains("needs an `image`"), "{e}");
        assert!(SandboxConfig { kind: Kind::Container, image: Some("img".into()), ..ok }.validate().is_ok());
    }

    #[test]
    fn nothing_changes_without_a_sandbox_or_the_allowlist() {
        let host = Host { vars: vec![("SECRET_THING".into(), "x".into())] };
        let req = crate::process::tests::sh("true");
        let out = apply_on(&host, &SandboxConfig::default(), false, req.clone(), &Needs::default()).unwrap();
        assert!(!out.env_clear && out.env.is_empty() && out.program == req.program);
        let out = apply_on(&host, &SandboxConfig::default(), true, req, &Needs::default()).unwrap();
        assert!(out.env_clear && !out.new_session && out.program == "sh");
        assert!(out.env.is_empty(), "{:?}", out.env);
    }

    #[test]
    fn a_package_is_found_above_its_program_with_the_node_modules_it_sits_in() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("lib/node_modules");
        let pkg = modules.join("@scope/cli");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("package.json"), "{}").unwrap();
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        // Its dependencies are hoisted beside it: the whole node_modules is bound.
        assert_eq!(package_root(&pkg.join("bin/cli.js"), dir.path()), Some(modules));
        // A package not in a node_modules folder: itself.
        let alone = dir.path().join("tools/cli");
        std::fs::create_dir_all(alone.join("bin")).unwrap();
        std::fs::write(alone.join("package.json"), "{}").unwrap();
        assert_eq!(package_root(&alone.join("bin/cli.js"), dir.path()), Some(alone.clone()));
        assert_eq!(package_root(&dir.path().join("lib/x"), dir.path()), None);
    }
}
