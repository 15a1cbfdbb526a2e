//! Optional OpenTelemetry trace export (OTLP/HTTP, JSON encoding), off unless
//! `[telemetry] otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names a collector.
//!
//! One trace per `ralph run` session: a `ralph.run` span, a `ralph.iteration` span per
//! iteration, and under it the phases the runner reports (`ralph.baseline`, the agent as
//! `invoke_agent {name}` with the GenAI semantic conventions, `ralph.review`, `ralph.commit`,
//! `ralph.revert`) plus one `ralph.check` span per check command. [`Traced`] wraps the run's
//! [`Reporter`]: it timestamps the phases it is told about and builds the spans from the
//! iteration record when the iteration ends, so the runner needs no other hook.
//!
//! Invariants: export never slows or stops the loop. Spans are queued without waiting and
//! posted by a background task, each request bounded by a timeout; a full queue drops spans;
//! the first failure is reported once as a warning line, later ones not at all; at the end
//! of the run the queue is flushed for at most the timeout. Nothing that may carry a secret
//! or the agent's words is exported: no final message, no failure text, no prompt; the check
//! commands and the run's end reason go through [`Secrets`] masking.

use crate::agent::preset::{self, Provider};
pub use crate::otlp::{Endpoint, EndpointError};
use crate::record::{IterationRecord, Outcome};
use crate::reporter::{Phase, Reporter};
use crate::secrets::Secrets;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one export request may take, unless `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` says.
/// Short: a collector that hangs must not hold the end of a run for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Batches waiting to be posted; beyond this, spans are dropped rather than held in memory
/// (one batch per iteration, so only a collector down for that many iterations loses any).
const QUEUE: usize = 64;

/// Span kind INTERNAL: everything ralph traces happens in or under its own process.
const KIND_INTERNAL: u8 = 1;
/// Status code ERROR (UNSET is 0 and left out).
const STATUS_ERROR: u8 = 2;

/// Why one export request failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot reach the collector: {0}")]
    Io(#[from] std::io::Error),
    #[error("the collector did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the collector answered HTTP {0}")]
    Status(u16),
    #[error("the collector's answer is not HTTP")]
    NotHttp,
    #[error("the collector is not keeping up: spans were dropped")]
    QueueFull,
}

/// Where traces go, if anywhere: `OTEL_SDK_DISABLED=true` turns export off; the standard
/// environment variables come before ralph.toml (so a collector can be chosen for one run
/// without editing a committed file), the traces-specific one first. The error names the
/// variable or key that holds the bad URL.
pub fn endpoint(
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Endpoint>, (String, EndpointError)> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let (source, parsed) = if let Some(v) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Endpoint::traces(&v))
    } else if let Some(v) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
        ("OTEL_EXPORTER_OTLP_ENDPOINT", Endpoint::base(&v))
    } else if let Some(v) = configured {
        ("[telemetry] otlp_endpoint", Endpoint::base(v))
    } else {
        return Ok(None);
    };
    parsed.map(Some).map_err(|e| (source.to_string(), e))
}

/// The export timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds, as the specification has it), else [`DEFAULT_TIMEOUT`].
pub fn timeout(env: &dyn Fn(&str) -> Option<String>) -> Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|k| env(k).and_then(|v| v.trim().parse::<u64>().ok()).filter(|ms| *ms > 0))
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

