//! `ralph doctor`: checks the configured agent without spending tokens: the binary is found,
//! answers `--version`, its help lists the flags ralph relies on, and the known hazards of
//! running it unattended are named. Also the checks and the git state. Exits 0 when a run
//! could start, 2 when something would stop or break it.

use crate::agent::{self, hazards};
use crate::config::{self, PromptMode};
use crate::error::CliError;
use crate::git;
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
        println!("  ok       {s}");
    }
    fn note(&self, s: &str) {
        println!("  note     {s}");
    }
    fn problem(&mut self, s: &str, hint: Option<&str>) {
        self.problems += 1;
        println!("  PROBLEM  {s}");
        if let Some(h) = hint {
            println!("           hint: {h}");
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

/// Runs `ralph doctor`.
pub fn run(cwd: &Path, agent: Option<String>) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let cfg = crate::runner::load_config(&root, &config::Overrides { agent })?;
    let mut out = Out { problems: 0 };
    let a = &cfg.agent;
    let name = a.preset.map_or("custom command", |p| p.name);
    println!("agent: {name}");
    let env: Vec<(String, String)> = a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let prompt = match a.prompt {
        PromptMode::Stdin => "the prompt on stdin",
        PromptMode::Arg => "the prompt as an argument",
        PromptMode::File => "the prompt as a file path",
    };
    println!("  command  {} ({prompt})", a.command.join(" "));
    match agent::resolve_program(a, &root) {
        None => {
            let hint = a.preset.map(|p| format!("install it: {}; or set [agent] bin", p.install));
            out.problem(&format!("`{}` was not found on PATH", a.command[0]), hint.as_deref());
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
    let envf = |k: &str| std::env::var(k).ok();
    for h in hazards::check(a, hazards::euid(), &envf) {
        match h.level {
            hazards::Level::Problem => out.problem(&h.message, h.hint.as_deref()),
            hazards::Level::Note => out.note(&h.message),
        }
    }
    println!("checks:");
    if cfg.checks.commands.is_empty() {
        out.note("none: green means only that the agent exited 0 (set [checks] commands)");
    }
    for c in &cfg.checks.commands {
        out.ok(c);
    }
    println!("git:");
    match git::head(&root)? {
        None => out.problem("the repository has no commits yet", Some("commit your project first")),
        Some(_) => {
            let branch = git::current_branch(&root)?.unwrap_or_else(|| "a detached HEAD".into());
            out.ok(&format!("on {branch}"));
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
        println!("\nready: `ralph run` can start.");
        Ok(crate::exit_code::OK)
    } else {
        println!("\n{} problem(s) to fix before `ralph run`.", out.problems);
        Ok(crate::exit_code::USAGE)
    }
}
