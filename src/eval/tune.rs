//! `ralph tune`: a GEPA-style search over the agent's instructions (the prompt template and
//! AGENTS.md). Cases are split (by a recorded seed) into train, validation and held-out. Each
//! round picks a parent from the Pareto front over the validation cases, runs it on a train
//! minibatch, has a *reflector* agent read the failed trials' traces and edit a copy of the
//! parent's files, and keeps the child if it does no worse on that minibatch; a kept child is
//! scored on validation and the front updated. At the end the front is scored once on the
//! held-out cases, which the reflector never saw.
//!
//! Invariants: everything lives under `.ralph/tune/<id>/` — `tune.json` (settings, seed,
//! split), `candidates/<n>/` (`prompt.md`, `AGENTS.md`, `DIAGNOSIS.md`, `meta.json`),
//! `results.tsv` (one line per trial, appended as each ends), `front.json`, `summary.md` — and
//! is enough to resume after a kill (`--resume ID`): a trial whose line is in `results.tsv` is
//! never run again. The user's files change only through `ralph tune apply`, uncommitted.

use super::Case;
use super::run::{self, Setup, Trial};
use crate::error::CliError;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The reflector's instructions (built in).
pub const REFLECT_TEMPLATE: &str = include_str!("../../templates/reflect.md");

/// What a candidate template must keep: without them the agent would not see its task or know
/// how to say it is done.
pub const REQUIRED: [&str; 2] = ["task.spec", "promise"];

/// `ralph tune`'s settings, kept in `tune.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub id: String,
    pub seed: u64,
    /// Percentages of train, validation, held-out.
    pub split: [u32; 3],
    pub rounds: u32,
    pub minibatch: u32,
    pub trials: u32,
    pub max_iterations: u32,
    /// Rounds without a better validation score before the search stops.
    pub patience: u32,
    pub max_cost: Option<f64>,
    pub max_tokens: Option<u64>,
    /// Wall-clock time allowed to this session of the search, in milliseconds.
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
    pub suite: Option<PathBuf>,
    pub agent: Option<String>,
    /// The reflector's preset, when not the configured agent.
    pub reflector: Option<String>,
    /// Case ids per split, fixed once the baseline has run.
    #[serde(default)]
    pub train: Vec<String>,
    #[serde(default)]
    pub val: Vec<String>,
    #[serde(default)]
    pub held: Vec<String>,
    /// Cases whose check passed before the agent ran: they measure nothing.
    #[serde(default)]
    pub left_out: Vec<String>,
}

/// A candidate's record (`candidates/<n>/meta.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub n: u32,
    pub parent: Option<u32>,
    pub round: u32,
    /// `baseline`, `kept`, `worse` (no better than its parent on the minibatch) or `rejected`.
    pub status: String,
    pub reason: Option<String>,
    /// What the reflector's session spent.
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
}

/// One line of `results.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub candidate: u32,
    pub case: String,
    pub trial: u32,
    pub passed: bool,
    pub iterations: u32,
    pub tokens: u64,
    pub cost_usd: f64,
}

pub const RESULTS_HEADER: &str =
    "candidate\tparent\tsplit\tcase\ttrial\tpassed\titerations\ttokens\tcost_usd";

/// The tune's folder.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(crate::state::RALPH_DIR).join("tune").join(id)
}

/// Reads `results.tsv` (lines cut by a kill are skipped).
pub fn read_results(dir: &Path) -> Vec<Row> {
    let text = crate::fsx::read_to_string(&dir.join("results.tsv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 9 {
                return None;
            }
            Some(Row {
                candidate: f[0].parse().ok()?,
                case: f[3].to_string(),
                trial: f[4].parse().ok()?,
                passed: f[5] == "1",
                iterations: f[6].parse().ok()?,
                tokens: f[7].parse().ok()?,
                cost_usd: f[8].parse().ok()?,
            })
        })
        .collect()
}

