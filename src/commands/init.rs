//! `ralph init`: sets up a repository. Creates what is missing (ralph.toml, specs/ with an
//! example, AGENTS.md, `.ralph/` ignored by git) and never overwrites the user's files
//! (ralph.toml only with `--force`).

use crate::backlog::SPECS_DIR;
use crate::config;
use crate::error::CliError;
use crate::learnings::AGENTS_MD;
use crate::state;
use std::path::Path;

const EXAMPLE_SPEC: &str = r#"---
status: todo
priority: 1
---
# Document how to run the checks

Add a `## Development` section to README.md (create the file if it is missing) that says, in
two or three sentences, how to build the project and run its tests.

## Done when

- README.md has a `## Development` section naming the build and test commands.
- The checks in ralph.toml pass.
"#;

const AGENTS_TEMPLATE: &str = "# AGENTS.md\n\nNotes for coding agents working in this repository: how to build, test and run it, \
and the conventions to keep. Keep it short and operational; ralph adds what the loop learns \
under `## Learnings`.\n\n## Build and test\n\n- (fill in)\n";

/// Guesses the project's test command from the files at its root.
fn detect_checks(root: &Path) -> Vec<&'static str> {
    if root.join("Cargo.toml").exists() {
        vec!["cargo test"]
    } else if root.join("package.json").exists() {
        vec!["npm test"]
    } else if root.join("go.mod").exists() {
        vec!["go test ./..."]
    } else if root.join("pyproject.toml").exists() || root.join("setup.py").exists() {
        vec!["python -m pytest -q"]
    } else if root.join("Makefile").exists() {
        vec!["make test"]
    } else {
        vec![]
    }
}

/// The `[sandbox]` section: bubblewrap when it is installed, else the same commented out.
fn sandbox_text(bwrap: bool) -> &'static str {
    if bwrap {
        r#"[sandbox]
# The agent runs in bubblewrap: it changes its worktree and nothing else, sees an empty home
# but for its own configuration, and only allowlisted variables (README: The sandbox).
kind = "bwrap"
# network = false              # no network inside (an agent on a local model)
# read_only = ["~/.cargo"]     # more it may read (a toolchain under your home); read_write = [...]
# env = ["AWS_*"]              # more variables it gets
"#
    } else {
        r#"# [sandbox]
# kind = "bwrap"               # confine the agent to its worktree (install bubblewrap first)
"#
    }
}

fn config_text(preset: &str, checks: &[&str], backlog: Option<&str>, bwrap: bool) -> String {
    let sandbox = sandbox_text(bwrap);
    let checks = checks.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let backlog = match backlog {
        Some(f) => format!("[backlog]\nfile = \"{f}\"            # read in place and kept up to date\n"),
        None => {
            "# [backlog]\n# file = \"prd.json\"           # a prd.json or checklist plan instead of specs/\n"
                .to_string()
        }
    };
    format!(
        r#"# ralph configuration; the reference is in ralph's README.

[agent]
# claude | codex | gemini | opencode | pi | qwen | aider | amp | cursor | custom
preset = "{preset}"
# model = "sonnet"             # passed with the preset's model flag
# args = ["--max-turns", "50"] # appended to the preset's command line
# bin = "/opt/bin/claude"      # default: found on PATH
timeout = "30m"                # wall clock per iteration
idle_timeout = "10m"           # no output for this long: the agent is hung
# retry_wait = "60s"           # first wait after a usage limit with no reset time; doubles
# retry_wait_max = "1h"
# fallback = ["codex"]         # agents that run while the ones before hit a usage limit
# fallback_after = "5m"        # a limit that lifts sooner is waited out instead
# Dry run without a model: preset = "custom" and
# command = ["ralph", "scripted-agent", "scenario.toml"]

# [agent.env]
# IS_SANDBOX = "1"             # claude as root, on a disposable machine only

[checks]
# Run by ralph after the agent exits; work is committed only when all pass.
commands = [{checks}]
timeout = "20m"

[budget]
max_iterations = 50
max_duration = "8h"
max_attempts = 3               # per task, then it is blocked
max_consecutive_failures = 5   # then the run stops

# [git]
# branch = "ralph/work"        # created or checked out before the first iteration

# [prompt]
# template = "PROMPT.md"       # default: the built-in template

{sandbox}
{backlog}"#
    )
}

