//! The project's checks, run by ralph itself after the agent exits: the agent's word that the
//! tests pass is never taken. Each command runs as `sh -c` at the repository root in its own
//! process group, under `[checks] timeout`, its output appended to `checks.log`. The first
//! failing command ends the round: later ones would only test broken work.

use crate::config::ChecksConfig;
use crate::process::{self, Ending, Limits, SpawnRequest};
use crate::record::CheckRecord;
use crate::secrets::StreamMasker;
use crate::signal::Stop;
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
    pub interrupted: bool,
    /// Tests each command's runner reported (cargo test, nextest, pytest, jest, vitest), for
    /// the commands that reported any.
    pub test_counts: Vec<(String, u64)>,
}

/// Runs the checks, appending their output to `log`.
pub async fn run(
    cfg: &ChecksConfig,
    env: &[(String, String)],
    root: &Path,
    log: &mut std::fs::File,
    masker: &mut StreamMasker,
    grace: Duration,
    stop: &Stop,
) -> std::io::Result<ChecksResult> {
    let (cancel, force) = (&stop.cancel, &stop.force);
    let mut result = ChecksResult::default();
    for command in &cfg.commands {
        writeln!(log, "$ {command}")?;
        let start = Instant::now();
        let req = SpawnRequest {
            program: "sh".into(),
            args: vec!["-c".into(), command.clone()],
            cwd: root.to_path_buf(),
            // RALPH_RUN_ID marks the checks as this run's, for crash recovery to find.
            env: env.to_vec(),
            env_remove: vec![],
            stdin: None,
            pty: false,
        };
        let child = match process::spawn(&req) {
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
                    timed_out: false,
                });
                result.failure = Some(format!("`{command}` could not start: {e}"));
                return Ok(result);
            }
        };
        let mut tail: Vec<u8> = Vec::new();
        let mut write_err = None;
        let mut line: Vec<u8> = Vec::new();
        let mut tests: Option<u64> = None;
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
                    if let Some(n) = crate::gates::test_count(&String::from_utf8_lossy(&line)) {
                        *tests.get_or_insert(0) += n;
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
        result.records.push(CheckRecord {
            command: command.clone(),
            exit_code: finished.exit_code,
            duration_ms,
            timed_out,
        });
        if let Some(n) = tests {
            result.test_counts.push((command.clone(), n));
        }
        if finished.ending == Ending::Cancelled {
            result.interrupted = true;
            return Ok(result);
        }
        if timed_out || finished.exit_code != Some(0) {
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
    let text = crate::agent::scan::strip_ansi(text);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secrets;

    async fn run_checks(commands: &[&str], timeout_ms: u64) -> (ChecksResult, String) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("checks.log");
        let mut log = std::fs::File::create(&log_path).unwrap();
        let cfg = ChecksConfig {
            commands: commands.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
        };
        let stop = Stop::default();
        let mut m = StreamMasker::new(Secrets::default());
        let r =
            run(&cfg, &[], dir.path(), &mut log, &mut m, Duration::from_millis(100), &stop).await.unwrap();
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
    async fn all_green() {
        let (r, _) = run_checks(&["true", "true"], 10_000).await;
        assert!(r.failure.is_none() && !r.interrupted);
        assert_eq!(r.records.len(), 2);
    }
}
