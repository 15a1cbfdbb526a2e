//! `ralph tune` (the search, see `crate::eval::tune`), `ralph tune show [ID]` (the front, the
//! lineage, each candidate's diff against today's files with the reflector's diagnosis) and
//! `ralph tune apply ID [CANDIDATE]` (writes a candidate's template and AGENTS.md into the
//! repository, uncommitted, for review).

use crate::error::CliError;
use crate::eval::run::{self, Setup};
use crate::eval::tune::{self, Meta, Settings, Tune};
use crate::eval::{history, suite};
use crate::outln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `ralph tune`'s options.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub suite: Option<PathBuf>,
    pub rounds: u32,
    pub max_cost: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_duration: Option<std::time::Duration>,
    pub split: [u32; 3],
    pub seed: Option<u64>,
    pub trials: u32,
    pub minibatch: u32,
    pub patience: u32,
    pub jobs: u32,
    pub max_iterations: u32,
    pub agent: Option<String>,
    pub reflector: Option<String>,
    pub resume: Option<String>,
}

pub async fn run(cwd: &Path, o: TuneOptions, stop: crate::signal::Stop) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    crate::state::check_ralph_dir(&root)?;
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides { agent: o.agent.clone() })?;
    crate::runner::check_agent(&cfg, &root, o.agent.is_some())?;
    if o.trials == 0 || o.minibatch == 0 || o.jobs == 0 || o.max_iterations == 0 {
        return Err(CliError::usage("--trials, --minibatch, -j and --max-iterations must be at least 1"));
    }
    let settings = match &o.resume {
        Some(id) => {
            let path = tune::dir(&root, id).join("tune.json");
            let bytes = crate::fsx::read(&path).map_err(|e| {
                CliError::usage(format!("no tune {id}: cannot read {}: {e}", path.display()))
                    .hint("`ralph tune show` lists the tunes")
            })?;
            serde_json::from_slice::<Settings>(&bytes)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
        }
        None => Settings {
            id: crate::logs::new_run_id(&root),
            seed: o.seed.unwrap_or_else(|| fastrand::u64(..)),
            split: o.split,
            rounds: o.rounds,
            minibatch: o.minibatch,
            trials: o.trials,
            max_iterations: o.max_iterations,
            patience: o.patience,
            max_cost: o.max_cost,
            max_tokens: o.max_tokens,
            max_duration_ms: o.max_duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            // Kept absolute: a resume may start elsewhere (`-C`).
            suite: o.suite.as_ref().map(|d| cwd.join(d)),
            agent: o.agent.clone(),
            reflector: o.reflector.clone().or_else(|| cfg.tune_reflector.clone()),
            train: Vec::new(),
            val: Vec::new(),
            held: Vec::new(),
            left_out: Vec::new(),
        },
    };
    let cases = match &settings.suite {
        Some(dir) => suite::load(&root, dir)?,
        None => history::cases(&root)?.0,
    };
    if cases.len() < 3 {
        return Err(CliError::usage(format!(
            "{} case(s): tuning needs at least 3 (train, validation and held-out)",
            cases.len()
        )));
    }
    let (_lock, _) = run::exclusive(&root)?;
    let dir = tune::dir(&root, &settings.id);
    crate::fsx::create_dir_all(&dir)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", dir.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find ralph's own program: {e}")))?;
    let setup = Setup {
        root: root.clone(),
        eval_id: settings.id.clone(),
        dir: dir.clone(),
        max_iterations: settings.max_iterations,
        template: None,
        agents_md: None,
        agent: settings.agent.clone(),
        exe,
    };
    let mut t = Tune {
        root: root.clone(),
        dir: dir.clone(),
        s: settings,
        cases: cases.into_iter().map(|c| (c.id.clone(), c)).collect(),
        results: tune::read_results(&dir),
        metas: read_metas(&dir),
        setup,
        jobs: o.jobs,
        cfg,
        started: std::time::Instant::now(),
    };
    t.save_settings()?;
    eprintln!(
        "ralph tune {}: {} case(s), seed {}, {} round(s) at most; everything in {}",
        t.s.id,
        t.cases.len(),
        t.s.seed,
        t.s.rounds,
        dir.display()
    );
    if !t.metas.contains_key(&0) {
        write_baseline(&mut t)?;
    }
    // The baseline on every case: which fail at their start, then the split.
    if t.s.train.is_empty() {
        let all: Vec<String> = t.cases.keys().cloned().collect();
        t.score(0, &all, true).await?;
        let measured: Vec<String> = all.into_iter().filter(|c| !t.s.left_out.contains(c)).collect();
        if measured.len() < 3 {
            return Err(CliError::usage(format!(
                "only {} case(s) fail before the agent runs (left out: {}): tuning needs at least 3",
                measured.len(),
                t.s.left_out.join(", ")
            )));
        }
        let (train, val, held) = tune::split(&measured, t.s.seed, t.s.split);
        (t.s.train, t.s.val, t.s.held) = (train, val, held);
        t.save_settings()?;
    }
    let ended = search(&mut t, &stop).await?;
    finish(&mut t, &ended).await
}