/// Runs `ralph init`.
pub fn run(cwd: &Path, force: bool, agent: Option<&str>) -> Result<u8, CliError> {
    let preset = agent.unwrap_or("claude");
    if preset != "custom" && crate::agent::preset::find(preset).is_none() {
        return Err(CliError::usage(format!(
            "unknown agent preset `{preset}` (known: {})",
            crate::agent::preset::names()
        )));
    }
    let root = crate::runner::repo_root(cwd)?;
    state::check_ralph_dir(&root)?;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        CliError::failure(format!("cannot {what} {}: {e}", p.display()))
    };
    let mut created = Vec::new();

    let specs = root.join(SPECS_DIR);
    let has_specs = std::fs::read_dir(&specs)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(".md")))
        .unwrap_or(false);
    // A backlog the user already keeps in another tool's format is used in place.
    let existing = if has_specs {
        None
    } else {
        crate::backlog::DETECTED.iter().copied().find(|f| root.join(f).is_file())
    };
    let cfg_path = root.join(config::FILE_NAME);
    if cfg_path.exists() && !force {
        crate::outln!("kept      {} (exists; --force overwrites it)", config::FILE_NAME);
    } else {
        let checks = detect_checks(&root);
        let installed = crate::sandbox::Host::current().find("bwrap");
        let bwrap = installed.as_deref().is_some_and(crate::sandbox::bwrap::runs_here);
        state::atomic_write(&cfg_path, config_text(preset, &checks, existing, bwrap).as_bytes())?;
        created.push(config::FILE_NAME.to_string());
        if bwrap {
            crate::outln!(
                "note: bubblewrap is installed: the agent runs sandboxed ([sandbox] kind = \"bwrap\"); `ralph doctor` checks it works"
            );
        } else if installed.is_some() {
            crate::outln!(
                "note: bubblewrap is installed but cannot make a sandbox here (user namespaces are off?): the sandbox is left off; `ralph doctor` says why once you set [sandbox] kind = \"bwrap\""
            );
        }
        if checks.is_empty() {
            crate::outln!("note: no test command detected; set [checks] commands in ralph.toml");
        }
    }

    if has_specs {
        crate::outln!("kept      {SPECS_DIR}/ (has specs)");
    } else if let Some(f) = existing {
        crate::outln!(
            "using     {f} as the backlog (read in place, kept up to date; `ralph import {f}` makes specs of it)"
        );
    } else {
        std::fs::create_dir_all(&specs).map_err(|e| io("create", &specs, e))?;
        let example = specs.join("010-document-checks.md");
        state::atomic_write(&example, EXAMPLE_SPEC.as_bytes())?;
        created.push(format!("{SPECS_DIR}/010-document-checks.md"));
    }

    let agents = root.join(AGENTS_MD);
    if agents.exists() {
        crate::outln!("kept      {AGENTS_MD}");
    } else {
        state::atomic_write(&agents, AGENTS_TEMPLATE.as_bytes())?;
        created.push(AGENTS_MD.to_string());
    }
    state::ensure_ralph_dir(&root)?;
    for c in &created {
        crate::outln!("created   {c}");
    }
    crate::outln!("ignored   .ralph/ (ralph's logs and state; never committed)");
    crate::outln!();
    match existing {
        Some(f) => {
            crate::outln!(
                "Next: check [agent] and [checks] in ralph.toml, `ralph status` to see {f}'s tasks,"
            )
        }
        None => {
            crate::outln!(
                "Next: write one spec per task in specs/, check [agent] and [checks] in ralph.toml,"
            )
        }
    }
    crate::outln!("commit, then run `ralph run`.");
    Ok(crate::exit_code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_config_parses() {
        let c = config::Config::parse(
            Path::new("ralph.toml"),
            &config_text("codex", &["cargo test"], None, true),
        )
        .unwrap();
        assert_eq!(c.agent.preset.map(|p| p.name), Some("codex"));
        assert_eq!(c.sandbox.kind, crate::sandbox::Kind::Bwrap);
        assert_eq!(c.checks.commands, vec!["cargo test"]);
        assert_eq!(c.budget.max_iterations, 50);
        let c = config::Config::parse(
            Path::new("ralph.toml"),
            &config_text("claude", &[], Some("fix_plan.md"), false),
        )
        .unwrap();
        assert_eq!(c.backlog_file.as_deref(), Some(Path::new("fix_plan.md")));
        assert_eq!(c.sandbox.kind, crate::sandbox::Kind::None);
    }

    #[test]
    fn the_example_spec_parses() {
        let s = crate::backlog::spec::parse("010-document-checks", Path::new("x"), EXAMPLE_SPEC).unwrap();
        assert_eq!(s.title, "Document how to run the checks");
    }
}