/// Which split each case belongs to, by a hash of the seed and its id: the same seed and cases
/// give the same split, whatever their order.
pub fn split(cases: &[String], seed: u64, pct: [u32; 3]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut keyed: Vec<(u64, &String)> = cases.iter().map(|c| (hash(seed, c), c)).collect();
    keyed.sort();
    let n = keyed.len();
    let total = pct.iter().sum::<u32>().max(1) as usize;
    let mut n_val = (n * pct[1] as usize).div_ceil(total);
    let mut n_held = (n * pct[2] as usize).div_ceil(total);
    // Every part gets a case when there are enough; train keeps at least one.
    if n >= 3 {
        n_val = n_val.max(1);
        n_held = n_held.max(1);
    }
    while n_val + n_held >= n && (n_val > 0 || n_held > 0) {
        if n_held >= n_val && n_held > 0 { n_held -= 1 } else { n_val -= 1 }
    }
    let ids: Vec<String> = keyed.into_iter().map(|(_, c)| c.clone()).collect();
    let train = ids[..n - n_val - n_held].to_vec();
    let val = ids[n - n_val - n_held..n - n_held].to_vec();
    let held = ids[n - n_held..].to_vec();
    (train, val, held)
}

/// FNV-1a over the seed and the text: stable across builds and machines.
fn hash(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Candidates on the Pareto front: none other passes at least as many trials on every case
/// and more on one. `scores`: candidate → case → passed trials. Ties keep the older.
pub fn front(scores: &BTreeMap<u32, BTreeMap<String, u32>>, cases: &[String]) -> Vec<u32> {
    let vec =
        |c: &u32| -> Vec<u32> { cases.iter().map(|k| scores[c].get(k).copied().unwrap_or(0)).collect() };
    let all: Vec<u32> = scores.keys().copied().collect();
    all.iter()
        .copied()
        .filter(|a| {
            let va = vec(a);
            !all.iter().any(|b| {
                let vb = vec(b);
                b != a
                    && vb.iter().zip(&va).all(|(x, y)| x >= y)
                    && (vb.iter().zip(&va).any(|(x, y)| x > y) || (vb == va && b < a))
            })
        })
        .collect()
}

/// The search under way.
pub struct Tune {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub s: Settings,
    pub cases: BTreeMap<String, Case>,
    pub results: Vec<Row>,
    pub metas: BTreeMap<u32, Meta>,
    pub setup: Setup,
    pub jobs: u32,
    pub cfg: crate::config::Config,
    /// When this session of the search began (`--max-duration` counts from it).
    pub started: std::time::Instant,
}

impl Tune {
    /// The files of candidate `n`.
    pub fn candidate_dir(&self, n: u32) -> PathBuf {
        self.dir.join("candidates").join(n.to_string())
    }

    fn spent(&self) -> (u64, f64) {
        let (t, c) = self.results.iter().fold((0, 0.0), |(t, c), r| (t + r.tokens, c + r.cost_usd));
        self.metas.values().fold((t, c), |(t, c), m| (t + m.tokens, c + m.cost_usd))
    }

    /// Whether a budget is spent, in words.
    pub fn over_budget(&self) -> Option<String> {
        let (tokens, cost) = self.spent();
        if let Some(max) = self.s.max_cost
            && cost >= max
        {
            return Some(format!("--max-cost ${max:.2} spent (${cost:.2})"));
        }
        if let Some(max) = self.s.max_tokens
            && tokens >= max
        {
            return Some(format!("--max-tokens {max} spent ({tokens})"));
        }
        if let Some(max) = self.s.max_duration_ms
            && self.started.elapsed().as_millis() >= u128::from(max)
        {
            return Some(format!(
                "--max-duration {} spent",
                crate::runner::human(std::time::Duration::from_millis(max))
            ));
        }
        None
    }

    pub fn split_of(&self, case: &str) -> &'static str {
        if self.s.val.iter().any(|c| c == case) {
            "val"
        } else if self.s.held.iter().any(|c| c == case) {
            "held"
        } else {
            "train"
        }
    }

    /// Candidate `n`'s passed trials per case of `ids`, running the trials `results.tsv` does
    /// not have yet. With `check_start`, a case's first trial first checks the case fails at
    /// its start (the baseline's pass).
    pub async fn score(
        &mut self,
        n: u32,
        ids: &[String],
        check_start: bool,
    ) -> Result<BTreeMap<String, u32>, CliError> {
        let mut todo: Vec<(Case, u32, bool)> = Vec::new();
        for id in ids {
            let Some(case) = self.cases.get(id) else { continue };
            for t in 1..=self.s.trials {
                if !self.results.iter().any(|r| r.candidate == n && &r.case == id && r.trial == t) {
                    todo.push((case.clone(), t, check_start && t == 1));
                }
            }
        }
        let mut setup = self.setup.clone();
        let files = self.candidate_dir(n);
        setup.template = Some(files.join("prompt.md"));
        setup.agents_md = crate::fsx::read_to_string(&files.join("AGENTS.md")).ok();
        setup.dir = self.dir.join("trials").join(format!("c{n}"));
        let mut set = tokio::task::JoinSet::new();
        let mut queue = todo.into_iter();
        loop {
            while set.len() < self.jobs as usize {
                let Some((case, t, check)) = queue.next() else { break };
                set.spawn(run::trial(setup.clone(), case, t, check));
            }
            let Some(joined) = set.join_next().await else { break };
            let t = joined.map_err(|e| CliError::failure(format!("a trial failed: {e}")))??;
            self.record(n, &t)?;
        }
        let mut out = BTreeMap::new();
        for id in ids {
            if self.s.left_out.contains(id) {
                continue;
            }
            let passed =
                self.results.iter().filter(|r| r.candidate == n && &r.case == id && r.passed).count();
            out.insert(id.clone(), u32::try_from(passed).unwrap_or(u32::MAX));
        }
        Ok(out)
    }

    /// Appends a trial's line to `results.tsv` (synced: a kill loses no finished trial).
    fn record(&mut self, n: u32, t: &Trial) -> Result<(), CliError> {
        if let Some(why) = &t.broken {
            eprintln!("case {}: cannot be scored ({why}); left out", t.case);
        }
        if t.passes_at_start || t.broken.is_some() {
            if !self.s.left_out.contains(&t.case) {
                self.s.left_out.push(t.case.clone());
                self.save_settings()?;
            }
            return Ok(());
        }
        eprintln!(
            "candidate {n} · {} · trial {}: {}{}",
            t.case,
            t.trial,
            if t.passed {
                "passed"
            } else if t.gamed {
                "gamed the checks (0)"
            } else {
                "failed"
            },
            t.note.as_ref().map(|x| format!(" ({x})")).unwrap_or_default()
        );
        let path = self.dir.join("results.tsv");
        let err = |e: std::io::Error| CliError::failure(format!("cannot write {}: {e}", path.display()));
        let fresh = !path.exists();
        let mut f = crate::fsx::append(&path).map_err(err)?;
        if fresh {
            writeln!(f, "{RESULTS_HEADER}").map_err(err)?;
        }
        let parent = self.metas.get(&n).and_then(|m| m.parent).map(|p| p.to_string()).unwrap_or_default();
        writeln!(
            f,
            "{n}\t{parent}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.6}",
            self.split_of(&t.case),
            t.case,
            t.trial,
            u8::from(t.passed),
            t.iterations,
            t.tokens,
            t.cost_usd
        )
        .map_err(err)?;
        f.sync_data().map_err(err)?;
        self.results.push(Row {
            candidate: n,
            case: t.case.clone(),
            trial: t.trial,
            passed: t.passed,
            iterations: t.iterations,
            tokens: t.tokens,
            cost_usd: t.cost_usd,
        });
        Ok(())
    }

    pub fn save_settings(&self) -> Result<(), CliError> {
        let bytes = serde_json::to_vec_pretty(&self.s).map_err(|e| CliError::failure(e.to_string()))?;
        Ok(crate::state::atomic_write(&self.dir.join("tune.json"), &bytes)?)
    }

    pub fn save_meta(&mut self, m: Meta) -> Result<(), CliError> {
        let bytes = serde_json::to_vec_pretty(&m).map_err(|e| CliError::failure(e.to_string()))?;
        crate::state::atomic_write(&self.candidate_dir(m.n).join("meta.json"), &bytes)?;
        self.metas.insert(m.n, m);
        Ok(())
    }

    /// Passed trials per case of the validation split, for every candidate kept so far.
    pub fn val_scores(&self) -> BTreeMap<u32, BTreeMap<String, u32>> {
        let mut out = BTreeMap::new();
        for n in &kept(&self.metas) {
            let mut per: BTreeMap<String, u32> = BTreeMap::new();
            for c in &self.s.val {
                per.insert(c.clone(), 0);
            }
            for r in
                self.results.iter().filter(|r| r.candidate == *n && r.passed && self.s.val.contains(&r.case))
            {
                *per.entry(r.case.clone()).or_default() += 1;
            }
            out.insert(*n, per);
        }
        out
    }

    /// Has the reflector turn candidate `parent` into candidate `n`, from the failed trials
    /// of `cases`; `Err` words when the result is no candidate.
    pub async fn reflect(
        &mut self,
        parent: u32,
        n: u32,
        cases: &[String],
        stop: &crate::signal::Stop,
    ) -> Result<Result<(), String>, CliError> {
        let work = self.dir.join("reflect").join(n.to_string());
        let cand = work.join("candidate");
        let traces = work.join("traces");
        let _ = std::fs::remove_dir_all(&work);
        crate::fsx::create_dir_all(&cand)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", cand.display())))?;
        let from = self.candidate_dir(parent);
        for f in ["prompt.md", "AGENTS.md"] {
            let text = crate::fsx::read_to_string(&from.join(f)).unwrap_or_default();
            crate::fsx::write(&cand.join(f), text.as_bytes())
                .map_err(|e| CliError::failure(format!("cannot write the candidate: {e}")))?;
        }
        let mut failed = 0;
        for id in cases {
            for r in self.results.iter().filter(|r| r.candidate == parent && &r.case == id && !r.passed) {
                let src =
                    self.dir.join("trials").join(format!("c{parent}")).join(id).join(r.trial.to_string());
                let dst = traces.join(format!("{id}-{}", r.trial));
                copy_trace(&src, &dst, self.cases.get(id).map(|c| c.spec.as_str()).unwrap_or(""))?;
                failed += 1;
            }
        }
        if failed == 0 {
            return Ok(Err("the parent failed no trial of the minibatch: nothing to learn from".into()));
        }
        let mut agent = self.cfg.agent.clone();
        if let Some(p) = &self.s.reflector {
            let cfg =
                crate::runner::load_config(&self.root, &crate::config::Overrides { agent: Some(p.clone()) })?;
            agent = cfg.agent;
        }
        let prompt = REFLECT_TEMPLATE.to_string();
        let prompt_path = work.join("reflect-prompt.md");
        crate::fsx::write(&prompt_path, prompt.as_bytes())
            .map_err(|e| CliError::failure(format!("cannot write the reflector's prompt: {e}")))?;
        let env = crate::agent::IterationEnv {
            run_id: format!("tune-{}", self.s.id),
            iteration: n,
            task: "reflect".into(),
            task_iteration: 1,
            iter_dir: work.clone(),
        };
        let req = crate::agent::request(&agent, &self.cfg.sandbox, &work, &prompt, &prompt_path, &env)?;
        let secrets = crate::secrets::Secrets::for_agent(&agent);
        let log = work.join("agent.log");
        let ended = crate::agent::session::Session::new(
            &agent,
            "reflector",
            &req,
            &prompt,
            &secrets,
            &stop.cancel,
            &stop.force,
        )
        .run(&log, &mut ())
        .await
        .map_err(|e| CliError::failure(format!("cannot create {}: {e}", log.display())))?;
        let tokens = ended.report.tokens.map_or(0, |t| t.total());
        let cost = ended.report.cost_usd.unwrap_or(0.0);
        let meta_spend = (tokens, cost);
        // The new candidate is what the reflector left under candidate/.
        let to = self.candidate_dir(n);
        crate::fsx::create_dir_all(&to)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", to.display())))?;
        for f in ["prompt.md", "AGENTS.md", "DIAGNOSIS.md"] {
            if let Ok(text) = crate::fsx::read_to_string(&cand.join(f)) {
                crate::state::atomic_write(&to.join(f), text.as_bytes())?;
            }
        }
        self.metas.insert(
            n,
            Meta {
                n,
                parent: Some(parent),
                round: 0,
                status: String::new(),
                reason: None,
                tokens: meta_spend.0,
                cost_usd: meta_spend.1,
            },
        );
        if let Err(e) = ended.finished {
            return Ok(Err(format!("the reflector could not start: {e}")));
        }
        let text = crate::fsx::read_to_string(&to.join("prompt.md")).unwrap_or_default();
        let before = crate::fsx::read_to_string(&from.join("prompt.md")).unwrap_or_default();
        let md = crate::fsx::read_to_string(&to.join("AGENTS.md")).unwrap_or_default();
        let md_before = crate::fsx::read_to_string(&from.join("AGENTS.md")).unwrap_or_default();
        if text == before && md == md_before {
            return Ok(Err("the reflector changed neither prompt.md nor AGENTS.md".into()));
        }
        if let Some(missing) = REQUIRED.iter().find(|r| !text.contains(*r)) {
            return Ok(Err(format!("the template no longer carries `{missing}`, which every prompt needs")));
        }
        if let Err(e) = crate::prompt::Template::load(&self.root, Some(&to.join("prompt.md"))) {
            return Ok(Err(format!("the template does not render: {e}")));
        }
        Ok(Ok(()))
    }
}

