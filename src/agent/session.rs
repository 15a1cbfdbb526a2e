//! One agent session: start an agent request, supervise it under its limits (timeout, idle
//! timeout, grace, the cancel tokens), write its output to a log (secrets masked, cut at a cap
//! with a marker), parse that output (the format's [`Parser`], the [`Scanner`]) and return
//! what came of it. The iteration's agent, the `[review]` stage and `ralph plan` all run their
//! agent through here, so the log cap, the masking and the handling of a failing log are the
//! same for each.
//!
//! Invariants: the output is read to its end whatever happens to the log (an agent must never
//! block on a full pipe); nothing reaches the log unmasked; a log that cannot be written stops
//! the agent (gracefully, as [`Ending::Yielded`]) and is reported in [`Ended::write_error`]:
//! the caller decides what else stops, but never goes on as if the log were whole.

use super::AgentConfig;
use super::output::{Format, Parser, Report};
use super::scan::{Findings, Scanner};
use crate::process::{self, Ending, Finished, Limits, SpawnError, SpawnRequest};
use crate::secrets::{Secrets, StreamMasker};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// What to run and how: built by [`Session::new`] from an agent section; the fields are open so
/// a caller can narrow them (the iteration cuts the timeout to the run's time budget).
pub struct Session<'a> {
    pub request: &'a SpawnRequest,
    pub limits: Limits,
    /// Stops the agent gracefully (Ctrl-C; the iteration's own child token for spec edits).
    pub cancel: &'a CancellationToken,
    /// Skips the grace period (a second Ctrl-C).
    pub force: &'a CancellationToken,
    pub secrets: &'a Secrets,
    pub format: Format,
    /// The prompt, which the scanner must not take for the agent's own words when echoed.
    pub prompt: &'a str,
    pub completion_promise: &'a str,
    /// The log's size cap; the output past it is still read and parsed.
    pub log_cap: u64,
    /// The setting the cap comes from, named in the log's marker (`[agent] max_log_size`).
    pub log_cap_key: String,
    /// A file (relative path) whose writes by the agent are noticed: [`Ended::wrote_watched`].
    pub watch_writes: Option<&'a str>,
    /// The first this many bytes of stdout are kept raw in [`Ended::stdout`] (a text
    /// reviewer's answer is its stdout); 0 keeps none.
    pub keep_stdout: usize,
}

/// What the caller hears while the agent runs. Every method has a default that does nothing.
pub trait Watch {
    /// Each chunk of output, before anything is done with it (the iteration's fault point).
    fn chunk(&mut self) {}
    /// A tool call or a message of the agent, on one line, secrets masked.
    fn activity(&mut self, _text: &str, _is_tool: bool) {}
    /// After each chunk is parsed, and once more with `ended` when the agent has ended: what
    /// the output told so far (usage, context size). `Break` ends the agent gracefully
    /// ([`Ending::Yielded`]): the context budget. The answer is ignored once `ended`.
    fn parsed(&mut self, _parser: &Parser, _ended: bool) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// A watch that hears nothing.
impl Watch for () {}

/// How a session ended.
#[derive(Debug)]
pub struct Ended {
    /// How the agent ended, or why it could not start (the reason is also in the log).
    pub finished: Result<Finished, SpawnError>,
    pub report: Report,
    /// What the scanner found; its progress note is masked (it is written to disk).
    pub findings: Findings,
    /// The log reached its cap and was cut.
    pub log_capped: bool,
    /// The first failed write to the log (a full disk, say): the agent was stopped for it.
    pub write_error: Option<std::io::Error>,
    /// The first [`Session::keep_stdout`] bytes of stdout, unmasked.
    pub stdout: Vec<u8>,
    /// The agent wrote [`Session::watch_writes`], by its own account.
    pub wrote_watched: bool,
}

impl Ended {
    /// How the agent ended; `None` when it never started.
    pub fn ending(&self) -> Option<Ending> {
        self.finished.as_ref().ok().map(|f| f.ending)
    }

