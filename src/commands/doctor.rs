//! `ralph doctor`: checks the configured agent without spending tokens: the binary is found,
//! answers `--version`, its help lists the flags ralph relies on, and the known hazards of
//! running it unattended are named. It validates what `ralph run` validates before it starts
//! (ralph.toml, the prompt template, the backlog), runs the checks once on the working tree and
//! says of each whether it passes, fails (and what a failure there means for the run) or cannot
//! run, and looks at the git state. With a `[sandbox]`, it runs a command and the agent's
//! `--version` inside it, as a run would start them. Exits 0 when a run could start, 2 when
//! something would stop or break it.

use crate::agent::{self, hazards};
use crate::checks;
use crate::config::{self, PromptMode};
use crate::error::CliError;
use crate::git;
use crate::process::{self, SpawnRequest};
use crate::sandbox::{self, Host, Kind, Needs};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--version` or `--help` may take (node CLIs start slowly on a cold disk).
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

struct Out {
    problems: usize,
}

impl Out {
    fn ok(&self, s: &str) {
        crate::outln!("  ok       {s}");
    }
    fn note(&self, s: &str) {
        crate::outln!("  note     {s}");
    }
    fn problem(&mut self, s: &str, hint: Option<&str>) {
        self.problems += 1;
        crate::outln!("  PROBLEM  {s}");
        if let Some(h) = hint {
            crate::outln!("           hint: {h}");
        }
    }
}

/// Runs `program args` with stdin from /dev/null; its combined output, or why not.
fn probe(program: &Path, args: &[&str], env: &[(String, String)]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("CLAUDECODE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let bytes = reader.join().unwrap_or_default();
    Ok(crate::agent::scan::strip_ansi(&String::from_utf8_lossy(&bytes)))
}

/// Runs the checks once, every one whatever the others do, and says of each what it means for
/// a run. The output goes to a log of its own in the temporary folder (never into the
/// repository, where a planted link could redirect it), kept when something failed.
fn run_checks(root: &Path, cfg: &config::Config, out: &mut Out) -> Result<(), CliError> {
    let dirty = !git::dirty_entries(root)?.is_empty();
    crate::outln!(
        "  running them once on the {} (Ctrl-C stops them)...",
        if dirty { "working tree, uncommitted changes included" } else { "clean tree" }
    );
    let log_path = std::env::temp_dir().join(format!(
        "ralph-doctor-{}-{}.log",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    // create_new: never through a link or into a file someone else made.
    let mut log = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&log_path)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", log_path.display())))?;
    let env: Vec<(String, String)> = cfg.agent.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut masker = crate::secrets::StreamMasker::new(crate::secrets::Secrets::from_env(&env));
    let check_env = [("RALPH_ROOT".to_string(), root.to_string_lossy().into_owned())];
    let judge = checks::Judge { keep_going: true, baseline: None, strict: &[] };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?
        .block_on(async {
            let stop = crate::signal::Stop::default();
            let cancel = stop.cancel.clone();
            // The checks run in process groups of their own: Ctrl-C must end them, not only us.
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            });
            let ctx = checks::Ctx::new(&check_env, root, cfg.agent.kill_grace, &stop, &cfg.sandbox);
            checks::run(&cfg.checks, &ctx, &mut log, &mut masker, &judge).await
        })
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", log_path.display())))?;
    if result.interrupted {
        return Err(CliError {
            code: crate::exit_code::INTERRUPTED,
            message: "interrupted".into(),
            hints: Vec::new(),
        });
    }
    let mut failed = false;
    for c in &cfg.checks.commands {
        let Some(r) = result.records.iter().find(|r| &r.command == c) else {
            failed = true;
            out.problem(&format!("`{c}` was not run: a check before it could not start"), None);
            continue;
        };
        let secs = r.duration_ms as f64 / 1000.0;
        match r.exit_code {
            Some(0) if !r.timed_out => out.ok(&format!("`{c}` passes ({secs:.1}s)")),
            // sh's own codes: the command was not found, or is not executable.
            Some(code @ (126 | 127)) => {
                failed = true;
                out.problem(
                    &format!(
                        "`{c}` cannot run (exit {code}: {})",
                        if code == 127 { "command not found" } else { "not executable" }
                    ),
                    Some("fix [checks] commands in ralph.toml: every iteration would fail on it"),
                );
            }
            None if !r.timed_out && r.duration_ms == 0 => {
                failed = true;
                out.problem(
                    &format!(
                        "`{c}` cannot run: {}",
                        result.failure.as_deref().unwrap_or("it could not start")
                    ),
                    Some("fix [checks] commands in ralph.toml: every iteration would fail on it"),
                );
            }
            _ => {
                failed = true;
                let how = if r.timed_out {
                    format!("times out after {}", humantime::format_duration(cfg.checks.timeout))
                } else {
                    r.exit_code.map_or("is killed by a signal".into(), |code| format!("fails (exit {code})"))
                };
                let never = "never tolerated as a known failure: it must pass before ralph commits anything";
                if cfg.checks.gate == config::Gate::AllGreen {
                    out.note(&format!(
                        "`{c}` {how}: with gate = \"all-green\" it must pass before ralph commits anything"
                    ));
                } else if r.timed_out {
                    out.note(&format!("`{c}` {how}: a check that times out is {never}"));
                } else if r.failed_tests.is_empty() {
                    out.note(&format!("`{c}` {how} and names no failing test: such a check is {never}"));
                } else {
                    let mut names: Vec<&str> = r.failed_tests.iter().take(3).map(String::as_str).collect();
                    if r.failed_tests.len() > 3 {
                        names.push("...");
                    }
                    out.note(&format!(
                        "`{c}` {how}: {} test(s) already fail ({}); they may go on failing, no new one may",
                        r.failed_tests.len(),
                        names.join(", ")
                    ));
                }
            }
        }
    }
    if failed {
        out.note(&format!("their output: {}", log_path.display()));
    } else {
        let _ = std::fs::remove_file(&log_path);
    }
    Ok(())
}

/// Runs `req` (already put in its sandbox) to its end, at most `timeout`: its exit code and its
/// output, or why it could not start.
fn run_request(req: &SpawnRequest, timeout: Duration) -> Result<(Option<i32>, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let child = process::spawn(req).map_err(|e| crate::text::chain(&e))?;
        let t = tokio_util::sync::CancellationToken::new();
        let limits = process::Limits { timeout, idle_timeout: None, grace: Duration::from_secs(1) };
        let mut bytes = Vec::new();
        let f = process::supervise(child, limits, &t, &t, |c| {
            bytes.extend_from_slice(&c.data);
            std::ops::ControlFlow::Continue(())
        })
        .await;
        if f.ending == process::Ending::Timeout {
            return Err(format!("no answer within {}s", timeout.as_secs()));
        }
        Ok((f.exit_code, crate::agent::scan::strip_ansi(&String::from_utf8_lossy(&bytes))))
    })
}

/// The first few lines of `text`, on one line.
fn gist(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect();
    if lines.is_empty() { "no output".into() } else { lines.join(" / ") }
}

/// The `[sandbox]` section: the kind's program is there, a command runs inside, the agent
/// starts inside, and what the agent sees of the home.
fn sandbox(root: &Path, cfg: &config::Config, out: &mut Out) {
    let s = &cfg.sandbox;
    let a = &cfg.agent;
    crate::outln!("sandbox: {}", s.kind.name());
    if s.kind == Kind::None {
        out.note("none: the agent runs as you, with your home, keys and environment in reach");
        if Host::current().find("bwrap").is_some() {
            out.note(
                "bubblewrap is installed: [sandbox] kind = \"bwrap\" confines the agent to its worktree",
            );
        }
        if a.env_allowlist {
            out.ok("only allowlisted variables reach the agent ([agent] env_allowlist = true)");
        }
        return;
    }
    let runner = match sandbox::runner(s) {
        Ok(r) => r,
        Err(e) => {
            out.problem(&crate::text::chain(&e), Some(&e.hint()));
            return;
        }
    };
    if let Some(r) = runner {
        out.ok(&format!("found {}", r.display()));
    }
    let cannot = match s.kind {
        Kind::Container => {
            "is the engine's daemon running (`docker info`, `podman info`), and can it pull the image? Or set [sandbox] kind = \"bwrap\" or \"none\""
        }
        _ => {
            "bwrap needs unprivileged user namespaces: see `sysctl kernel.unprivileged_userns_clone` (Debian) and `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 24.04); inside a container, give it --privileged or set [sandbox] kind = \"none\""
        }
    };
    let plain = |program: &str, args: &[&str], env: Vec<(String, String)>| SpawnRequest {
        env_remove: vec!["CLAUDECODE".into()],
        ..SpawnRequest::program(program, args, root, env)
    };
    let wait = Duration::from_secs(if s.kind == Kind::Container { 300 } else { 60 });
    let trivial = sandbox::apply(
        s,
        a.env_allowlist,
        plain("sh", &["-c", "echo ralph-sandbox-ok"], vec![]),
        &Needs::default(),
    )
    .map_err(|e| crate::text::chain(&e))
    .and_then(|req| run_request(&req, wait));
    match trivial {
        Ok((Some(0), text)) if text.contains("ralph-sandbox-ok") => {
            out.ok(&format!("{} runs a command inside", s.kind.name()))
        }
        Ok((code, text)) => {
            let how = code.map_or("was killed".to_string(), |c| format!("exit {c}"));
            out.problem(
                &format!("{} cannot run a command here ({how}): {}", s.kind.name(), gist(&text)),
                Some(cannot),
            );
            return;
        }
        Err(e) => {
            out.problem(&format!("{} cannot run a command here: {e}", s.kind.name()), Some(cannot));
            return;
        }
    }
    let needs = agent::needs(a, root, None);
    // Not found on this machine: said above, under the agent; trying it inside says nothing
    // more (a container's image holds its own program, so it is tried there).
    if needs.program.is_none() && s.kind == sandbox::Kind::Bwrap {
        out.note("the agent is not tried inside: its program is not found (above)");
    } else {
        let env: Vec<(String, String)> = a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        agent_inside(a, s, &needs, plain(&a.command[0], &["--version"], env), wait, out);
    }
    let probe = plain(&a.command[0], &[], vec![]);
    if let Ok(layout) = sandbox::Layout::resolve(&Host::current(), s, &probe, &needs) {
        let home = layout.home.as_deref();
        let shown: Vec<String> = layout
            .binds
            .iter()
            .filter_map(|b| {
                let rel = b.dest.strip_prefix(home?).ok()?;
                Some(format!("~/{} ({})", rel.display(), if b.write { "read-write" } else { "read-only" }))
            })
            .collect();
        match (home, shown.is_empty()) {
            (None, _) => {}
            (Some(_), true) => out.note("your home is empty inside the sandbox"),
            (Some(_), false) => {
                out.note(&format!("your home is empty inside the sandbox but for {}", shown.join(", ")))
            }
        }
    }
    out.note(if s.network {
        "the network is shared (the agent reaches its model); [sandbox] network = false cuts it"
    } else {
        "no network inside ([sandbox] network = false)"
    });
    out.note(if s.checks {
        "the checks run inside the sandbox too ([sandbox] checks = true)"
    } else {
        "the checks run outside the sandbox, as you"
    });
}

