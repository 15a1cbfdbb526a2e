//! Deliveries: each (event, notifier) pair on a thread of its own, so the loop never waits for
//! one. A try has the notifier's timeout; a failed try is retried (`retries` times, with a
//! backoff) unless it cannot succeed (a 4xx answer, a program that does not exist). Every
//! delivery is a line in the run's `notify.log`; a failed one is also a line for the run's
//! output ([`Shared::take_failures`]). At most [`MAX_PENDING`] are under way at once: beyond,
//! an event is dropped, and said.
//!
//! A command notifier is started through `process::reaper::spare`, so that the loop's sweeps
//! of escaped processes (which run while the command may still be going) leave it alone; it
//! runs in a process group of its own, ended whole at its timeout.

use super::Event;
use super::shape::{self, Target};
use crate::config::{NotifyConfig, NotifySink, Source};
use crate::secrets::Secrets;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Deliveries under way at most.
pub const MAX_PENDING: usize = 32;

/// Output of a command notifier kept for `notify.log`.
const OUTPUT_BYTES: usize = 4096;

/// The first wait between tries; doubled each time, never more than [`BACKOFF_MAX`].
const BACKOFF: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// One configured notifier, its URL and tokens read from the environment when the run began.
pub(super) struct Sink {
    pub cfg: NotifyConfig,
    /// `Err`: an environment variable it needs is not set.
    target: Result<Target, String>,
    http: Option<ureq::Agent>,
    root: PathBuf,
    /// What the output and `notify.log` call it.
    desc: String,
}

impl Sink {
    pub fn new(cfg: &NotifyConfig, root: &Path) -> Sink {
        let target = resolve(&cfg.sink);
        let http = matches!(target, Ok(ref t) if !matches!(t, Target::Command(_))).then(|| {
            let config = ureq::Agent::config_builder()
                .timeout_global(Some(cfg.timeout))
                .http_status_as_error(false)
                .user_agent(concat!("ralph/", env!("CARGO_PKG_VERSION")))
                .build();
            ureq::Agent::new_with_config(config)
        });
        Sink { cfg: cfg.clone(), target, http, root: root.to_path_buf(), desc: describe(cfg) }
    }
}

/// The notifier in words: its kind and where it sends (a URL from the environment by the
/// variable's name), and where ralph.toml configures it.
fn describe(cfg: &NotifyConfig) -> String {
    let url = |u: &Source| match u {
        Source::Literal(u) => u.clone(),
        Source::Env(n) => format!("${n}"),
    };
    let to = match &cfg.sink {
        NotifySink::Webhook { url: u, .. } | NotifySink::Ntfy { url: u, .. } => url(u),
        NotifySink::Slack { url: u } | NotifySink::Discord { url: u } => url(u),
        NotifySink::Command(argv) => {
            let line = argv.join(" ");
            if line.chars().count() > 60 {
                format!("{}…", line.chars().take(59).collect::<String>())
            } else {
                line
            }
        }
        NotifySink::Telegram { chat_id, .. } => format!("chat {chat_id}"),
    };
    format!("{} {to} ({})", cfg.sink.kind(), cfg.at)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("the environment variable {name} is not set"))
}

fn resolve(sink: &NotifySink) -> Result<Target, String> {
    let url = |u: &Source| match u {
        Source::Literal(u) => Ok(u.clone()),
        Source::Env(n) => env(n),
    };
    let token = |t: &Option<String>| t.as_deref().map(env).transpose();
    Ok(match sink {
        NotifySink::Webhook { url: u, token_env } => {
            Target::Webhook { url: url(u)?, token: token(token_env)? }
        }
        NotifySink::Ntfy { url: u, token_env } => Target::Ntfy { url: url(u)?, token: token(token_env)? },
        NotifySink::Slack { url: u } => Target::Slack { url: url(u)? },
        NotifySink::Discord { url: u } => Target::Discord { url: url(u)? },
        NotifySink::Telegram { token_env, chat_id } => Target::Telegram {
            api: shape::TELEGRAM_API.into(),
            token: env(token_env)?,
            chat_id: chat_id.clone(),
        },
        NotifySink::Command(argv) => Target::Command(argv.clone()),
    })
}

/// What the run's deliveries share: how many are under way, the failures not said yet, the log.
pub(super) struct Shared {
    pending: Mutex<usize>,
    failures: Mutex<Vec<String>>,
    log: PathBuf,
    secrets: Secrets,
}

impl Shared {
    pub fn new(log: PathBuf, secrets: Secrets) -> Shared {
        Shared { pending: Mutex::new(0), failures: Mutex::new(Vec::new()), log, secrets }
    }

    pub fn pending(&self) -> usize {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The failures since the last call, as lines for the run's output.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn failed(&self, line: String) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).push(self.secrets.mask(&line));
    }

    /// Appends to `notify.log`, masked; a failure to write costs only the line.
    fn log(&self, text: &str) {
        if self.log.as_os_str().is_empty() {
            return;
        }
        if let Ok(mut f) = crate::fsx::append(&self.log) {
            let _ = f.write_all(self.secrets.mask(text).as_bytes());
        }
    }

    fn done(&self) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *p = p.saturating_sub(1);
    }
}