    /// The agent's exit code; `None` when a signal ended it or it never started.
    pub fn exit_code(&self) -> Option<i32> {
        self.finished.as_ref().ok().and_then(|f| f.exit_code)
    }
}

impl<'a> Session<'a> {
    /// A session of `request` under the limits of `cfg`, the agent section named `section`
    /// (`agent`, `review`), stopped by `cancel` and `force`.
    pub fn new(
        cfg: &'a AgentConfig,
        section: &str,
        request: &'a SpawnRequest,
        prompt: &'a str,
        secrets: &'a Secrets,
        cancel: &'a CancellationToken,
        force: &'a CancellationToken,
    ) -> Self {
        Self {
            request,
            limits: Limits {
                timeout: cfg.timeout,
                idle_timeout: Some(cfg.idle_timeout),
                grace: cfg.kill_grace,
            },
            cancel,
            force,
            secrets,
            format: cfg.format,
            prompt,
            completion_promise: &cfg.completion_promise,
            log_cap: cfg.max_log_size,
            log_cap_key: format!("[{section}] max_log_size"),
            watch_writes: None,
            keep_stdout: 0,
        }
    }

    /// Runs the agent to its end, its log written to `log_path` (created, or emptied). Fails
    /// only when the log cannot be created, before anything is started.
    pub async fn run(self, log_path: &Path, watch: &mut dyn Watch) -> std::io::Result<Ended> {
        let file = crate::fsx::create(log_path)?;
        let name =
            log_path.file_name().map_or_else(|| "the log".into(), |n| n.to_string_lossy().into_owned());
        Ok(self.run_with_log(file, name, watch).await)
    }

    async fn run_with_log(self, file: std::fs::File, name: String, watch: &mut dyn Watch) -> Ended {
        let mut log =
            CappedLog { file, written: 0, cap: self.log_cap, capped: false, name, key: self.log_cap_key };
        let mut masker = StreamMasker::new(self.secrets.clone());
        let mut scanner = Scanner::new(self.prompt, self.completion_promise);
        let mut parser = Parser::new(self.format);
        if let Some(p) = self.watch_writes {
            parser.watch_writes(p);
        }
        let mut stdout = Vec::new();
        let mut write_error: Option<std::io::Error> = None;
        let finished = match process::spawn(self.request) {
            Ok(child) => Ok(process::supervise(child, self.limits, self.cancel, self.force, |c| {
                watch.chunk();
                if write_error.is_none()
                    && let Err(e) = log.write(&masker.push(&c.data))
                {
                    // A full disk or an unwritable folder: stop the agent; the caller stops
                    // whatever else must stop.
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
                match c.stream {
                    process::Stream::Stdout => {
                        parser.feed(&c.data, &mut scanner);
                        for (text, is_tool) in parser.take_activities() {
                            watch.activity(&self.secrets.mask(&text), is_tool);
                        }
                        let room = self.keep_stdout.saturating_sub(stdout.len());
                        stdout.extend_from_slice(&c.data[..room.min(c.data.len())]);
                    }
                    // stderr carries no promise or learning, but its errors belong in the tail.
                    process::Stream::Stderr => scanner.feed_tail(&c.data),
                }
                watch.parsed(&parser, false)
            })
            .await),
            Err(e) => {
                if write_error.is_none()
                    && let Err(w) = log.write(format!("ralph: {}\n", crate::text::chain(&e)).as_bytes())
                {
                    write_error = Some(w);
                }
                Err(e)
            }
        };
        let _ = watch.parsed(&parser, true);
        if write_error.is_none()
            && let Err(e) = log.write(&masker.finish()).and_then(|()| log.file.flush())
        {
            write_error = Some(e);
        }
        let wrote_watched = self.watch_writes.is_some_and(|p| parser.wrote(p));
        let report = parser.finish(&mut scanner);
        let mut findings = scanner.finish();
        findings.progress = findings.progress.map(|p| self.secrets.mask(&p));
        Ended { finished, report, findings, log_capped: log.capped, write_error, stdout, wrote_watched }
    }
}

/// A log cut at a size with a marker. Output past the cap is still read (and parsed) so the
/// agent never blocks on a full pipe; only the writing stops.
struct CappedLog {
    file: std::fs::File,
    written: u64,
    cap: u64,
    capped: bool,
    /// The log's file name and the setting of the cap, for the marker.
    name: String,
    key: String,
}

impl CappedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.capped {
            return Ok(());
        }
        let room = self.cap.saturating_sub(self.written);
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        self.file.write_all(&bytes[..n])?;
        self.written += n as u64;
        if n < bytes.len() {
            self.capped = true;
            write!(
                self.file,
                "\n[ralph: {} capped at {} bytes ({}); the rest of the output was read but not kept]\n",
                self.name, self.cap, self.key
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::tests::sh;
    use std::time::Duration;

    fn session<'a>(
        req: &'a SpawnRequest,
        secrets: &'a Secrets,
        token: &'a CancellationToken,
        cap: u64,
    ) -> Session<'a> {
        Session {
            request: req,
            limits: Limits {
                timeout: Duration::from_secs(30),
                idle_timeout: None,
                grace: Duration::from_millis(300),
            },
            cancel: token,
            force: token,
            secrets,
            format: Format::Text,
            prompt: "the prompt",
            completion_promise: "<promise>COMPLETE</promise>",
            log_cap: cap,
            log_cap_key: "[agent] max_log_size".into(),
            watch_writes: None,
            keep_stdout: 0,
        }
    }

