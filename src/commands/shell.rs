//! `ralph completions SHELL` and `ralph man`: shell completion scripts and man pages, generated
//! from the command-line definition in [`crate::cli`], so they never drift from it.

use crate::cli::Cli;
use crate::error::CliError;
use crate::exit_code;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ralph", &mut script);
    print(&script)
}

/// Prints `ralph.1` to stdout, or writes it and one page per subcommand into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> Result<u8, CliError> {
    let page = main_page().map_err(|e| CliError::failure(format!("cannot render the man page: {e}")))?;
    let Some(dir) = out_dir else { return print(&page) };
    let cannot =
        |e: std::io::Error| CliError::failure(format!("cannot write man pages into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(cannot)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(cannot)?;
    // The generated ralph.1 lacks the sections only the main page has.
    std::fs::write(dir.join("ralph.1"), &page).map_err(cannot)?;
    eprintln!("wrote ralph.1 and a page per subcommand into {}", dir.display());
    Ok(exit_code::OK)
}

/// ralph.1: what clap knows, plus the exit codes (a contract) and the environment.
fn main_page() -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut extra = roff::Roff::new();
    extra.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        extra.control("TP", []).text([roff::bold(code.to_string())]).text([roff::roman(*meaning)]);
    }
    extra.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        extra.control("TP", []).text([roff::bold(*name)]).text([roff::roman(*meaning)]);
    }
    extra.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

const EXIT_STATUS: &[(u8, &str)] = &[
    (exit_code::OK, "The backlog is done (other commands: success)."),
    (exit_code::FAILURE, "A runtime failure: git failed, a disk error."),
    (
        exit_code::USAGE,
        "A usage or configuration error: bad flags, a malformed ralph.toml, spec or template, not a git repository, a dirty tree, a missing agent binary, another run in progress. Nothing was changed.",
    ),
    (exit_code::BUDGET, "A budget ran out with work left, or a circuit breaker stopped the run."),
    (exit_code::BLOCKED, "Nothing runnable is left, but tasks are blocked (or wait on blocked tasks)."),
    (exit_code::AGENT, "The agent cannot work: its authentication failed or its model does not exist."),
    (exit_code::INTERRUPTED, "Interrupted: Ctrl-C, SIGTERM, SIGHUP, or `ralph stop`."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("RALPH_LOG", "ralph's own diagnostics on stderr, e.g. RALPH_LOG=debug."),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "An OTLP/HTTP collector that `ralph run` sends its traces to (off when unset, and with OTEL_SDK_DISABLED=true).",
    ),
    ("CI", "When set, `ralph run` prints timestamped lines instead of a spinner, even on a terminal."),
];

/// Writes to stdout; a reader that went away (`ralph man | head`) is no error.
fn print(bytes: &[u8]) -> Result<u8, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::failure(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(exit_code::OK),
    }
}
