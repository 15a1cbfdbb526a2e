//! The project's checks, run by ralph itself after the agent exits: the agent's word that the
//! tests pass is never taken. Each command runs as `sh -c` at the repository root in its own
//! process group, under `[checks] timeout`, its output appended to `checks.log`. The first
//! failing command ends the round: later ones would only test broken work.
//!
//! They run as the user's own commands (they are the judge, not the defendant), outside the
//! agent's sandbox, unless `[sandbox] checks = true` puts them in it too ([`Ctx::sandbox`]).

use crate::config::ChecksConfig;
use crate::process::{self, Ending, Limits, SpawnRequest};
use crate::record::CheckRecord;
use crate::secrets::StreamMasker;
use crate::signal::Stop;
pub use crate::state::Baseline;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Lines of a failing check's output shown to the next iteration.
pub const FAILURE_TAIL_LINES: usize = 60;
/// Bytes of a failing check's output kept in memory for that tail.
const TAIL_BYTES: usize = 16 * 1024;

/// The result of one round of checks.
#[derive(Debug, Default)]
pub struct ChecksResult {
    pub records: Vec<CheckRecord>,
    /// The failing command and its output's tail.
    pub failure: Option<String>,
    /// The failing command already failed on the clean tree, naming its failing tests, and now
    /// names tests it did not: new failures beside known ones, not a check broken outright.
    pub new_test_failures: bool,
    pub interrupted: bool,
    /// Tests each command's runner reported (cargo test, nextest, pytest, jest, vitest), for
    /// the commands that reported any.
    pub test_counts: Vec<(String, u64)>,
}

/// How a round judges failures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Judge<'a> {
    /// Run every command whatever fails (the baseline round).
    pub keep_going: bool,
    /// Failures the clean tree already had: they may fail again, no new test may.
    pub baseline: Option<&'a Baseline>,
    /// Commands never tolerated: the task's own acceptance checks.
    pub strict: &'a [String],
}

impl Judge<'_> {
    /// Whether a failure of `command` with `failed_tests` is one the clean tree had already.
    fn tolerates(&self, command: &str, failed_tests: &[String]) -> bool {
        if self.strict.iter().any(|s| s == command) {
            return false;
        }
        let Some(known) = self.baseline.and_then(|b| b.failing.get(command)) else { return false };
        // A failure that names no test (before or now) could hide anything: "it failed before
        // and still does" would let garbage through, so only named old failures are forgiven.
        !known.is_empty() && !failed_tests.is_empty() && failed_tests.iter().all(|t| known.contains(t))
    }

    /// Whether the clean tree already failed `command` with named tests (and it is not strict):
    /// a failure of it now that is not tolerated names tests it did not.
    fn knows_failures_of(&self, command: &str) -> bool {
        !self.strict.iter().any(|s| s == command)
            && self.baseline.and_then(|b| b.failing.get(command)).is_some_and(|k| !k.is_empty())
    }
}

/// Where and how checks run.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub env: &'a [(String, String)],
    pub root: &'a Path,
    pub grace: Duration,
    pub stop: &'a Stop,
    /// The sandbox they run in (`[sandbox] checks = true`); `None`: as the user.
    pub sandbox: Option<&'a crate::sandbox::SandboxConfig>,
}

impl<'a> Ctx<'a> {
    /// The checks' context; in `sandbox` when it says `checks = true`.
    pub fn new(
        env: &'a [(String, String)],
        root: &'a Path,
        grace: Duration,
        stop: &'a Stop,
        sandbox: &'a crate::sandbox::SandboxConfig,
    ) -> Self {
        Self { env, root, grace, stop, sandbox: sandbox.checks.then_some(sandbox) }
    }
}

/// Most failing test names kept per command.
const MAX_FAILED_TESTS: usize = 200;