    #[derive(Default)]
    struct Heard {
        parsed: u32,
        ended: bool,
    }

    impl Watch for Heard {
        fn parsed(&mut self, _: &Parser, ended: bool) -> ControlFlow<()> {
            self.parsed += 1;
            self.ended |= ended;
            ControlFlow::Continue(())
        }
    }

    #[tokio::test]
    async fn the_log_is_masked_and_capped_and_the_output_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::from_vars([("API_TOKEN", "hunter2-secret")]);
        let req = sh(
            "echo 'key hunter2-secret'; head -c 300000 /dev/zero | tr '\\0' x; echo; echo '<promise>COMPLETE</promise>'; echo oops >&2",
        );
        let t = CancellationToken::new();
        let mut s = session(&req, &secrets, &t, 1000);
        s.keep_stdout = 10;
        let mut heard = Heard::default();
        let ended = s.run(&dir.path().join("agent.log"), &mut heard).await.unwrap();
        assert_eq!(ended.ending(), Some(Ending::Exited));
        assert_eq!(ended.exit_code(), Some(0));
        assert!(ended.findings.promise, "the promise after the cap was still read");
        assert!(ended.findings.tail.contains("oops"), "stderr is in the tail");
        assert!(ended.log_capped && ended.write_error.is_none());
        assert_eq!(ended.stdout, b"key hunter");
        assert!(heard.parsed > 1 && heard.ended);
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
        assert!(!log.contains("hunter2-secret") && log.contains("key "), "{log}");
        assert!(log.len() < 1200, "{} bytes", log.len());
        assert!(log.ends_with(
            "\n[ralph: agent.log capped at 1000 bytes ([agent] max_log_size); the rest of the output was read but not kept]\n"
        ));
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_written_stops_the_agent() {
        let secrets = Secrets::default();
        let req = sh("echo start; sleep 30");
        let t = CancellationToken::new();
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let started = std::time::Instant::now();
        let ended =
            session(&req, &secrets, &t, 1 << 20).run_with_log(full, "agent.log".into(), &mut ()).await;
        assert_eq!(ended.ending(), Some(Ending::Yielded));
        assert_eq!(ended.write_error.map(|e| e.raw_os_error()), Some(Some(libc::ENOSPC)));
        assert!(started.elapsed() < Duration::from_secs(20), "the agent was not left to run");
    }

    #[tokio::test]
    async fn an_agent_that_cannot_start_is_named_in_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::default();
        let mut req = sh("");
        req.program = "/nonexistent/agent".into();
        let t = CancellationToken::new();
        let ended =
            session(&req, &secrets, &t, 1000).run(&dir.path().join("review.log"), &mut ()).await.unwrap();
        assert!(ended.finished.is_err() && ended.ending().is_none());
        let log = std::fs::read_to_string(dir.path().join("review.log")).unwrap();
        assert!(log.starts_with("ralph: cannot start `/nonexistent/agent`"), "{log}");
    }

    #[tokio::test]
    async fn the_watch_can_end_the_agent() {
        struct Budget;
        impl Watch for Budget {
            fn parsed(&mut self, _: &Parser, _: bool) -> ControlFlow<()> {
                ControlFlow::Break(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::default();
        let req = sh("echo big context; sleep 30");
        let t = CancellationToken::new();
        let ended =
            session(&req, &secrets, &t, 1000).run(&dir.path().join("agent.log"), &mut Budget).await.unwrap();
        assert_eq!(ended.ending(), Some(Ending::Yielded));
        assert!(ended.write_error.is_none());
    }
}
