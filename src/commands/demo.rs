//! `ralph demo`: the loop on a small embedded project, driven by the scripted agent, so a
//! newcomer sees ralph work without an API key. It creates a git repository (in a new
//! temporary directory unless `--dir` names one), runs `ralph run` in it, and keeps it for
//! `ralph status` and `ralph logs` afterwards.

use crate::error::CliError;
use crate::git;
use crate::reporter::Human;
use crate::runner::{self, RunOptions};
use crate::state;
use std::path::{Path, PathBuf};

const FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../templates/demo/README.md")),
    ("AGENTS.md", include_str!("../../templates/demo/AGENTS.md")),
    ("check.sh", include_str!("../../templates/demo/check.sh")),
    ("scenario.toml", include_str!("../../templates/demo/scenario.toml")),
    ("specs/010-greeting.md", include_str!("../../templates/demo/specs/010-greeting.md")),
    ("specs/020-farewell.md", include_str!("../../templates/demo/specs/020-farewell.md")),
    ("specs/030-summary.md", include_str!("../../templates/demo/specs/030-summary.md")),
];

fn config(ralph: &Path) -> String {
    let exe = toml::Value::String(ralph.to_string_lossy().into_owned());
    format!(
        r#"# The demo's configuration: the scripted agent plays scenario.toml.
[agent]
command = [{exe}, "scripted-agent", "scenario.toml"]
timeout = "2m"
idle_timeout = "30s"

[checks]
commands = ["sh check.sh"]

[budget]
max_iterations = 10
max_attempts = 3
"#
    )
}

/// Creates the demo project in `dir`, which must be empty or missing.
pub fn create(dir: &Path) -> Result<(), CliError> {
    let io = |p: &Path, e: std::io::Error| CliError::failure(format!("cannot write {}: {e}", p.display()));
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(CliError::usage(format!("{} is not empty", dir.display()))
            .hint("name a new or empty directory with --dir"));
    }
    std::fs::create_dir_all(dir.join("specs")).map_err(|e| io(dir, e))?;
    for (name, text) in FILES {
        state::atomic_write(&dir.join(name), text.as_bytes())?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find ralph's own binary: {e}")))?;
    state::atomic_write(&dir.join("ralph.toml"), config(&exe).as_bytes())?;
    git::init(dir)?;
    // A throwaway repository: it must commit whatever the user's global git setup is.
    if git::config_get(dir, "user.email").is_none() {
        git::config_set(dir, "user.email", "ralph-demo@example.invalid")?;
    }
    if git::config_get(dir, "user.name").is_none() {
        git::config_set(dir, "user.name", "ralph demo")?;
    }
    git::config_set(dir, "commit.gpgsign", "false")?;
    git::add_all(dir)?;
    match git::commit(dir, "Demo project\n")? {
        git::CommitResult::Committed(_) => Ok(()),
        git::CommitResult::Refused(t) => {
            Err(CliError::failure(format!("cannot make the demo's first commit: {t}")))
        }
    }
}

/// Runs `ralph demo`.
pub async fn run(dir: Option<PathBuf>) -> Result<u8, CliError> {
    let dir = match dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("ralph-demo-")
            .tempdir()
            .map_err(|e| CliError::failure(format!("cannot create a temporary directory: {e}")))?
            .keep(),
    };
    create(&dir)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    eprintln!("ralph demo: a 3-task project in {}, driven by the scripted agent\n", dir.display());
    let stop = crate::signal::install()
        .map_err(|e| CliError::failure(format!("cannot install signal handlers: {e}")))?;
    let code =
        runner::run(RunOptions { cwd: dir.clone(), ..Default::default() }, &mut Human::new(), stop).await?;
    let log = std::process::Command::new("git")
        .args(["log", "--oneline", "--reverse"])
        .current_dir(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("\nThe commits ralph made (git log --oneline):\n{log}");
    let ralph = invocation();
    eprintln!("Look around:");
    eprintln!("  {ralph} -C {} status", dir.display());
    eprintln!("  {ralph} -C {} logs 2 --checks    # the failed check, reverted", dir.display());
    eprintln!("  {ralph} -C {} logs 3 --prompt    # the retry's prompt, with the failure", dir.display());
    Ok(code)
}

/// How the user can call this binary again: `ralph` when that is what PATH finds, else its path.
fn invocation() -> String {
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("ralph"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
    });
    match (me, on_path) {
        (Some(me), Some(found)) if me == found => "ralph".to_string(),
        (Some(me), _) => me.to_string_lossy().into_owned(),
        (None, _) => "ralph".to_string(),
    }
}