/// Runs `ralph doctor`.
pub fn run(cwd: &Path, agent: Option<String>) -> Result<u8, CliError> {
    let from_flag = agent.is_some();
    let root = crate::runner::repo_root(cwd)?;
    let cfg = crate::runner::load_config(&root, &config::Overrides { agent })?;
    let mut out = Out { problems: 0 };
    crate::outln!("inputs:");
    match crate::runner::validate_inputs(&root, &cfg) {
        Ok(_) => out.ok(&format!("{}, the prompt template and the backlog are valid", config::FILE_NAME)),
        Err(e) => {
            let hint = e.hints.join("; ");
            out.problem(
                &format!("`ralph run` would refuse to start: {}", e.message),
                Some(&hint).filter(|h| !h.is_empty()).map(String::as_str),
            );
        }
    }
    if let Some(missing) = cfg.notify_env_missing() {
        out.problem(
            &format!("`ralph run` would refuse to start: {missing}"),
            Some("export it before `ralph run`, or remove the [[notify]] entry"),
        );
    } else if !cfg.notify.is_empty() {
        out.ok(&format!("{} notifier(s) configured ([[notify]]), their variables set", cfg.notify.len()));
    }
    let a = &cfg.agent;
    let name = a.preset.map_or("custom command", |p| p.name);
    crate::outln!("agent: {name}");
    let env: Vec<(String, String)> = a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let prompt = match a.prompt {
        PromptMode::Stdin => "the prompt on stdin",
        PromptMode::Arg => "the prompt as an argument",
        PromptMode::File => "the prompt as a file path",
    };
    crate::outln!("  command  {} ({prompt})", a.command.join(" "));
    match agent::resolve_program(a, &root) {
        None => {
            let e = crate::runner::missing_agent(a, from_flag);
            out.problem(&e.message, Some(&e.hints.join("; ")));
        }
        Some(path) => {
            out.ok(&format!("found {}", path.display()));
            match probe(&path, &["--version"], &env) {
                Ok(v) => out.ok(&format!(
                    "version: {}",
                    v.lines().find(|l| !l.trim().is_empty()).unwrap_or("?").trim()
                )),
                Err(e) => out.problem(&format!("`{} --version` failed: {e}", a.command[0]), None),
            }
            if let Some(p) = a.preset {
                match probe(&path, p.help, &env) {
                    Ok(help) => {
                        let missing: Vec<&str> =
                            p.needs_flags.iter().copied().filter(|f| !help.contains(f)).collect();
                        if missing.is_empty() {
                            out.ok(&format!(
                                "`{} {}` lists {}",
                                p.bin,
                                p.help.join(" "),
                                p.needs_flags.join(", ")
                            ));
                        } else {
                            out.problem(
                                &format!("`{} {}` does not list {}", p.bin, p.help.join(" "), missing.join(", ")),
                                Some("this version may be too old (or too new) for the preset; upgrade it, or use preset = \"custom\""),
                            );
                        }
                    }
                    Err(e) => out.problem(&format!("`{} {}` failed: {e}", p.bin, p.help.join(" ")), None),
                }
            }
        }
    }
    let envf = hazards::agent_env(cfg.sandbox.kind != crate::sandbox::Kind::None);
    for h in hazards::check(a, hazards::euid(), &envf) {
        match h.level {
            hazards::Level::Problem => out.problem(&h.message, h.hint.as_deref()),
            hazards::Level::Note => out.note(&h.message),
        }
    }
    if !cfg.fallback.is_empty() {
        let names: Vec<&str> = cfg.fallback.iter().map(|f| f.name.as_str()).collect();
        crate::outln!(
            "fallback: {} (after a usage limit longer than {})",
            names.join(", "),
            crate::runner::human(cfg.fallback_after)
        );
    }
    for f in &cfg.fallback {
        match agent::resolve_program(f, &root) {
            None => {
                let e = crate::runner::missing_other_agent(f, &cfg);
                out.problem(&e.message, Some(&e.hints.join("; ")));
            }
            Some(path) => out.ok(&format!("{}: found {}", f.name, path.display())),
        }
        for h in hazards::check(f, hazards::euid(), &envf) {
            match h.level {
                hazards::Level::Problem => {
                    out.problem(&format!("{}: {}", f.name, h.message), h.hint.as_deref())
                }
                hazards::Level::Note => out.note(&format!("{}: {}", f.name, h.message)),
            }
        }
    }
    sandbox(&root, &cfg, &mut out);
    crate::outln!("checks:");
    if cfg.checks.commands.is_empty() {
        out.note("none: green means only that the agent exited 0 (set [checks] commands)");
    }
    if !cfg.checks.commands.is_empty() {
        run_checks(&root, &cfg, &mut out)?;
    }
    crate::outln!("git:");
    match git::head(&root)? {
        None => out.problem("the repository has no commits yet", Some("commit your project first")),
        Some(_) => {
            let branch = git::current_branch(&root)?.unwrap_or_else(|| "a detached HEAD".into());
            out.ok(&format!("on {branch}"));
            if let Err(e) = crate::runner::check_git_state(&root, &cfg) {
                out.problem(&e.message, Some(&e.hints.join("; ")));
            }
            let dirty = git::dirty_entries(&root)?;
            if dirty.is_empty() {
                out.ok("the working tree is clean");
            } else {
                out.problem(
                    &format!("{} uncommitted change(s): `ralph run` refuses a dirty tree", dirty.len()),
                    Some("commit or stash them, or run with --allow-dirty"),
                );
            }
        }
    }
    if out.problems == 0 {
        crate::outln!("\nready: `ralph run` can start.");
        Ok(crate::exit_code::OK)
    } else {
        crate::outln!("\n{} problem(s) to fix before `ralph run`.", out.problems);
        Ok(crate::exit_code::USAGE)
    }
}

