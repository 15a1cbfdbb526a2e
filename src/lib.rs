//! ralph: runs a coding agent in a loop over a backlog of specs, one fresh agent process per
//! iteration, and commits only what the project's own checks pass.
//!
//! Subsystems: [`backlog`] (specs and task selection), [`prompt`] (the template), [`agent`]
//! (command line, output scanning, the scripted agent), [`process`] (spawning, timeouts,
//! process groups), [`sandbox`] (where the agent runs, what of the environment reaches it),
//! [`checks`], [`git`], [`learnings`], [`budget`], [`state`] (persisted state,
//! lock), [`durable`] (atomic writes), [`fsx`] (files opened without following links), [`logs`]
//! (on-disk layout), [`record`] (the iteration record), [`runner`] (the loop), [`worktree`] (a
//! checkout's root and its tree watch: staging, commit, revert), [`reporter`] (what the
//! user sees), [`commands`] (the other subcommands).

pub mod agent;
pub mod backlog;
pub mod budget;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod durable;
pub mod error;
pub mod eval;
pub mod events;
pub mod exit_code;
pub mod fault;
pub mod fsx;
pub mod gates;
pub mod git;
pub mod learnings;
pub mod logs;
pub mod notes;
pub mod otlp;
pub mod out;
pub mod parallel;
pub mod process;
pub mod prompt;
pub mod record;
pub mod remote;
pub mod reporter;
pub mod runner;
pub mod runreport;
pub mod sandbox;
pub mod secrets;
pub mod signal;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod term;
pub mod text;
pub mod watch;
pub mod worktree;

use clap::Parser;
use std::process::ExitCode;

/// The whole program: parses the command line, runs the command, prints errors with their
/// hints, and returns the documented exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit_code::USAGE } else { exit_code::OK });
        }
    };
    // The scripted agent stands in for a foreign agent: it shows what it was given.
    if !matches!(cli.command, cli::Command::ScriptedAgent(_)) {
        process::seal_inherited_descriptors();
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RALPH_LOG"))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let result = commands::dispatch(cli);
    // What ralph wrote reaches the disk before it exits (see `state::sync_later`).
    state::flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            for h in &e.hints {
                eprintln!("hint: {h}");
            }
            ExitCode::from(e.code)
        }
    }
}