/// A failed trial's traces for the reflector: the spec, and per iteration the prompt, the
/// agent's log, the checks' log and the rejected diff; the hidden check's output.
fn copy_trace(src: &Path, dst: &Path, spec: &str) -> Result<(), CliError> {
    let err = |e: std::io::Error| CliError::failure(format!("cannot copy a trace to {}: {e}", dst.display()));
    crate::fsx::create_dir_all(dst).map_err(err)?;
    crate::fsx::write(&dst.join("spec.md"), spec.as_bytes()).map_err(err)?;
    if let Ok(text) = crate::fsx::read(&src.join("check.log")) {
        crate::fsx::write(&dst.join("hidden-check.log"), &text).map_err(err)?;
    }
    let Ok(entries) = std::fs::read_dir(src) else { return Ok(()) };
    // Folders only, never through a link (the agent may have planted one).
    let mut iters: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    iters.sort();
    for it in iters {
        let name = it.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let to = dst.join(&name);
        crate::fsx::create_dir_all(&to).map_err(err)?;
        for f in ["prompt.md", "agent.log", "checks.log", "rejected.patch"] {
            if let Ok(bytes) = crate::fsx::read(&it.join(f)) {
                // The reflector reads a bounded trace: the tail of a long log tells the most.
                let keep = &bytes[bytes.len().saturating_sub(64 * 1024)..];
                crate::fsx::write(&to.join(f), keep).map_err(err)?;
            }
        }
    }
    Ok(())
}

