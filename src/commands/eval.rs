//! `ralph eval`: scores today's prompt template and AGENTS.md (or a candidate's) on an eval
//! suite: a folder of cases (`--suite DIR`) or the tasks earlier runs finished. Prints per case
//! and overall the pass rate, iterations, tokens, cost and time, or one JSON object; keeps
//! everything under `.ralph/eval/<id>/` (`summary.json`, each trial's iteration folders).
//!
//! Invariants: one evaluation at a time per repository (`.ralph/eval/lock`), since each starts
//! by removing the scratch checkouts a killed one left; a trial that fails to run ends the
//! evaluation only once the running trials have ended and removed their checkouts.

use crate::error::CliError;
use crate::eval::run::{self, Setup, Trial};
use crate::eval::{Case, history, suite};
use crate::outln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `ralph eval`'s options.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub suite: Option<PathBuf>,
    pub trials: u32,
    pub max_iterations: u32,
    pub jobs: u32,
    pub json: bool,
    pub template: Option<PathBuf>,
    pub agents_md: Option<PathBuf>,
    pub agent: Option<String>,
}

/// One case's figures over its trials.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseScore {
    pub id: String,
    /// Trials that passed.
    pub passed: u32,
    pub trials: u32,
    /// Iterations per trial, on average.
    pub iterations: f64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// Trials a gate caught gaming the checks (scored 0).
    pub gamed: u32,
}

/// The evaluation's result (`--json`, and `summary.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub id: String,
    /// Passed trials over all trials, 0 to 1.
    pub score: f64,
    pub cases: Vec<CaseScore>,
    /// Cases not scored, and why.
    pub left_out: Vec<LeftOut>,
    pub trials: Vec<Trial>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeftOut {
    pub id: String,
    pub why: String,
}