/// Starts delivering `ev` to `sink` on a thread of its own; returns at once.
pub(super) fn start(sink: &Sink, ev: &Event, shared: &Arc<Shared>) {
    {
        let mut p = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if *p >= MAX_PENDING {
            drop(p);
            let line = format!(
                "notify: {} not sent to {}: {MAX_PENDING} deliveries are already under way",
                ev.event, sink.desc
            );
            shared.log(&format!("{} {line}\n", crate::logs::now_rfc3339()));
            shared.failed(line);
            return;
        }
        *p += 1;
    }
    let job = Job {
        target: sink.target.clone(),
        http: sink.http.clone(),
        root: sink.root.clone(),
        desc: sink.desc.clone(),
        timeout: sink.cfg.timeout,
        retries: sink.cfg.retries,
        ev: ev.clone(),
    };
    let shared_for_thread = Arc::clone(shared);
    let spawned = std::thread::Builder::new().name("ralph-notify".into()).spawn(move || {
        job.run(&shared_for_thread);
        shared_for_thread.done();
    });
    if let Err(e) = spawned {
        shared.done();
        shared.failed(format!("notify: {} not sent to {}: cannot start a thread: {e}", ev.event, sink.desc));
    }
}

/// One delivery.
struct Job {
    target: Result<Target, String>,
    http: Option<ureq::Agent>,
    root: PathBuf,
    desc: String,
    timeout: Duration,
    retries: u32,
    ev: Event,
}

/// Why a try failed, and whether another could succeed.
struct Failed {
    words: String,
    permanent: bool,
}

impl Job {
    fn run(&self, shared: &Shared) {
        let t0 = Instant::now();
        let mut tries = 0;
        let mut output = String::new();
        let result = loop {
            tries += 1;
            match self.once(&mut output) {
                Ok(words) => break Ok(words),
                Err(f) if f.permanent || tries > self.retries => break Err(f.words),
                Err(_) => {
                    let wait = BACKOFF.saturating_mul(1 << (tries - 1).min(8)).min(BACKOFF_MAX);
                    std::thread::sleep(wait);
                }
            }
        };
        let took = format!("{:.1}s", t0.elapsed().as_secs_f64());
        let how = match &result {
            Ok(words) => format!("delivered ({words}) in {took}"),
            Err(words) => format!(
                "failed after {tries} {} in {took}: {words}",
                if tries == 1 { "try" } else { "tries" }
            ),
        };
        let mut line = format!("{} {} → {}: {how}\n", crate::logs::now_rfc3339(), self.ev.event, self.desc);
        if !output.is_empty() {
            line.push_str(&output);
            if !output.ends_with('\n') {
                line.push('\n');
            }
        }
        shared.log(&line);
        if let Err(words) = result {
            shared.failed(format!(
                "notify: {} could not be sent to {}: {words} (the run goes on; see {})",
                self.ev.event,
                self.desc,
                super::NOTIFY_LOG
            ));
        }
    }

    fn once(&self, output: &mut String) -> Result<String, Failed> {
        let target = self.target.as_ref().map_err(|e| Failed { words: e.clone(), permanent: true })?;
        if let Target::Command(argv) = target {
            return self.command(argv, output);
        }
        let (Some(post), Some(agent)) = (shape::post(target, &self.ev), self.http.as_ref()) else {
            return Err(Failed { words: "nothing to send".into(), permanent: true });
        };
        let mut req = agent.post(&post.url);
        for (k, v) in &post.headers {
            req = req.header(k, v);
        }
        match req.send(&post.body[..]) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    Ok(format!("HTTP {status}"))
                } else {
                    // A client error will not go away by trying again, but for a timeout or
                    // a rate limit.
                    let permanent = (400..500).contains(&status) && status != 408 && status != 429;
                    Err(Failed { words: format!("HTTP {status}"), permanent })
                }
            }
            Err(e) => Err(Failed { words: e.to_string(), permanent: false }),
        }
    }

    /// Runs the command with the event's JSON on stdin and in `RALPH_EVENT_*`, in its own
    /// process group at the repository's root, for at most the timeout.
    fn command(&self, argv: &[String], output: &mut String) -> Result<String, Failed> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.root)
            .envs(self.ev.env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = crate::process::reaper::spare(|| {
            let child = cmd.spawn()?;
            let pid = child.id();
            Ok((child, pid))
        })
        .map_err(|e| Failed {
            words: format!("cannot start `{}`: {e}", argv[0]),
            permanent: e.kind() == std::io::ErrorKind::NotFound,
        })?;
        let pid = child.id();
        let json = self.ev.json();
        let stdin = child.stdin.take();
        // On threads: a command that reads no stdin, or prints a lot, must not stall the wait.
        let writer = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                let _ = s.write_all(&json);
            }
        });
        let readers: Vec<_> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut r| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = OUTPUT_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                kept
            })
        })
        .collect();
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if Instant::now() >= deadline => {
                    crate::process::group::kill(pid);
                    let _ = child.wait();
                    break Err(format!(
                        "`{}` timed out after {}",
                        argv[0],
                        humantime::format_duration(self.timeout)
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break Err(format!("cannot wait for `{}`: {e}", argv[0])),
            }
        };
        crate::process::reaper::unspare(pid);
        // Whatever it left behind in its group goes with it.
        crate::process::group::kill(pid);
        let _ = writer.join();
        for r in readers {
            if let Ok(bytes) = r.join() {
                output.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        match status {
            Ok(s) if s.success() => Ok("exit 0".into()),
            Ok(s) => Err(Failed {
                words: match s.code() {
                    Some(c) => format!("`{}` exited with {c}", argv[0]),
                    None => format!("`{}` was killed by a signal", argv[0]),
                },
                permanent: false,
            }),
            Err(words) => Err(Failed { words, permanent: false }),
        }
    }
}