// --- The OTLP/JSON encoding (the protobuf JSON mapping: ids in hex, 64-bit integers and
// --- times as strings of nanoseconds, enums as numbers).

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest {
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    resource: Resource,
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Debug, Serialize)]
struct Resource {
    attributes: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
struct ScopeSpans {
    scope: Scope,
    spans: Vec<Span>,
}

#[derive(Debug, Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

/// One span, as OTLP/JSON has it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    pub name: String,
    pub kind: u8,
    pub start_time_unix_nano: String,
    pub end_time_unix_nano: String,
    pub attributes: Vec<KeyValue>,
    #[serde(skip_serializing_if = "Status::is_unset")]
    pub status: Status,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub code: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Status {
    fn is_unset(&self) -> bool {
        self.code == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: AnyValue,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AnyValue {
    #[serde(rename = "stringValue")]
    String(String),
    /// int64, which the JSON mapping writes as a string.
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "doubleValue")]
    Double(f64),
    #[serde(rename = "boolValue")]
    Bool(bool),
}

impl From<&str> for AnyValue {
    fn from(v: &str) -> Self {
        AnyValue::String(v.to_string())
    }
}
impl From<String> for AnyValue {
    fn from(v: String) -> Self {
        AnyValue::String(v)
    }
}
impl From<u64> for AnyValue {
    fn from(v: u64) -> Self {
        AnyValue::Int(v.to_string())
    }
}
impl From<u32> for AnyValue {
    fn from(v: u32) -> Self {
        AnyValue::Int(v.to_string())
    }
}
impl From<i32> for AnyValue {
    fn from(v: i32) -> Self {
        AnyValue::Int(v.to_string())
    }
}
impl From<usize> for AnyValue {
    fn from(v: usize) -> Self {
        AnyValue::Int(v.to_string())
    }
}
impl From<f64> for AnyValue {
    fn from(v: f64) -> Self {
        AnyValue::Double(v)
    }
}
impl From<bool> for AnyValue {
    fn from(v: bool) -> Self {
        AnyValue::Bool(v)
    }
}

impl Span {
    fn new(ids: &Ids, parent: Option<u64>, id: u64, name: impl Into<String>, start: u64, end: u64) -> Span {
        Span {
            trace_id: format!("{:032x}", ids.trace),
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")).unwrap_or_default(),
            name: name.into(),
            kind: KIND_INTERNAL,
            start_time_unix_nano: start.to_string(),
            end_time_unix_nano: end.max(start).to_string(),
            attributes: Vec::new(),
            status: Status::default(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<AnyValue>) -> Span {
        self.attributes.push(KeyValue { key: key.to_string(), value: value.into() });
        self
    }

    fn with_opt<V: Into<AnyValue>>(self, key: &str, value: Option<V>) -> Span {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    fn failed(mut self, error_type: &str) -> Span {
        self.status = Status { code: STATUS_ERROR, message: error_type.to_string() };
        self.with("error.type", error_type)
    }
}

/// The body of one export request.
fn encode(spans: Vec<Span>) -> Vec<u8> {
    let req = ExportRequest {
        resource_spans: vec![ResourceSpans {
            resource: Resource {
                attributes: vec![
                    KeyValue { key: "service.name".into(), value: "ralph".into() },
                    KeyValue { key: "service.version".into(), value: env!("CARGO_PKG_VERSION").into() },
                ],
            },
            scope_spans: vec![ScopeSpans {
                scope: Scope { name: "ralph", version: env!("CARGO_PKG_VERSION") },
                spans,
            }],
        }],
    };
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_vec(&req).unwrap_or_default()
}

// --- Building spans from what the runner reports.

/// The trace and the run span every other span hangs from.
#[derive(Debug, Clone)]
struct Ids {
    trace: u128,
    run_span: u64,
}

fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// What the spans say about the agent, fixed for the run.
#[derive(Debug, Clone)]
struct Agent {
    /// `gen_ai.agent.name`: the preset, or the custom command's program name.
    name: String,
    /// `gen_ai.provider.name` and the older `gen_ai.system`, where the preset pins them.
    provider: Option<Provider>,
    /// `gen_ai.request.model`: the configured model.
    model: Option<String>,
}

impl Agent {
    fn from_config(agent: &crate::config::AgentConfig) -> Agent {
        let program = agent.command.first().map(String::as_str).unwrap_or("agent");
        let name = match agent.preset {
            Some(p) => p.name.to_string(),
            None => std::path::Path::new(program)
                .file_name()
                .map_or_else(|| program.to_string(), |f| f.to_string_lossy().into_owned()),
        };
        // A custom command running a preset's program talks to that preset's provider.
        let provider = agent.preset.or_else(|| preset::by_program(program)).and_then(|p| p.provider);
        Agent { name, provider, model: agent.model.clone() }
    }
}

/// What every span of the run needs.
struct Context {
    ids: Ids,
    /// When the run span began.
    started: u64,
    run_id: String,
    agent: Agent,
    secrets: Secrets,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn parse_nanos(rfc3339: &str) -> Option<u64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok()
}

const MS: u64 = 1_000_000;

/// The spans of one iteration: the iteration itself, one per phase the runner reported
/// (`phases`: name and start, in order; each lasts until the next, the last until `end`),
/// and one per check command from the record.
fn iteration_spans(cx: &Context, r: &IterationRecord, phases: &[(Phase, u64)], end: u64) -> Vec<Span> {
    // The record's times are to the millisecond: never before the run span began.
    let start = parse_nanos(&r.started_at)
        .or_else(|| phases.first().map(|p| p.1))
        .unwrap_or_else(|| end.saturating_sub(r.duration_ms * MS))
        .max(cx.started);
    let id = new_span_id();
    let mut iteration = Span::new(&cx.ids, Some(cx.ids.run_span), id, "ralph.iteration", start, end)
        .with("ralph.run.id", cx.run_id.as_str())
        .with("ralph.iteration", r.iteration)
        .with("ralph.task.id", r.task.as_str())
        .with("ralph.outcome", r.outcome.as_str())
        .with("ralph.promise", r.promise)
        .with("ralph.blocked", r.blocked)
        .with("ralph.files_changed", r.files_changed.len())
        .with("ralph.learnings_added", r.learnings_added.len())
        .with_opt("ralph.cost_usd", r.cost_usd)
        .with_opt("ralph.tokens", r.tokens.map(|t| t.total()))
        .with_opt("ralph.commit", r.commit.clone());
    if !r.outcome.is_green() {
        iteration = iteration.failed(r.outcome.as_str());
    }
    let mut spans = vec![iteration];
    let mut checks_start = None;
    for (i, (phase, from)) in phases.iter().enumerate() {
        let to = phases.get(i + 1).map_or(end, |p| p.1);
        let span = match phase {
            Phase::Agent => agent_span(cx, r, id, *from, to),
            // The checks have spans of their own, from the record.
            Phase::Checks => {
                checks_start = Some(*from);
                continue;
            }
            Phase::BaselineChecks => Span::new(&cx.ids, Some(id), new_span_id(), "ralph.baseline", *from, to),
            Phase::Review => {
                let s = Span::new(&cx.ids, Some(id), new_span_id(), "ralph.review", *from, to)
                    .with_opt("ralph.review.approved", r.review.as_ref().map(|v| v.approved));
                if r.review.as_ref().is_some_and(|v| !v.approved) { s.failed("rejected") } else { s }
            }
            Phase::Commit => {
                let s = Span::new(&cx.ids, Some(id), new_span_id(), "ralph.commit", *from, to)
                    .with_opt("vcs.ref.head.revision", r.commit.clone())
                    .with("ralph.files_changed", r.files_changed.len());
                // Green work that ends red was refused by a commit hook.
                if r.commit.is_none() && !r.outcome.is_green() { s.failed("refused") } else { s }
            }
            Phase::Revert => Span::new(&cx.ids, Some(id), new_span_id(), "ralph.revert", *from, to)
                .with("ralph.files_changed", r.files_changed.len()),
        };
        spans.push(span);
    }
    // Checks run one after another, after the checks phase began; the record's millisecond
    // times are kept in that order.
    let mut next = checks_start.unwrap_or(start);
    for c in &r.checks {
        let from = c.started_at.as_deref().and_then(parse_nanos).map_or(next, |t| t.max(next));
        let to = (from + c.duration_ms * MS).min(end.max(from));
        next = to;
        let failed = c.timed_out || c.exit_code != Some(0);
        let mut s = Span::new(&cx.ids, Some(id), new_span_id(), "ralph.check", from, to)
            .with("ralph.check.command", cx.secrets.mask(&c.command))
            .with_opt("process.exit.code", c.exit_code)
            .with("ralph.check.timed_out", c.timed_out)
            .with("ralph.check.tolerated", c.tolerated)
            .with("ralph.check.failed_tests", c.failed_tests.len());
        if failed && !c.tolerated {
            s = s.failed(if c.timed_out { "timeout" } else { "failed" });
        }
        spans.push(s);
    }
    spans
}

/// The agent's span, after the GenAI semantic conventions' `invoke_agent`.
fn agent_span(cx: &Context, r: &IterationRecord, parent: u64, from: u64, to: u64) -> Span {
    let a = &cx.agent;
    let mut s = Span::new(&cx.ids, Some(parent), new_span_id(), format!("invoke_agent {}", a.name), from, to)
        .with("gen_ai.operation.name", "invoke_agent")
        .with("gen_ai.agent.name", a.name.as_str())
        .with_opt("gen_ai.provider.name", a.provider.map(|p| p.name))
        .with_opt("gen_ai.system", a.provider.map(|p| p.system))
        .with_opt("gen_ai.request.model", a.model.clone())
        .with_opt("gen_ai.response.model", r.model.clone())
        .with_opt("gen_ai.conversation.id", r.agent_session_id.clone());
    if let Some(t) = r.tokens {
        // The conventions count cached input in the input tokens; ralph's record does not.
        s = s
            .with("gen_ai.usage.input_tokens", t.input + t.cache_read + t.cache_write)
            .with("gen_ai.usage.output_tokens", t.output)
            .with("gen_ai.usage.cache_read.input_tokens", t.cache_read)
            .with("gen_ai.usage.cache_creation.input_tokens", t.cache_write);
    }
    s = s
        .with_opt("ralph.cost_usd", r.cost_usd)
        .with_opt("ralph.agent.turns", r.num_turns)
        .with_opt("process.exit.code", r.exit_code)
        .with("ralph.task.id", r.task.as_str())
        .with("ralph.iteration", r.iteration);
    let failed = match r.outcome {
        Outcome::AgentFailed | Outcome::Timeout | Outcome::IdleTimeout | Outcome::RateLimited => true,
        _ => r.is_error,
    };
    if failed { s.failed(r.outcome.as_str()) } else { s }
}

// --- Posting.

/// Posts `body` to the collector: one HTTP/1.1 request on its own connection. Only the
/// status line of the answer is read.
async fn post(ep: &Endpoint, body: &[u8]) -> Result<(), ExportError> {
    let mut stream = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ralph/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ep.path,
        ep.authority(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut answer = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let mut words = line.lines().next().unwrap_or("").split_whitespace();
    let code = match (words.next(), words.next()) {
        (Some(v), Some(c)) if v.starts_with("HTTP/") => c.parse::<u16>().map_err(|_| ExportError::NotHttp)?,
        _ => return Err(ExportError::NotHttp),
    };
    if (200..300).contains(&code) { Ok(()) } else { Err(ExportError::Status(code)) }
}

/// The background poster: a queue and the first failure it met.
struct Exporter {
    endpoint: Endpoint,
    timeout: Duration,
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Exporter {
    /// Starts the poster on the current tokio runtime; `None` outside one.
    fn start(endpoint: Endpoint, timeout: Duration) -> Option<Exporter> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let (ep, slot) = (endpoint.clone(), failure.clone());
        let worker = handle.spawn(async move {
            while let Some(body) = rx.recv().await {
                let sent = match tokio::time::timeout(timeout, post(&ep, &body)).await {
                    Ok(r) => r,
                    Err(_) => Err(ExportError::Timeout(timeout)),
                };
                if let Err(e) = sent {
                    note(&slot, &e);
                }
            }
        });
        Some(Exporter { endpoint, timeout, tx: Some(tx), worker: Some(worker), failure })
    }

    /// Queues one request without waiting.
    fn send(&self, spans: Vec<Span>) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(encode(spans)).is_err() {
            note(&self.failure, &ExportError::QueueFull);
        }
    }

    /// The first failure not yet taken.
    fn take_failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    /// Sends what is queued, waiting at most the timeout (plus a little for the last
    /// connection to close).
    async fn close(&mut self) {
        self.tx = None;
        let Some(mut worker) = self.worker.take() else { return };
        let bound = self.timeout + Duration::from_millis(500);
        if tokio::time::timeout(bound, &mut worker).await.is_err() {
            worker.abort();
            note(&self.failure, &ExportError::Timeout(self.timeout));
        }
    }
}

fn note(slot: &Mutex<Option<String>>, e: &ExportError) {
    if let Ok(mut f) = slot.lock() {
        f.get_or_insert_with(|| e.to_string());
    }
}

// --- The reporter wrapper the runner uses.

/// The run's trace, when telemetry is on.
struct Trace {
    cx: Context,
    exporter: Exporter,
    session: u32,
    /// Phases of the current iteration and when each started.
    phases: Vec<(Phase, u64)>,
    iterations: u32,
    tokens: u64,
    cost: f64,
    /// The one warning was printed.
    warned: bool,
}

/// A [`Reporter`] that passes everything on to `inner` and, with telemetry on, turns the
/// run's events into spans.
pub struct Traced<'a> {
    inner: &'a mut dyn Reporter,
    trace: Option<Trace>,
}

impl<'a> Traced<'a> {
    /// Wraps the run's reporter. Telemetry is on when [`endpoint`] finds a collector; a bad
    /// URL in the environment is reported and export stays off (ralph.toml's is checked when
    /// the file is read).
    pub fn start(
        inner: &'a mut dyn Reporter,
        cfg: &crate::config::Config,
        run_id: &str,
        session: u32,
        secrets: &Secrets,
    ) -> Traced<'a> {
        let env = |k: &str| std::env::var(k).ok();
        let ep = match endpoint(cfg.otlp_endpoint.as_deref(), &env) {
            Ok(Some(ep)) => ep,
            Ok(None) => return Traced { inner, trace: None },
            Err((source, e)) => {
                inner.line(&format!("warning: telemetry is off: {source}: {e}"));
                return Traced { inner, trace: None };
            }
        };
        let Some(exporter) = Exporter::start(ep, timeout(&env)) else {
            return Traced { inner, trace: None };
        };
        let started = now_nanos();
        let cx = Context {
            ids: Ids { trace: fastrand::u128(1..), run_span: new_span_id() },
            started,
            run_id: run_id.to_string(),
            agent: Agent::from_config(&cfg.agent),
            secrets: secrets.clone(),
        };
        let trace = Trace {
            cx,
            exporter,
            session,
            phases: Vec::new(),
            iterations: 0,
            tokens: 0,
            cost: 0.0,
            warned: false,
        };
        Traced { inner, trace: Some(trace) }
    }

    /// Ends the run span and flushes the queue (bounded by the export timeout).
    pub async fn finish(mut self, exit_code: u8, reason: &str) {
        let Some(t) = self.trace.as_mut() else { return };
        let mut run = Span::new(&t.cx.ids, None, t.cx.ids.run_span, "ralph.run", t.cx.started, now_nanos())
            .with("ralph.run.id", t.cx.run_id.as_str())
            .with("ralph.run.session", t.session)
            .with("ralph.run.iterations", t.iterations)
            .with("ralph.run.exit_code", u32::from(exit_code))
            .with("ralph.run.end_reason", t.cx.secrets.mask(reason))
            .with("ralph.tokens", t.tokens)
            .with("ralph.cost_usd", t.cost)
            .with("gen_ai.agent.name", t.cx.agent.name.as_str());
        // Done (0) and stopped (130) are how runs end; anything else is worth a look.
        if exit_code != crate::exit_code::OK && exit_code != crate::exit_code::INTERRUPTED {
            run = run.failed(&format!("exit {exit_code}"));
        }
        t.exporter.send(vec![run]);
        t.exporter.close().await;
        self.warn();
    }

    /// Prints the first export failure, once in the run.
    fn warn(&mut self) {
        let Some(t) = self.trace.as_mut() else { return };
        if t.warned {
            return;
        }
        if let Some(e) = t.exporter.take_failure() {
            t.warned = true;
            self.inner.line(&format!(
                "warning: telemetry: cannot export traces to {}: {e}; the run goes on (further export errors are not shown)",
                t.exporter.endpoint.url()
            ));
        }
    }
}

impl Reporter for Traced<'_> {
    fn line(&mut self, text: &str) {
        self.warn();
        self.inner.line(text);
    }

