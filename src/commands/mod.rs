//! The subcommands other than the loop itself, and the dispatch from the parsed command line.

pub mod demo;
pub mod deploy;
pub mod doctor;
pub mod eval;
pub mod import;
pub mod init;
pub mod learnings;
pub mod logs;
pub mod note;
pub mod plan;
pub mod report;
pub mod shell;
pub mod stats;
pub mod status;
pub mod stop;
pub mod tune;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::reporter::Human;
use crate::runner::{self, RunOptions};
use std::path::PathBuf;

/// Ctrl-C, SIGTERM and `ralph stop`, for the commands that run agents.
fn stop() -> Result<crate::signal::Stop, CliError> {
    crate::signal::install().map_err(|e| CliError::failure(format!("cannot install signal handlers: {e}")))
}

/// Runs the parsed command; returns the exit code.
pub fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let cwd = match cli.directory {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| CliError::failure(format!("cannot read the current directory: {e}")))?,
    };
    match cli.command {
        Command::Init(a) => init::run(&cwd, a.force, a.agent.as_deref()),
        Command::Run(a) => block_on(async move {
            let stop = stop()?;
            let opts = RunOptions {
                cwd,
                max_iterations: a.max_iterations,
                max_duration: a.max_duration,
                allow_dirty: a.allow_dirty,
                agent: a.agent,
                new_run: a.new_run,
                watch: a.watch,
                max_tokens: a.max_tokens,
                max_cost: a.max_cost,
                jobs: a.jobs,
            };
            crate::parallel::run(opts, &mut Human::new(), stop).await
        }),
        Command::Status(a) if a.remote => crate::remote::status(&cwd, a.json),
        Command::Status(a) => status::run(&cwd, a.json),
        Command::Doctor(a) => doctor::run(&cwd, a.agent),
        Command::Stop(a) => stop::run(&cwd, a.now),
        Command::Note(a) => note::run(&cwd, &a),
        Command::Learnings(a) => learnings::run(&cwd, &a),
        Command::Import(a) => import::run(&cwd, &a.file),
        Command::Plan(a) => block_on(async move {
            let stop = stop()?;
            plan::run(&cwd, a.agent, &a.request.join(" "), stop).await
        }),
        Command::Logs(a) => logs::run(&cwd, &a),
        Command::Stats(a) if a.remote => crate::remote::stats(&cwd, a.json),
        Command::Stats(a) => stats::run(&cwd, &a),
        Command::Report(a) => report::run(&cwd, &a),
        Command::Tune(a) => match a.action {
            Some(crate::cli::TuneAction::Show { id }) => tune::show(&cwd, id.as_deref()),
            Some(crate::cli::TuneAction::Apply { id, candidate }) => tune::apply(&cwd, &id, candidate),
            None => block_on(async move {
                let stop = stop()?;
                let opts = tune::TuneOptions {
                    suite: a.suite,
                    rounds: a.rounds,
                    max_cost: a.max_cost,
                    max_tokens: a.max_tokens,
                    max_duration: a.max_duration,
                    split: a.split,
                    seed: a.seed,
                    trials: a.trials,
                    minibatch: a.minibatch,
                    patience: a.patience,
                    jobs: a.jobs,
                    max_iterations: a.max_iterations,
                    agent: a.agent,
                    reflector: a.reflector,
                    resume: a.resume,
                };
                tune::run(&cwd, opts, stop).await
            }),
        },
        Command::Worker(a) => block_on(async move {
            let stop = stop()?;
            let opts = crate::remote::WorkerOptions { until_empty: a.until_empty, max_tasks: a.max_tasks };
            crate::remote::run(&cwd, opts, stop).await
        }),
        Command::Demo(a) => block_on(demo::run(a.dir)),
        Command::Eval(a) => block_on(async move {
            let stop = stop()?;
            let opts = eval::EvalOptions {
                suite: a.suite,
                trials: a.trials,
                max_iterations: a.max_iterations,
                jobs: a.jobs,
                json: a.json,
                template: a.template,
                agents_md: a.agents_md,
                agent: a.agent,
            };
            eval::run(&cwd, opts, stop).await
        }),
        Command::WorkSlot(a) => block_on(async move {
            let stop = stop()?;
            let task = runner::worker::SlotTask {
                slot: cwd,
                task: a.task,
                run_id: a.run_id,
                iteration: a.iteration,
                run_dir: a.run_dir,
                worker: a.worker,
                time_left: a.time_left_ms.map(std::time::Duration::from_millis),
                agent: a.agent,
                agent_name: a.agent_name,
                template: a.template,
            };
            runner::worker::run(task, &mut Human::new(), stop).await
        }),
        Command::ScriptedAgent(a) => {
            let code = crate::agent::scripted::main(
                &a.scenario,
                a.prompt,
                a.prompt_file.map(|p: PathBuf| cwd.join(p)),
            );
            // The scripted agent's exit code is part of its scenario; pass it through whole.
            std::process::exit(code)
        }
        Command::Deploy(a) => deploy::run(&cwd, &a),
        Command::Completions(a) => shell::completions(a.shell),
        Command::Man(a) => shell::man(a.out_dir.map(|d| cwd.join(d)).as_deref()),
    }
}

fn block_on<F: std::future::Future<Output = Result<u8, CliError>>>(f: F) -> Result<u8, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}