/// `version` (the agent's `PROGRAM --version`) inside the sandbox: the agent starts there, or
/// why not.
fn agent_inside(
    a: &agent::AgentConfig,
    s: &sandbox::SandboxConfig,
    needs: &sandbox::Needs,
    version: SpawnRequest,
    wait: Duration,
    out: &mut Out,
) {
    let version = sandbox::apply(s, a.env_allowlist, version, needs)
        .map_err(|e| crate::text::chain(&e))
        .and_then(|req| run_request(&req, wait));
    match version {
        Ok((Some(0), text)) => out.ok(&format!(
            "the agent starts inside: `{} --version` answers {}",
            a.command[0],
            text.lines().find(|l| !l.trim().is_empty()).unwrap_or("?").trim()
        )),
        Ok((code, text)) => out.problem(
            &format!(
                "the agent does not start inside the sandbox: `{} --version` {}: {}",
                a.command[0],
                code.map_or("was killed".to_string(), |c| format!("exits {c}")),
                gist(&text)
            ),
            Some("it may need more than its worktree and its own configuration: add what it reads to [sandbox] read_only (a toolchain under your home, say), or the variables it needs to [sandbox] env"),
        ),
        Err(e) => out.problem(&format!("the agent does not start inside the sandbox: {e}"), None),
    }
}