    fn iteration_started(&mut self, iteration: u32, task: &str, title: &str, attempt: u32) {
        self.warn();
        if let Some(t) = self.trace.as_mut() {
            t.phases.clear();
        }
        self.inner.iteration_started(iteration, task, title, attempt);
    }

    fn phase(&mut self, phase: Phase) {
        if let Some(t) = self.trace.as_mut() {
            t.phases.push((phase, now_nanos()));
        }
        self.inner.phase(phase);
    }

    fn iteration_ended(&mut self, record: &IterationRecord) {
        if let Some(t) = self.trace.as_mut() {
            let phases = std::mem::take(&mut t.phases);
            t.exporter.send(iteration_spans(&t.cx, record, &phases, now_nanos()));
            t.iterations += 1;
            t.tokens += record.tokens.map_or(0, |x| x.total());
            t.cost += record.cost_usd.unwrap_or(0.0);
        }
        self.inner.iteration_ended(record);
        self.warn();
    }

    fn activity(&mut self, text: &str, is_tool: bool) {
        self.inner.activity(text, is_tool);
    }

    fn totals(&mut self, summary: &str) {
        self.inner.totals(summary);
    }

    fn waiting(&mut self, line: &str, until: std::time::SystemTime) {
        self.warn();
        self.inner.waiting(line, until);
    }

