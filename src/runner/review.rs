//! The review stage (`[review]`): a second agent, any preset (a cheaper model, say), gets the
//! task, the diff and the checks that passed, and answers APPROVED or REJECTED with its
//! reasons. A rejection fails the iteration and its reasons go into the next prompt.
//!
//! Whitespace-only changes and ralph's own files (`.ralph/`, AGENTS.md) are kept out of the
//! diff it sees. The reviewer must not change files: anything it changes is put back. A
//! reviewer that gives no verdict (it failed, or never said either word) counts as a rejection:
//! work is committed only when approved. A reviewer at its usage limit is waited for and asked
//! again (a few times, within the run's time budget) before that.

use super::iteration::Iteration;
use crate::agent::limits::Signal;
use crate::agent::session::Session;
use crate::agent::{self, IterationEnv};
use crate::error::CliError;
use crate::record::CheckRecord;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The built-in review prompt.
const TEMPLATE: &str = include_str!("../../templates/review.md");
/// The most of the diff the reviewer is shown.
const MAX_DIFF: usize = 200 * 1024;
/// How often a reviewer at its usage limit is asked, waits between included.
const MAX_ASKS: u32 = 5;

/// The reviewer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub approved: bool,
    pub reasons: String,
}

/// Reads a verdict: the first line that starts with APPROVED or REJECTED (markdown emphasis
/// and heading marks aside) decides; what follows is the reasons.
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim().trim_start_matches(['#', '*', '_', '>', ' ', '`']).to_ascii_uppercase();
        for (word, approved) in [("APPROVED", true), ("REJECTED", false)] {
            if l.starts_with(word) {
                let first = line.trim().trim_start_matches(['#', '*', '_', '>', ' ', '`']);
                let rest_of_line = first[word.len().min(first.len())..]
                    .trim_start_matches(['*', '_', '`', ':', '.', ' ', '-', '—', '–']);
                let mut reasons = rest_of_line.to_string();
                for l in &lines[i + 1..] {
                    reasons.push('\n');
                    reasons.push_str(l);
                }
                let reasons: String = reasons.trim().chars().take(2000).collect();
                return Some(Verdict { approved, reasons });
            }
        }
    }
    None
}