fn read_metas(dir: &Path) -> BTreeMap<u32, Meta> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("candidates")).into_iter().flatten().flatten() {
        if let Ok(bytes) = crate::fsx::read(&e.path().join("meta.json"))
            && let Ok(m) = serde_json::from_slice::<Meta>(&bytes)
        {
            out.insert(m.n, m);
        }
    }
    out
}

/// Candidate 0: today's template and AGENTS.md.
fn write_baseline(t: &mut Tune) -> Result<(), CliError> {
    let template = match &t.cfg.template {
        Some(p) => crate::fsx::read_input(&t.root.join(p))
            .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?,
        None => crate::prompt::DEFAULT_TEMPLATE.to_string(),
    };
    let agents =
        crate::fsx::read_input_following(&t.root.join(crate::learnings::AGENTS_MD)).unwrap_or_default();
    let to = t.candidate_dir(0);
    crate::fsx::create_dir_all(&to)
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", to.display())))?;
    crate::state::atomic_write(&to.join("prompt.md"), template.as_bytes())?;
    crate::state::atomic_write(&to.join("AGENTS.md"), agents.as_bytes())?;
    t.save_meta(Meta {
        n: 0,
        parent: None,
        round: 0,
        status: "baseline".into(),
        reason: None,
        tokens: 0,
        cost_usd: 0.0,
    })
}

/// The rounds; the reason the search ended.
async fn search(t: &mut Tune, stop: &crate::signal::Stop) -> Result<String, CliError> {
    let val = t.s.val.clone();
    t.score(0, &val, false).await?;
    let mut round = t.metas.values().map(|m| m.round).max().unwrap_or(0);
    let mut no_better = 0;
    loop {
        round += 1;
        if round > t.s.rounds {
            return Ok(format!("{} round(s) done", t.s.rounds));
        }
        if stop.cancel.is_cancelled() || stop.after_iteration.is_cancelled() {
            return Ok("stopped".into());
        }
        if let Some(spent) = t.over_budget() {
            return Ok(spent);
        }
        if no_better >= t.s.patience {
            return Ok(format!("no better candidate in {} round(s)", t.s.patience));
        }
        let scores = t.val_scores();
        let front = tune::front(&scores, &val);
        let parent = front[usize::try_from(round - 1).unwrap_or(0) % front.len().max(1)];
        let batch = tune::minibatch(&t.s.train, t.s.seed, round, t.s.minibatch);
        let parent_mb = t.score(parent, &batch, false).await?;
        let n = t.metas.keys().max().copied().unwrap_or(0) + 1;
        eprintln!("round {round}: candidate {n} from candidate {parent}, minibatch {}", batch.join(", "));
        let made = t.reflect(parent, n, &batch, stop).await?;
        let mut meta = t.metas.get(&n).cloned().unwrap_or(Meta {
            n,
            parent: Some(parent),
            round,
            status: String::new(),
            reason: None,
            tokens: 0,
            cost_usd: 0.0,
        });
        meta.round = round;
        if let Err(why) = made {
            eprintln!("round {round}: candidate {n} rejected: {why}");
            meta.status = "rejected".into();
            meta.reason = Some(why);
            t.save_meta(meta)?;
            no_better += 1;
            continue;
        }
        meta.status = "trying".into();
        t.save_meta(meta.clone())?;
        let child_mb = t.score(n, &batch, false).await?;
        if tune::total(&child_mb) < tune::total(&parent_mb) {
            meta.status = "worse".into();
            meta.reason = Some(format!(
                "passed {} trial(s) of the minibatch, its parent {}",
                tune::total(&child_mb),
                tune::total(&parent_mb)
            ));
            t.save_meta(meta)?;
            no_better += 1;
            continue;
        }
        let best_before = t.val_scores().values().map(tune::total).max().unwrap_or(0);
        meta.status = "kept".into();
        t.save_meta(meta)?;
        let child_val = t.score(n, &val, false).await?;
        eprintln!(
            "round {round}: candidate {n} kept: {} validation trial(s) passed (best before: {best_before})",
            tune::total(&child_val)
        );
        if tune::total(&child_val) > best_before { no_better = 0 } else { no_better += 1 }
    }
}