    fn workers(&mut self, lines: &[String]) {
        self.inner.workers(lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CheckRecord, Review, Tokens};

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_environment_comes_before_the_file_and_can_turn_export_off() {
        let file = Some("http://file:1");
        assert_eq!(endpoint(None, &env(&[])).unwrap(), None);
        assert_eq!(endpoint(file, &env(&[])).unwrap().unwrap().host, "file");
        let generic = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:2")]);
        assert_eq!(endpoint(file, &generic).unwrap().unwrap().path, "/v1/traces");
        assert_eq!(endpoint(file, &generic).unwrap().unwrap().host, "generic");
        let both = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:2"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:3/t"),
        ]);
        assert_eq!(endpoint(file, &both).unwrap().unwrap().path, "/t");
        let off = env(&[("OTEL_SDK_DISABLED", "TRUE"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:2")]);
        assert_eq!(endpoint(file, &off).unwrap(), None);
        let bad = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x")]);
        assert_eq!(endpoint(file, &bad).unwrap_err().0, "OTEL_EXPORTER_OTLP_ENDPOINT");

        assert_eq!(timeout(&env(&[])), DEFAULT_TIMEOUT);
        assert_eq!(timeout(&env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "300")])), Duration::from_millis(300));
        assert_eq!(timeout(&env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")])), DEFAULT_TIMEOUT);
    }

    fn record() -> IterationRecord {
        IterationRecord {
            started_at: "2026-01-01T00:00:00.000Z".into(),
            ended_at: "2026-01-01T00:00:10.000Z".into(),
            duration_ms: 10_000,
            exit_code: Some(0),
            checks: vec![
                CheckRecord {
                    command: "make test TOKEN=s3cr3t-value".into(),
                    exit_code: Some(0),
                    duration_ms: 2000,
                    started_at: Some("2026-01-01T00:00:05.000Z".into()),
                    timed_out: false,
                    failed_tests: vec![],
                    tolerated: false,
                },
                CheckRecord {
                    command: "make lint".into(),
                    exit_code: Some(1),
                    duration_ms: 1000,
                    started_at: None,
                    timed_out: false,
                    failed_tests: vec![],
                    tolerated: true,
                },
            ],
            review: Some(Review { approved: true, reasons: "fine".into() }),
            head_before: Some("abc".into()),
            commit: Some("def".into()),
            files_changed: vec!["a".into(), "b".into()],
            promise: true,
            tokens: Some(Tokens { input: 10, output: 20, cache_read: 100, cache_write: 5 }),
            cost_usd: Some(0.5),
            num_turns: Some(4),
            model: Some("claude-x".into()),
            agent_session_id: Some("sess".into()),
            final_message: Some("the agent's words s3cr3t-value".into()),
            ..IterationRecord::new("r1", 3, "010-a", Outcome::Done)
        }
    }

    fn agent(toml: &str) -> Agent {
        let cfg = crate::config::Config::parse(std::path::Path::new("ralph.toml"), toml).unwrap();
        Agent::from_config(&cfg.agent)
    }

    #[test]
    fn the_provider_comes_from_the_preset_or_the_program_it_runs() {
        let gemini = agent("[agent]\npreset = \"gemini\"\nbin = \"/opt/g/gemini-nightly\"\n");
        assert_eq!(
            (gemini.name.as_str(), gemini.provider.map(|p| (p.name, p.system))),
            ("gemini", Some(("gcp.gemini", "gemini")))
        );
        let codex = agent("[agent]\ncommand = [\"/usr/local/bin/codex\", \"exec\"]\n");
        assert_eq!((codex.name.as_str(), codex.provider.map(|p| p.name)), ("codex", Some("openai")));
        for toml in ["[agent]\npreset = \"opencode\"\n", "[agent]\ncommand = [\"my-agent\"]\n"] {
            assert_eq!(agent(toml).provider, None, "{toml}");
        }
    }

    fn cx() -> Context {
        Context {
            ids: Ids { trace: 0xabc, run_span: 0x77 },
            started: T0 - 5000 * MS,
            run_id: "r1".into(),
            agent: Agent {
                name: "claude".into(),
                provider: Some(Provider { name: "anthropic", system: "anthropic" }),
                model: Some("opus".into()),
            },
            secrets: Secrets::from_vars([("API_TOKEN", "s3cr3t-value")]),
        }
    }

    fn attr<'s>(s: &'s Span, key: &str) -> Option<&'s AnyValue> {
        s.attributes.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