/// Runs the checks, appending their output to `log`.
pub async fn run(
    cfg: &ChecksConfig,
    ctx: &Ctx<'_>,
    log: &mut std::fs::File,
    masker: &mut StreamMasker,
    judge: &Judge<'_>,
) -> std::io::Result<ChecksResult> {
    let (env, root, grace) = (ctx.env, ctx.root, ctx.grace);
    let (cancel, force) = (&ctx.stop.cancel, &ctx.stop.force);
    let mut result = ChecksResult::default();
    for command in &cfg.commands {
        writeln!(log, "$ {command}")?;
        let start = Instant::now();
        let started_at = crate::logs::now_rfc3339();
        // RALPH_RUN_ID marks the checks as this run's, for crash recovery to find.
        let req = SpawnRequest::shell(command, root, env.to_vec());
        let started = match ctx.sandbox {
            Some(s) => crate::sandbox::apply(s, false, req, &crate::sandbox::Needs::default())
                .map_err(|e| crate::text::chain(&e)),
            None => Ok(req),
        }
        .and_then(|req| process::spawn(&req).map_err(|e| crate::text::chain(&e)));
        let child = match started {
            Ok(c) => {
                crate::fault::point("checks_running");
                c
            }
            Err(e) => {
                writeln!(log, "ralph: {e}")?;
                result.records.push(CheckRecord {
                    command: command.clone(),
                    exit_code: None,
                    duration_ms: 0,
                    started_at: Some(started_at),
                    timed_out: false,
                    failed_tests: Vec::new(),
                    tolerated: false,
                });
                result.failure = Some(format!("`{command}` could not start: {e}"));
                return Ok(result);
            }
        };
        let mut tail: Vec<u8> = Vec::new();
        let mut write_err = None;
        let mut line: Vec<u8> = Vec::new();
        let mut tests: Option<u64> = None;
        let mut failed_tests: Vec<String> = Vec::new();
        let limits = Limits { timeout: cfg.timeout, idle_timeout: None, grace };
        let finished = process::supervise(child, limits, cancel, force, |chunk| {
            let masked = masker.push(&chunk.data);
            if let Err(e) = log.write_all(&masked) {
                write_err.get_or_insert(e);
            }
            tail.extend_from_slice(&masked);
            if tail.len() > 2 * TAIL_BYTES {
                tail.drain(..tail.len() - TAIL_BYTES);
            }
            // Runner summaries are short lines; longer ones are not read for a count.
            for &b in &chunk.data {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(n) = crate::gates::test_count(&text) {
                        *tests.get_or_insert(0) += n;
                    }
                    if let Some(t) = crate::gates::failing_test(&text)
                        && failed_tests.len() < MAX_FAILED_TESTS
                        && !failed_tests.contains(&t)
                    {
                        failed_tests.push(t);
                    }
                    line.clear();
                } else if line.len() < 512 {
                    line.push(b);
                }
            }
            std::ops::ControlFlow::Continue(())
        })
        .await;
        let rest = masker.finish();
        log.write_all(&rest)?;
        tail.extend_from_slice(&rest);
        if let Some(e) = write_err {
            return Err(e);
        }
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let timed_out = finished.ending == Ending::Timeout;
        let status = match (finished.ending, finished.exit_code) {
            (Ending::Timeout, _) => format!("timed out after {}", humantime::format_duration(cfg.timeout)),
            (Ending::Cancelled, _) => "interrupted".to_string(),
            (_, Some(c)) => format!("exit {c}"),
            (_, None) => "killed by a signal".to_string(),
        };
        writeln!(log, "\n[ralph] `{command}`: {status} in {:.1}s\n", duration_ms as f64 / 1000.0)?;
        let failed = timed_out || finished.exit_code != Some(0);
        // A timed-out run named only the failures it reached: never tolerated.
        let tolerated = failed
            && finished.ending == Ending::Exited
            && !timed_out
            && judge.tolerates(command, &failed_tests);
        let new_failures = failed
            && !tolerated
            && !timed_out
            && !failed_tests.is_empty()
            && judge.knows_failures_of(command);
        if tolerated {
            writeln!(
                log,
                "[ralph] it failed on the clean tree too (the baseline): tolerated, no new failure"
            )?;
        }
        result.records.push(CheckRecord {
            command: command.clone(),
            exit_code: finished.exit_code,
            duration_ms,
            started_at: Some(started_at),
            timed_out,
            failed_tests: if failed { failed_tests } else { Vec::new() },
            tolerated,
        });
        if let Some(n) = tests {
            result.test_counts.push((command.clone(), n));
        }
        if finished.ending == Ending::Cancelled {
            result.interrupted = true;
            return Ok(result);
        }
        if failed && !tolerated && !judge.keep_going {
            result.new_test_failures = new_failures;
            let text = String::from_utf8_lossy(&tail);
            result.failure =
                Some(format!("`{command}` failed ({status}):\n{}", last_lines(&text, FAILURE_TAIL_LINES)));
            return Ok(result);
        }
    }
    log.flush()?;
    Ok(result)
}