/// The front on the held-out cases; `front.json`, `summary.md`, and the report.
async fn finish(t: &mut Tune, ended: &str) -> Result<u8, CliError> {
    let val = t.s.val.clone();
    let held = t.s.held.clone();
    let front = tune::front(&t.val_scores(), &val);
    let mut held_scores: BTreeMap<u32, u32> = BTreeMap::new();
    for c in std::iter::once(0).chain(front.iter().copied()) {
        let s = t.score(c, &held, false).await?;
        held_scores.insert(c, tune::total(&s));
    }
    let bytes = serde_json::to_vec_pretty(&front).map_err(|e| CliError::failure(e.to_string()))?;
    crate::state::atomic_write(&t.dir.join("front.json"), &bytes)?;
    let trials = u32::try_from(held.len()).unwrap_or(u32::MAX) * t.s.trials;
    let best = front
        .iter()
        .copied()
        .max_by_key(|c| (held_scores.get(c).copied().unwrap_or(0), std::cmp::Reverse(*c)))
        .unwrap_or(0);
    let rate = |c: u32| {
        if trials == 0 {
            0.0
        } else {
            f64::from(held_scores.get(&c).copied().unwrap_or(0)) / f64::from(trials)
        }
    };
    let summary = format!(
        "# ralph tune {}\n\nEnded: {ended}.\n\nHeld-out ({} case(s) × {} trial(s)): baseline {:.2}, best (candidate {best}) {:.2}.\n\nFront on validation: {}.\n\n{}",
        t.s.id,
        held.len(),
        t.s.trials,
        rate(0),
        rate(best),
        front.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        lineage(t)
    );
    crate::state::atomic_write(&t.dir.join("summary.md"), summary.as_bytes())?;
    outln!("ralph tune {}: {ended}", t.s.id);
    outln!(
        "held-out pass rate: baseline {:.2} → best {:.2} (candidate {best}, {} trial(s))",
        rate(0),
        rate(best),
        trials
    );
    outln!(
        "see `ralph tune show {}`; `ralph tune apply {} {best}` writes it into the repository",
        t.s.id,
        t.s.id
    );
    Ok(crate::exit_code::OK)
}

fn lineage(t: &Tune) -> String {
    let mut out = String::from("| candidate | parent | round | status | why |\n|---|---|---|---|---|\n");
    for m in t.metas.values() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            m.n,
            m.parent.map(|p| p.to_string()).unwrap_or_default(),
            m.round,
            m.status,
            m.reason.clone().unwrap_or_default().replace('|', "/")
        ));
    }
    out
}