    #[test]
    fn an_iteration_becomes_a_span_tree_from_its_record_and_phases() {
        let phases = vec![
            (Phase::BaselineChecks, T0 + MS),
            (Phase::Agent, T0 + 1000 * MS),
            (Phase::Checks, T0 + 4900 * MS),
            (Phase::Review, T0 + 8000 * MS),
            (Phase::Commit, T0 + 9000 * MS),
        ];
        let spans = iteration_spans(&cx(), &record(), &phases, T0 + 10_000 * MS);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ralph.iteration",
                "ralph.baseline",
                "invoke_agent claude",
                "ralph.review",
                "ralph.commit",
                "ralph.check",
                "ralph.check"
            ]
        );
        let it = &spans[0];
        assert_eq!(it.parent_span_id, format!("{:016x}", 0x77));
        assert_eq!(it.trace_id, format!("{:032x}", 0xabc));
        assert_eq!(it.start_time_unix_nano, T0.to_string());
        assert!(spans[1..].iter().all(|s| s.parent_span_id == it.span_id && s.trace_id == it.trace_id));
        assert_eq!(attr(it, "ralph.outcome"), Some(&"done".into()));
        assert_eq!(attr(it, "ralph.iteration"), Some(&3u32.into()));
        assert_eq!(it.status.code, 0);

        let agent = &spans[2];
        assert_eq!(agent.start_time_unix_nano, (T0 + 1000 * MS).to_string());
        assert_eq!(agent.end_time_unix_nano, (T0 + 4900 * MS).to_string());
        assert_eq!(attr(agent, "gen_ai.operation.name"), Some(&"invoke_agent".into()));
        assert_eq!(attr(agent, "gen_ai.provider.name"), Some(&"anthropic".into()));
        assert_eq!(attr(agent, "gen_ai.request.model"), Some(&"opus".into()));
        assert_eq!(attr(agent, "gen_ai.response.model"), Some(&"claude-x".into()));
        assert_eq!(attr(agent, "gen_ai.usage.input_tokens"), Some(&115u64.into()));
        assert_eq!(attr(agent, "gen_ai.usage.output_tokens"), Some(&20u64.into()));
        assert_eq!(attr(agent, "gen_ai.usage.cache_read.input_tokens"), Some(&100u64.into()));
        assert_eq!(attr(agent, "ralph.cost_usd"), Some(&0.5.into()));

        let commit = &spans[4];
        assert_eq!(attr(commit, "vcs.ref.head.revision"), Some(&"def".into()));
        assert_eq!(commit.end_time_unix_nano, (T0 + 10_000 * MS).to_string());

        // The first check starts when the record says; the second follows it.
        let (c1, c2) = (&spans[5], &spans[6]);
        assert_eq!(c1.start_time_unix_nano, (T0 + 5000 * MS).to_string());
        assert_eq!(c1.end_time_unix_nano, (T0 + 7000 * MS).to_string());
        assert_eq!(c2.start_time_unix_nano, (T0 + 7000 * MS).to_string());
        assert_eq!(attr(c1, "ralph.check.command"), Some(&"make test TOKEN=[MASKED]".into()));
        assert_eq!(attr(c2, "process.exit.code"), Some(&1i32.into()));
        assert_eq!(c2.status.code, 0, "a tolerated failure is no error");

        // Nothing the agent said, and no secret, is in the export.
        let body = String::from_utf8(encode(spans)).unwrap();
        assert!(!body.contains("s3cr3t"), "{body}");
        assert!(!body.contains("agent's words"), "{body}");
    }

    #[test]
    fn red_iterations_and_failed_agents_are_errors() {
        let mut r = record();
        r.outcome = Outcome::AgentFailed;
        r.exit_code = Some(3);
        r.commit = None;
        r.checks.clear();
        let phases = vec![(Phase::Agent, T0 + MS), (Phase::Revert, T0 + 5000 * MS)];
        let spans = iteration_spans(&cx(), &r, &phases, T0 + 6000 * MS);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ralph.iteration", "invoke_agent claude", "ralph.revert"]);
        assert_eq!(spans[0].status.code, STATUS_ERROR);
        assert_eq!(spans[0].status.message, "agent_failed");
        assert_eq!(spans[1].status.code, STATUS_ERROR);
        assert_eq!(attr(&spans[1], "error.type"), Some(&"agent_failed".into()));
        assert_eq!(spans[2].status.code, 0);
    }

    #[test]
    fn the_json_follows_the_protobuf_mapping() {
        let ids = Ids { trace: 1, run_span: 2 };
        let s = Span::new(&ids, None, 2, "ralph.run", 5, 9)
            .with("n", 7u64)
            .with("f", 0.25)
            .with("b", true)
            .with("s", "x");
        let v: serde_json::Value = serde_json::from_slice(&encode(vec![s])).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "ralph"}})
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "00000000000000000000000000000001");
        assert_eq!(span["spanId"], "0000000000000002");
        assert!(span.get("parentSpanId").is_none());
        assert_eq!(span["startTimeUnixNano"], "5");
        assert_eq!(span["kind"], 1);
        assert_eq!(span["attributes"][0]["value"], serde_json::json!({"intValue": "7"}));
        assert_eq!(span["attributes"][1]["value"], serde_json::json!({"doubleValue": 0.25}));
        assert_eq!(span["attributes"][2]["value"], serde_json::json!({"boolValue": true}));
        assert!(span.get("status").is_none());
    }
}