/// The last `n` lines of `text`, trimmed.
pub fn last_lines(text: &str, n: usize) -> String {
    let text = crate::text::strip_ansi(text);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secrets;
    use std::collections::BTreeMap;

    async fn run_checks(commands: &[&str], timeout_ms: u64) -> (ChecksResult, String) {
        run_judged(commands, timeout_ms, &Judge::default()).await
    }

    async fn run_judged(commands: &[&str], timeout_ms: u64, judge: &Judge<'_>) -> (ChecksResult, String) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("checks.log");
        let mut log = std::fs::File::create(&log_path).unwrap();
        let cfg = ChecksConfig {
            commands: commands.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
            gate: crate::config::Gate::NoNewFailures,
        };
        let stop = Stop::default();
        let mut m = StreamMasker::new(Secrets::default());
        let ctx =
            Ctx { env: &[], root: dir.path(), grace: Duration::from_millis(100), stop: &stop, sandbox: None };
        let r = run(&cfg, &ctx, &mut log, &mut m, judge).await.unwrap();
        (r, std::fs::read_to_string(log_path).unwrap())
    }

    #[tokio::test]
    async fn stops_at_the_first_failure_with_its_tail() {
        let (r, log) = run_checks(&["echo ok", "echo boom; exit 2", "echo never"], 10_000).await;
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[1].exit_code, Some(2));
        let f = r.failure.unwrap();
        assert_eq!(f, "`echo boom; exit 2` failed (exit 2):\nboom");
        assert!(log.contains("$ echo ok") && !log.contains("never"), "{log}");
    }

    #[tokio::test]
    async fn a_hanging_check_times_out() {
        let (r, _) = run_checks(&["sleep 100"], 300).await;
        assert!(r.records[0].timed_out);
        assert!(r.failure.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn runner_summaries_are_counted() {
        let (r, _) = run_checks(&["echo 'test result: ok. 3 passed; 1 failed; 0 ignored'; echo 'test result: ok. 2 passed; 0 failed'", "true"], 10_000).await;
        assert_eq!(r.test_counts, vec![("echo 'test result: ok. 3 passed; 1 failed; 0 ignored'; echo 'test result: ok. 2 passed; 0 failed'".to_string(), 6)]);
    }

    #[tokio::test]
    async fn old_failures_are_tolerated_new_ones_are_not() {
        let cargo_like =
            |tests: &str| format!("for t in {tests}; do echo \"test $t ... FAILED\"; done; exit 101");
        let old = cargo_like("a b");
        let baseline = Baseline {
            head: "h".into(),
            failing: BTreeMap::from([(old.clone(), vec!["a".into(), "b".into()])]),
        };
        let judge = Judge { keep_going: false, baseline: Some(&baseline), strict: &[] };
        // The same two tests fail again: tolerated; the next command still runs.
        let (r, log) = run_judged(&[&old, "echo next"], 10_000, &judge).await;
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert!(r.records[0].tolerated && r.records[0].failed_tests == ["a", "b"]);
        assert_eq!(r.records.len(), 2);
        assert!(log.contains("tolerated"));
        // A third failing test is new: red. (Its command differs, so give it the same baseline.)
        let new = cargo_like("a b c");
        let baseline = Baseline {
            head: "h".into(),
            failing: BTreeMap::from([(new.clone(), vec!["a".into(), "b".into()])]),
        };
        let judge = Judge { keep_going: false, baseline: Some(&baseline), strict: &[] };
        let (r, _) = run_judged(&[&new], 10_000, &judge).await;
        assert!(r.failure.is_some());
        assert!(r.new_test_failures, "new failures beside known ones");
        // A task's own check is never tolerated.
        let strict = [new.clone()];
        let judge = Judge { keep_going: false, baseline: Some(&baseline), strict: &strict };
        let (r, _) = run_judged(&[&new], 10_000, &judge).await;
        assert!(r.failure.is_some() && !r.new_test_failures);
        // Without a baseline, a failure is a check failed, not new failures.
        let (r, _) = run_judged(&[&new], 10_000, &Judge::default()).await;
        assert!(r.failure.is_some() && !r.new_test_failures);
    }

    #[test]
    fn a_failure_that_names_no_test_is_never_tolerated() {
        let baseline = Baseline {
            head: "h".into(),
            failing: BTreeMap::from([("pytest".into(), vec![]), ("cargo test".into(), vec!["a".into()])]),
        };
        let judge = Judge { keep_going: false, baseline: Some(&baseline), strict: &[] };
        // Unattributable before: nothing is forgiven, whatever fails now.
        assert!(!judge.tolerates("pytest", &[]));
        assert!(!judge.tolerates("pytest", &["x".into()]));
        // Named before, unnamed now (a compile error hides which tests fail): not forgiven.
        assert!(!judge.tolerates("cargo test", &[]));
        assert!(judge.tolerates("cargo test", &["a".into()]));
    }

    #[tokio::test]
    async fn all_green() {
        let (r, _) = run_checks(&["true", "true"], 10_000).await;
        assert!(r.failure.is_none() && !r.interrupted);
        assert_eq!(r.records.len(), 2);
    }
}