/// `ralph tune show [ID]`: the latest tune without an id.
pub fn show(cwd: &Path, id: Option<&str>) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let id = match id {
        Some(id) => id.to_string(),
        None => latest(&root).ok_or_else(|| CliError::usage("no tune yet").hint("run `ralph tune` first"))?,
    };
    let dir = tune::dir(&root, &id);
    let bytes = crate::fsx::read(&dir.join("tune.json"))
        .map_err(|e| CliError::usage(format!("no tune {id}: {e}")))?;
    let s: Settings =
        serde_json::from_slice(&bytes).map_err(|e| CliError::usage(format!("tune {id}: {e}")))?;
    let metas = read_metas(&dir);
    let results = tune::read_results(&dir);
    let front: Vec<u32> = crate::fsx::read(&dir.join("front.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    outln!(
        "tune {id}: seed {}, split {}/{}/{}, train {}, validation {}, held-out {}",
        s.seed,
        s.split[0],
        s.split[1],
        s.split[2],
        s.train.len(),
        s.val.len(),
        s.held.len()
    );
    if !s.left_out.is_empty() {
        outln!("left out (their check passes before the agent runs): {}", s.left_out.join(", "));
    }
    outln!(
        "front: {}",
        if front.is_empty() {
            "(not scored yet)".to_string()
        } else {
            front.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        }
    );
    let score = |n: u32, split: &[String]| {
        let rows: Vec<_> = results.iter().filter(|r| r.candidate == n && split.contains(&r.case)).collect();
        format!("{}/{}", rows.iter().filter(|r| r.passed).count(), rows.len())
    };
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides::default()).ok();
    let today_template = cfg
        .as_ref()
        .and_then(|c| c.template.clone())
        .map(|p| root.join(p))
        .unwrap_or_else(|| PathBuf::from("templates/prompt.md (built in)"));
    // Today's files, to diff each candidate against: the template ralph.toml names (or the
    // built-in one) and AGENTS.md as they are now.
    let today =
        tempfile::tempdir().map_err(|e| CliError::failure(format!("cannot make a scratch folder: {e}")))?;
    let template_now = cfg
        .as_ref()
        .and_then(|c| c.template.as_ref())
        .and_then(|p| crate::fsx::read_input(&root.join(p)).ok())
        .unwrap_or_else(|| crate::prompt::DEFAULT_TEMPLATE.to_string());
    let agents_now =
        crate::fsx::read_input_following(&root.join(crate::learnings::AGENTS_MD)).unwrap_or_default();
    std::fs::write(today.path().join("prompt.md"), template_now)
        .and_then(|()| std::fs::write(today.path().join("AGENTS.md"), agents_now))
        .map_err(|e| CliError::failure(format!("cannot write a scratch file: {e}")))?;
    for m in metas.values() {
        outln!();
        outln!(
            "candidate {} (parent {}, round {}): {}{} · validation {} · held-out {}",
            m.n,
            m.parent.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            m.round,
            m.status,
            m.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
            score(m.n, &s.val),
            score(m.n, &s.held)
        );
        let cand = dir.join("candidates").join(m.n.to_string());
        if let Ok(d) = crate::fsx::read_to_string(&cand.join("DIAGNOSIS.md")) {
            outln!("  why: {}", d.trim().replace('\n', "\n       "));
        }
        if m.n > 0 {
            for f in ["prompt.md", "AGENTS.md"] {
                let diff = crate::git::diff_files(&root, &today.path().join(f), &cand.join(f));
                if !diff.trim().is_empty() {
                    outln!(
                        "  {f} against today's ({}):",
                        if f == "prompt.md" { today_template.display().to_string() } else { f.to_string() }
                    );
                    for l in diff.lines().filter(|l| !l.starts_with("diff ") && !l.starts_with("index ")) {
                        outln!("    {l}");
                    }
                }
            }
        }
    }
    Ok(crate::exit_code::OK)
}

fn latest(root: &Path) -> Option<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root.join(crate::state::RALPH_DIR).join("tune"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids.pop()
}

/// `ralph tune apply ID [CANDIDATE]`: the best of the front without a candidate.
pub fn apply(cwd: &Path, id: &str, candidate: Option<u32>) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let dir = tune::dir(&root, id);
    if !dir.join("tune.json").exists() {
        return Err(CliError::usage(format!("no tune {id}")).hint("`ralph tune show` names the latest"));
    }
    let n = match candidate {
        Some(n) => n,
        None => crate::fsx::read(&dir.join("front.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<u32>>(&b).ok())
            .and_then(|f| f.into_iter().max())
            .ok_or_else(|| CliError::usage(format!("tune {id} has no front yet: name the candidate")))?,
    };
    let cand = dir.join("candidates").join(n.to_string());
    let template = crate::fsx::read_to_string(&cand.join("prompt.md"))
        .map_err(|e| CliError::usage(format!("tune {id} has no candidate {n}: {e}")))?;
    let cfg = crate::runner::load_config(&root, &crate::config::Overrides::default())?;
    let (path, configured) = match &cfg.template {
        Some(p) => (root.join(p), true),
        None => (root.join("prompt.md"), false),
    };
    crate::state::atomic_write(&path, template.as_bytes())?;
    outln!("wrote {} (candidate {n} of tune {id})", path.display());
    if !configured {
        outln!("hint: ralph uses it once ralph.toml says so: [prompt] template = \"prompt.md\"");
    }
    if let Ok(md) = crate::fsx::read_to_string(&cand.join("AGENTS.md")) {
        let today =
            crate::fsx::read_input_following(&root.join(crate::learnings::AGENTS_MD)).unwrap_or_default();
        if md != today {
            let marked = format!(
                "<!-- tuned by `ralph tune` {id}, candidate {n}: the why is in .ralph/tune/{id}/candidates/{n}/DIAGNOSIS.md -->\n{md}"
            );
            crate::state::atomic_write(&root.join(crate::learnings::AGENTS_MD), marked.as_bytes())?;
            outln!("wrote {} (marked as tuned)", crate::learnings::AGENTS_MD);
        }
    }
    outln!("nothing is committed: review with `git diff`, then commit");
    Ok(crate::exit_code::OK)
}