/// The passed trials of a candidate's scores, all cases together.
pub fn total(scores: &BTreeMap<String, u32>) -> u32 {
    scores.values().sum()
}

/// The cases of a minibatch for `round`: `k` train cases, picked by the seed and the round.
pub fn minibatch(train: &[String], seed: u64, round: u32, k: u32) -> Vec<String> {
    let mut keyed: Vec<(u64, &String)> =
        train.iter().map(|c| (hash(seed ^ u64::from(round).wrapping_mul(0x9e37_79b9), c), c)).collect();
    keyed.sort();
    keyed.into_iter().take(k as usize).map(|(_, c)| c.clone()).collect()
}

/// The candidates the search keeps (the baseline, and those no worse than their parents).
pub fn kept(metas: &BTreeMap<u32, Meta>) -> BTreeSet<u32> {
    metas.values().filter(|m| m.status == "baseline" || m.status == "kept").map(|m| m.n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case-{i}")).collect()
    }

    #[test]
    fn the_split_is_fixed_by_the_seed_and_gives_each_part_a_case() {
        let cases = ids(10);
        let (a, b, c) = split(&cases, 7, [60, 20, 20]);
        assert_eq!((a.len(), b.len(), c.len()), (6, 2, 2));
        let mut shuffled = cases.clone();
        shuffled.reverse();
        assert_eq!(
            split(&shuffled, 7, [60, 20, 20]),
            (a.clone(), b.clone(), c.clone()),
            "order does not matter"
        );
        assert_ne!(split(&cases, 8, [60, 20, 20]).0, a, "another seed, another split");
        let (a, b, c) = split(&ids(3), 1, [60, 20, 20]);
        assert_eq!((a.len(), b.len(), c.len()), (1, 1, 1));
        let all: BTreeSet<String> = a.into_iter().chain(b).chain(c).collect();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn the_front_keeps_what_no_other_candidate_beats_everywhere() {
        let cases = vec!["a".to_string(), "b".to_string()];
        let s = |v: [u32; 2]| -> BTreeMap<String, u32> { cases.iter().cloned().zip(v).collect() };
        let mut scores = BTreeMap::new();
        scores.insert(0, s([1, 0]));
        scores.insert(1, s([0, 1])); // better on b: both stay
        scores.insert(2, s([1, 0])); // a tie with 0: the older stays
        scores.insert(3, s([0, 0])); // beaten everywhere
        assert_eq!(front(&scores, &cases), vec![0, 1]);
        scores.insert(4, s([1, 1])); // beats them all
        assert_eq!(front(&scores, &cases), vec![4]);
    }

    #[test]
    fn results_lines_cut_by_a_kill_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("results.tsv"),
            format!("{RESULTS_HEADER}\n0\t\tval\ta\t1\t1\t2\t100\t0.010000\n1\t0\ttrain\tb\t1\t0\t3\t5"),
        )
        .unwrap();
        let rows = read_results(dir.path());
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].candidate, rows[0].case.as_str(), rows[0].passed, rows[0].iterations),
            (0, "a", true, 2)
        );
    }
}