pub async fn run(cwd: &Path, opts: EvalOptions, stop: crate::signal::Stop) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides { agent: opts.agent.clone() })?;
    crate::runner::check_agent(&cfg, &root, opts.agent.is_some())?;
    if opts.trials == 0 || opts.max_iterations == 0 || opts.jobs == 0 {
        return Err(CliError::usage("--trials, --max-iterations and -j must be at least 1"));
    }
    let template = match &opts.template {
        Some(t) => {
            let abs = std::path::absolute(t).map_err(|e| CliError::usage(format!("{}: {e}", t.display())))?;
            crate::prompt::Template::load(&root, Some(&abs))?;
            Some(abs)
        }
        None => None,
    };
    let agents_md = match &opts.agents_md {
        Some(p) => Some(
            crate::fsx::read_input_following(p)
                .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let (cases, mut left_out) = match &opts.suite {
        Some(dir) => (suite::load(&root, &cwd.join(dir))?, Vec::new()),
        None => {
            let (cases, said) = history::cases(&root)?;
            (cases, said.into_iter().map(|why| LeftOut { id: String::new(), why }).collect())
        }
    };
    if cases.is_empty() {
        return Err(CliError::usage("no case to evaluate").hint(match &opts.suite {
            Some(_) => "add one folder per case to the suite: spec.md and an executable check",
            None => {
                "ralph builds cases from the tasks earlier runs finished: run some first, or pass --suite DIR"
            }
        }));
    }
    let (_lock, evals) = run::exclusive(&root)?;
    let eval_id = unused_id(&evals, &crate::logs::new_run_id(&root));
    let dir = evals.join(&eval_id);
    crate::fsx::create_dir_all(&dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find ralph's own program: {e}")))?;
    let setup = Setup {
        root: root.clone(),
        eval_id: eval_id.clone(),
        dir: dir.clone(),
        max_iterations: opts.max_iterations,
        template,
        agents_md,
        agent: opts.agent.clone(),
        exe,
    };
    if !opts.json {
        eprintln!(
            "ralph eval {eval_id}: {} case(s) × {} trial(s), at most {} iteration(s) each; agent `{}`",
            cases.len(),
            opts.trials,
            opts.max_iterations,
            cfg.agent.command.join(" ")
        );
    }
    let trials = run_all(&setup, &cases, &opts, &stop).await;
    // Each trial removes its own checkout; the evaluation's scratch folder goes with them.
    run::remove_scratch(&root);
    let trials = trials?;
    let summary = summarize(&eval_id, &cases, trials, &mut left_out);
    let bytes = serde_json::to_vec_pretty(&summary)
        .map_err(|e| CliError::failure(format!("cannot write the summary: {e}")))?;
    crate::state::atomic_write(&dir.join("summary.json"), &bytes)?;
    if opts.json {
        outln!("{}", String::from_utf8_lossy(&bytes));
    } else {
        print_human(&summary);
    }
    Ok(crate::exit_code::OK)
}

/// `base`, or `base-2`, `base-3`... if an evaluation has that folder already: ids are stamped
/// to the second, and a second evaluation in the same second must not write into the first's
/// folder (its summary, its trials' logs and results).
fn unused_id(evals: &Path, base: &str) -> String {
    let mut id = base.to_string();
    let mut n = 2;
    while std::fs::symlink_metadata(evals.join(&id)).is_ok() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// Every trial of every case, `opts.jobs` at a time; a case's first trial checks the case
/// fails at its start (and the case's other trials wait for that answer).
async fn run_all(
    setup: &Setup,
    cases: &[Case],
    opts: &EvalOptions,
    stop: &crate::signal::Stop,
) -> Result<Vec<Trial>, CliError> {
    let mut out = Vec::new();
    // First trials first: a case whose check passes at its start is left out before more
    // trials are spent on it.
    let firsts: Vec<(Case, u32, bool)> = cases.iter().map(|c| (c.clone(), 1, true)).collect();
    let firsts = in_parallel(setup, firsts, opts.jobs, opts.json, stop).await?;
    let measured: Vec<&Case> = cases
        .iter()
        .filter(|c| !firsts.iter().any(|t| t.case == c.id && (t.passes_at_start || t.broken.is_some())))
        .collect();
    out.extend(firsts);
    let rest: Vec<(Case, u32, bool)> =
        measured.iter().flat_map(|c| (2..=opts.trials).map(move |n| ((*c).clone(), n, false))).collect();
    out.extend(in_parallel(setup, rest, opts.jobs, opts.json, stop).await?);
    Ok(out)
}

async fn in_parallel(
    setup: &Setup,
    work: Vec<(Case, u32, bool)>,
    jobs: u32,
    quiet: bool,
    stop: &crate::signal::Stop,
) -> Result<Vec<Trial>, CliError> {
    let mut set = tokio::task::JoinSet::new();
    let mut queue = work.into_iter();
    let mut out = Vec::new();
    let mut failed: Option<CliError> = None;
    loop {
        // Ctrl-C reaches the workers too (they stop their agents and put their checkouts
        // back); no new trial starts, and the running ones end and clean up.
        if stop.cancel.is_cancelled() && failed.is_none() {
            failed = Some(CliError {
                code: crate::exit_code::INTERRUPTED,
                message: "interrupted; the trials under way were stopped and their scratch checkouts removed"
                    .into(),
                hints: Vec::new(),
            });
        }
        while failed.is_none() && set.len() < jobs as usize {
            let Some((case, n, check_start)) = queue.next() else { break };
            set.spawn(run::trial(setup.clone(), case, n, check_start));
        }
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            _ = stop.cancel.cancelled(), if failed.is_none() => continue,
        };
        let Some(joined) = joined else { break };
        match joined.map_err(|e| CliError::failure(format!("a trial failed: {e}"))).and_then(|t| t) {
            Ok(t) => {
                if !quiet {
                    eprintln!("{}", trial_line(&t));
                }
                out.push(t);
            }
            // No new trial starts, and the running ones end as they would: dropped, their
            // workers would be killed outright, with no chance to stop their agents (left
            // running in a removed checkout) nor to remove their checkouts.
            Err(e) => {
                if !quiet && !set.is_empty() {
                    eprintln!("error: {e}; waiting for the {} trial(s) still running to end", set.len());
                }
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn trial_line(t: &Trial) -> String {
    if let Some(why) = &t.broken {
        return format!("case {}: cannot be scored ({why}); left out", t.case);
    }
    if t.passes_at_start {
        return format!("case {}: its check passes before the agent runs; left out", t.case);
    }
    let verdict = match (t.passed, t.gamed) {
        (true, _) => "passed",
        (false, true) => "gamed the checks (scored 0)",
        (false, false) => "failed",
    };
    let mut line = format!(
        "case {} · trial {}: {verdict} in {} iteration(s), {}",
        t.case,
        t.trial,
        t.iterations,
        crate::runner::human(std::time::Duration::from_millis(t.duration_ms))
    );
    if let Some(note) = &t.note {
        line.push_str(&format!(" ({note})"));
    }
    line
}

fn summarize(eval_id: &str, cases: &[Case], trials: Vec<Trial>, left_out: &mut Vec<LeftOut>) -> Summary {
    let mut by_case: BTreeMap<&str, Vec<&Trial>> = BTreeMap::new();
    for t in &trials {
        by_case.entry(t.case.as_str()).or_default().push(t);
    }
    let mut scores = Vec::new();
    for c in cases {
        let ts = by_case.get(c.id.as_str()).cloned().unwrap_or_default();
        if ts.iter().any(|t| t.passes_at_start) {
            left_out.push(LeftOut { id: c.id.clone(), why: "its check passes before the agent runs".into() });
            continue;
        }
        if let Some(why) = ts.iter().find_map(|t| t.broken.clone()) {
            left_out.push(LeftOut { id: c.id.clone(), why: format!("it cannot be scored: {why}") });
            continue;
        }
        let n = u32::try_from(ts.len()).unwrap_or(u32::MAX);
        scores.push(CaseScore {
            id: c.id.clone(),
            passed: u32::try_from(ts.iter().filter(|t| t.passed).count()).unwrap_or(u32::MAX),
            trials: n,
            iterations: if n == 0 {
                0.0
            } else {
                f64::from(ts.iter().map(|t| t.iterations).sum::<u32>()) / f64::from(n)
            },
            tokens: ts.iter().map(|t| t.tokens).sum(),
            cost_usd: ts.iter().map(|t| t.cost_usd).sum(),
            duration_ms: ts.iter().map(|t| t.duration_ms).sum(),
            gamed: u32::try_from(ts.iter().filter(|t| t.gamed).count()).unwrap_or(u32::MAX),
        });
    }
    let (passed, total) = scores.iter().fold((0u32, 0u32), |(p, n), c| (p + c.passed, n + c.trials));
    Summary {
        id: eval_id.to_string(),
        score: if total == 0 { 0.0 } else { f64::from(passed) / f64::from(total) },
        cases: scores,
        left_out: std::mem::take(left_out),
        trials,
    }
}

fn print_human(s: &Summary) {
    for c in &s.cases {
        outln!(
            "{}: {}/{} passed · {:.1} iteration(s) · {} tokens · ${:.2} · {}{}",
            c.id,
            c.passed,
            c.trials,
            c.iterations,
            crate::budget::si(c.tokens),
            c.cost_usd,
            crate::runner::human(std::time::Duration::from_millis(c.duration_ms)),
            if c.gamed > 0 { format!(" · {} gamed", c.gamed) } else { String::new() }
        );
    }
    for l in &s.left_out {
        if l.id.is_empty() {
            outln!("left out: {}", l.why);
        } else {
            outln!("left out: {} ({})", l.id, l.why);
        }
    }
    let (passed, total) = s.cases.iter().fold((0, 0), |(p, n), c| (p + c.passed, n + c.trials));
    outln!("score: {:.2} ({passed}/{total} trials passed)", s.score);
}