/// Asks the reviewer about the staged change against `head_before`.
pub async fn review(
    it: &Iteration<'_>,
    dir: &Path,
    head_before: &str,
    checks: &[CheckRecord],
    task_iteration: u32,
    reporter: &mut dyn crate::reporter::Reporter,
) -> Result<Verdict, CliError> {
    let Some(cfg) = &it.cfg.review else {
        return Ok(Verdict { approved: true, reasons: String::new() });
    };
    let fail = |what: &str, e: std::io::Error| CliError::failure(format!("cannot {what}: {e}"));
    let root = it.wt.root();
    let review_index = root.join(crate::state::RALPH_DIR).join("review-index");
    let tree_before = it.wt.snapshot(&review_index)?;
    let mut diff = it.wt.review_diff(head_before)?;
    let truncated = diff.len() > MAX_DIFF;
    if truncated {
        let mut end = MAX_DIFF;
        while !diff.is_char_boundary(end) {
            end -= 1;
        }
        diff.truncate(end);
    }
    let mut env = minijinja::Environment::new();
    env.add_template("review", TEMPLATE)
        .map_err(|e| CliError::failure(format!("the review template: {e}")))?;
    let prompt = env
        .get_template("review")
        .and_then(|t| {
            t.render(minijinja::context! {
                task => minijinja::context! {
                    id => &it.task.id, title => &it.task.title,
                    path => it.task.path.to_string_lossy(), spec => it.task.body.trim(),
                },
                checks => checks.iter().map(|c| minijinja::context! { command => &c.command }).collect::<Vec<_>>(),
                diff => diff, truncated => truncated, max_bytes => MAX_DIFF,
            })
        })
        .map_err(|e| CliError::failure(format!("the review template: {e}")))?;
    let prompt = it.secrets.mask(&prompt);
    let prompt_path = dir.join("review-prompt.md");
    crate::state::atomic_write(&prompt_path, prompt.as_bytes())?;
    let ienv = IterationEnv {
        run_id: it.run_id.to_string(),
        iteration: it.number,
        task: it.task.id.clone(),
        task_iteration,
        iter_dir: dir.to_path_buf(),
    };
    // RALPH_REVIEW goes in with the agent's own variables: a sandbox hands on only those.
    let mut reviewer = cfg.clone();
    reviewer.env.insert("RALPH_REVIEW".into(), "1".into());
    let req = agent::request(&reviewer, &it.cfg.sandbox, root, &prompt, &prompt_path, &ienv)?;
    let log_path = dir.join("review.log");
    // A reviewer at its usage limit has not judged the work: the iteration waits for the limit
    // to lift and asks again (never past the run's time budget), rather than count a rejection
    // and throw green work away all night.
    let started = std::time::Instant::now();
    let mut backoff = cfg.retry_wait;
    let mut asked = 0;
    // The reviewer's last usage limit, in its words, while it gave no verdict.
    let mut limited: Option<String>;
    let (ended, touched) = loop {
        limited = None;
        asked += 1;
        let mut session =
            Session::new(cfg, "review", &req, &prompt, it.secrets, &it.stop.cancel, &it.stop.force);
        // Text reviewers: their stdout is the answer (kept up to 64 KiB).
        session.keep_stdout = 64 * 1024;
        let ended = session.run(&log_path, &mut ()).await.map_err(|e| fail("create review.log", e))?;
        // Whatever the reviewer touched goes back: it only judges.
        let touched = it.wt.snapshot(&review_index)? != tree_before;
        if touched {
            it.wt.restore_snapshot(head_before, &tree_before)?;
        }
        // Like the agent's log: a review.log that cannot be written (a full disk) stops the run.
        if let Some(e) = ended.write_error {
            return Err(fail("write review.log", e));
        }
        // A verdict is a verdict, whatever else it printed.
        if parse_verdict(&answer_of(cfg, &ended)).is_some() {
            break (ended, touched);
        }
        let failed = ended.exit_code() != Some(0);
        let Some(Signal::Limit(limit)) =
            super::iteration::signal(&ended.report, &ended.findings.tail, failed)
        else {
            break (ended, touched);
        };
        limited = Some(limit.message.clone());
        let wait = crate::agent::limits::wait_for(&limit, jiff::Timestamp::now(), backoff);
        if limit.reset_at.is_none() {
            backoff = (backoff * 2).min(cfg.retry_wait_max);
        }
        let left = it.time_left.map(|t| t.saturating_sub(started.elapsed()));
        if asked >= MAX_ASKS || left.is_some_and(|l| wait > l) || it.stop.cancel.is_cancelled() {
            break (ended, touched);
        }
        reporter.line(&format!(
            "the reviewer hit a usage limit: it reviews the same work again in {} (no attempt used)",
            super::human(wait)
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = it.stop.cancel.cancelled() => break (ended, touched),
        }
    };
    let mut verdict = parse_verdict(&answer_of(cfg, &ended)).unwrap_or_else(|| Verdict {
        approved: false,
        reasons: match &ended.finished {
            _ if limited.is_some() => format!(
                "the reviewer stayed at its usage limit (asked {asked} times): {}",
                limited.as_deref().unwrap_or("")
            ),
            Ok(f) if f.exit_code == Some(0) => "the reviewer answered neither APPROVED nor REJECTED".into(),
            Ok(f) => format!(
                "the reviewer gave no verdict ({})",
                f.exit_code.map_or("killed".to_string(), |c| format!("exit {c}"))
            ),
            Err(_) => "the reviewer could not start".into(),
        },
    });
    if touched {
        verdict.reasons.push_str("\n(The reviewer changed files; ralph put them back.)");
    }
    verdict.reasons = it.secrets.mask(&verdict.reasons);
    Ok(verdict)
}

/// The reviewer's answer: a text reviewer's stdout, else its final message; colours dropped.
fn answer_of(cfg: &crate::agent::AgentConfig, ended: &crate::agent::session::Ended) -> String {
    let answer = match cfg.format {
        crate::agent::output::Format::Text | crate::agent::output::Format::AiderText => {
            String::from_utf8_lossy(&ended.stdout).into_owned()
        }
        _ => ended.report.final_message.clone().unwrap_or_default(),
    };
    crate::agent::scan::strip_ansi(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let v = parse_verdict("Looking at it...\n\n**APPROVED** — the parser handles nesting.").unwrap();
        assert!(v.approved);
        assert_eq!(v.reasons, "the parser handles nesting.");
        let v = parse_verdict(
            "REJECTED\n\nThe test was changed to expect the wrong value.\nFix the code instead.",
        )
        .unwrap();
        assert!(!v.approved);
        assert_eq!(v.reasons, "The test was changed to expect the wrong value.\nFix the code instead.");
        let v = parse_verdict("## Rejected: hard-coded result").unwrap();
        assert!(!v.approved && v.reasons == "hard-coded result");
        assert!(parse_verdict("I am not sure.").is_none());
    }
}
