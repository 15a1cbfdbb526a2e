//! The run report of `ralph report`: one self-contained HTML page for a run — a timeline of its
//! iterations coloured by outcome (a lane per task, or per worker for a parallel run), tokens
//! and cost over time, the task table and a row per iteration linking to its files.
//!
//! Invariants:
//! - Self-contained: inline CSS and inline SVG only; no script, no external stylesheet, font,
//!   image or CDN, so the page opens offline and years later.
//! - Every piece of text from a record or run.json goes through [`esc`]: agent output may hold
//!   HTML. Links are relative hrefs built by the caller (percent-encoded by [`href`]).
//! - Only what the records and run.json already hold is shown (they were masked when written);
//!   the page reads no environment and no agent log.
//! - Rendering is pure: same input, same page.

use crate::record::{CheckRecord, IterationRecord, Outcome};
use crate::state::RunMeta;
use crate::stats::{cause, human_ms, human_tokens};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The files of an iteration folder the page links to, with their labels.
pub const ITERATION_FILES: [(&str, &str); 5] = [
    ("prompt", "prompt.md"),
    ("agent log", "agent.log"),
    ("checks", "checks.log"),
    ("rejected patch", "rejected.patch"),
    ("hooks", "hooks.log"),
];

/// What the page shows.
pub struct Input<'a> {
    pub run_id: &'a str,
    pub meta: Option<&'a RunMeta>,
    pub records: &'a [IterationRecord],
    /// Iteration folders without a record: in progress, or cut short by a crash.
    pub unrecorded: &'a [u32],
    /// Per iteration, the files that exist: (label, relative href).
    pub links: &'a BTreeMap<u32, Vec<(&'static str, String)>>,
    /// When the page was made (RFC 3339).
    pub generated_at: &'a str,
}

/// Per iteration folder of `run_dir` (`numbers`), the files of [`ITERATION_FILES`] it holds,
/// linked through `prefix` (the path segments from the page's folder to `run_dir`).
pub fn links(
    run_dir: &std::path::Path,
    prefix: &[String],
    numbers: impl IntoIterator<Item = u32>,
) -> BTreeMap<u32, Vec<(&'static str, String)>> {
    let mut links = BTreeMap::new();
    for n in numbers {
        let dir = crate::logs::iter_dir(run_dir, n);
        let folder = dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let files: Vec<(&'static str, String)> = ITERATION_FILES
            .iter()
            .filter(|(_, name)| dir.join(name).is_file())
            .map(|&(label, name)| {
                let segments = prefix.iter().map(String::as_str).chain([folder.as_str(), name]);
                (label, href(segments))
            })
            .collect();
        links.insert(n, files);
    }
    links
}

/// Writes the page of run `run_id` as `report.html` in its folder (what `ralph report` writes
/// by default); returns its path.
pub fn write_beside(
    run_dir: &std::path::Path,
    run_id: &str,
) -> Result<std::path::PathBuf, crate::state::StateError> {
    let meta = RunMeta::load(run_dir).ok();
    let records = crate::record::read_all(&crate::logs::records_path(run_dir));
    let recorded: std::collections::BTreeSet<u32> = records.iter().map(|r| r.iteration).collect();
    let unrecorded: Vec<u32> =
        crate::logs::iterations(run_dir).into_iter().filter(|n| !recorded.contains(n)).collect();
    let links = links(run_dir, &[], recorded.iter().chain(&unrecorded).copied());
    let generated_at = crate::logs::now_rfc3339();
    let html = render(&Input {
        run_id,
        meta: meta.as_ref(),
        records: &records,
        unrecorded: &unrecorded,
        links: &links,
        generated_at: &generated_at,
    });
    let out = run_dir.join("report.html");
    crate::state::atomic_write(&out, html.as_bytes())?;
    Ok(out)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative URL from path segments: each segment percent-encoded, joined by `/`.
pub fn href<'s>(segments: impl IntoIterator<Item = &'s str>) -> String {
    let mut out = String::new();
    for (i, seg) in segments.into_iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const CSS: &str = r#"
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --c:#8c959f; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 28px 56px; }
h1 { font-size:22px; margin:0 0 2px; }
h2 { font-size:16px; margin:32px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
.sub { color:var(--muted); margin:0; }
code, pre { font-family:ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace; font-size:12px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(140px,1fr)); gap:10px; margin:20px 0 0; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:var(--soft); }
.card b { display:block; font-size:20px; font-weight:600; }
.card span { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.legend { display:flex; flex-wrap:wrap; gap:6px 16px; margin:0 0 8px; font-size:13px; }
.legend span { display:inline-flex; align-items:center; gap:6px; }
.legend i { display:inline-block; width:14px; height:14px; border-radius:3px; background:var(--c); }
.legend i.line { height:3px; border-radius:0; }
svg { display:block; width:100%; height:auto; }
svg text { font:11px system-ui,"Liberation Sans","DejaVu Sans",sans-serif; fill:#424a53; }
svg .lane { fill:#f6f8fa; }
svg .grid { stroke:#d1d9e0; stroke-width:1; }
svg .bar { fill:var(--c); }
svg a:hover .bar { stroke:#1f2328; stroke-width:1.5; }
svg .barlabel { fill:#fff; font-weight:600; font-size:10px; pointer-events:none; }
svg .series { fill:none; stroke-width:2.2; stroke-linejoin:round; }
svg .series.tokens { stroke:#0969da; } svg .series.cost { stroke:#bf5700; stroke-dasharray:6 3; }
svg .point { fill:var(--c); stroke:#fff; stroke-width:1; }
.k-tokens { --c:#0969da; } .k-cost { --c:#bf5700; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; font-weight:600; color:var(--muted); font-size:12px; border-bottom:1px solid var(--line); padding:6px 8px; }
td { padding:6px 8px; border-bottom:1px solid #eaeef2; vertical-align:top; }
td code { white-space:nowrap; }
.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:target { background:#fff8c5; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; background:var(--c); color:#fff;
  font-size:12px; font-weight:600; white-space:nowrap; }
.files a { margin-right:8px; white-space:nowrap; }
a { color:#0969da; text-decoration:none; } a:hover { text-decoration:underline; }
details summary { cursor:pointer; }
pre { white-space:pre-wrap; word-break:break-word; background:var(--soft); border:1px solid var(--line);
  border-radius:6px; padding:8px; margin:6px 0 0; max-height:320px; overflow:auto; }
.empty { color:var(--muted); font-style:italic; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
.o-done { --c:#1a7f37; } .o-progress { --c:#4ac26b; } .o-checks_failed { --c:#cf222e; }
.o-agent_failed { --c:#8250df; } .o-timeout { --c:#e16f24; } .o-idle_timeout { --c:#bf8700; }
.o-interrupted { --c:#6e7781; } .o-rate_limited { --c:#0969da; } .o-restarted { --c:#9a6700; } .o-none { --c:#afb8c1; }
"#;

/// Where each iteration sits in time, in ms from the run's first iteration.
struct Placed {
    start: f64,
    end: f64,
}

fn millis(s: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_millis() as f64)
}

fn place(records: &[IterationRecord]) -> (Vec<Placed>, f64) {
    let mut out: Vec<Placed> = Vec::with_capacity(records.len());
    let mut prev_end: Option<f64> = None;
    for r in records {
        let start = millis(&r.started_at).or(prev_end).unwrap_or(0.0);
        let end = millis(&r.ended_at).unwrap_or(start + r.duration_ms as f64).max(start);
        prev_end = Some(end);
        out.push(Placed { start, end });
    }
    let t0 = out.iter().map(|p| p.start).fold(f64::INFINITY, f64::min);
    let t0 = if t0.is_finite() { t0 } else { 0.0 };
    for p in &mut out {
        p.start -= t0;
        p.end -= t0;
    }
    let span = out.iter().map(|p| p.end).fold(0.0, f64::max).max(1.0);
    (out, span)
}

/// A compact elapsed-time label for an axis: `0`, `45s`, `2m`, `1m30s`, `3h`, `1h30m`.
fn tick_label(ms: f64) -> String {
    let s = (ms / 1000.0).round() as u64;
    if ms > 0.0 && ms < 1000.0 {
        return format!("{}ms", ms.round());
    }
    match s {
        0 => "0".into(),
        1..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, s / 60 % 60),
    }
}

/// A tick step (ms) that puts at most eight ticks on the span.
fn time_step(span: f64) -> f64 {
    const STEPS: [f64; 27] = [
        10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3,
        900e3, 1_800e3, 3_600e3, 7_200e3, 10_800e3, 21_600e3, 43_200e3, 86_400e3, 172_800e3, 432_000e3,
        864_000e3,
    ];
    STEPS.iter().copied().find(|s| span / s <= 8.0).unwrap_or(span / 8.0)
}

/// The smallest of 1, 2, 4, 6, 8 times a power of ten that is at least `v`: quarters of it
/// make round axis labels.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 4.0, 6.0, 8.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v * (1.0 - 1e-9)).unwrap_or(10.0 * p)
}

const W: f64 = 960.0;

/// A lane of the timeline: a task's in the single loop; a worker's when any record names one
/// (`ralph run -j N`: the workers' iterations overlap in time, a task's would not show it),
/// where records without a worker (a session of the run without `-j`) share one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane<'a> {
    Task(&'a str),
    Worker(Option<u32>),
}

impl Lane<'_> {
    fn of(r: &IterationRecord, by_worker: bool) -> Lane<'_> {
        if by_worker { Lane::Worker(r.worker) } else { Lane::Task(&r.task) }
    }

    fn label(&self) -> String {
        match self {
            Lane::Task(t) => t.to_string(),
            Lane::Worker(Some(w)) => format!("worker {w}"),
            Lane::Worker(None) => "single loop".into(),
        }
    }
}

/// The lanes in order: tasks as they first appear, workers by number.
fn lanes(records: &[IterationRecord]) -> Vec<Lane<'_>> {
    let by_worker = records.iter().any(|r| r.worker.is_some());
    let mut lanes: Vec<Lane> = Vec::new();
    for r in records {
        let lane = Lane::of(r, by_worker);
        if !lanes.contains(&lane) {
            lanes.push(lane);
        }
    }
    if by_worker {
        lanes.sort();
    }
    lanes
}

fn timeline(o: &mut String, records: &[IterationRecord], placed: &[Placed], span: f64) {
    const LABEL_W: f64 = 150.0;
    const PAD_R: f64 = 18.0;
    const LANE_H: f64 = 26.0;
    const BAR_H: f64 = 18.0;
    const TOP: f64 = 4.0;
    const AXIS_H: f64 = 24.0;
    let lanes = lanes(records);
    let by_worker = matches!(lanes.first(), Some(Lane::Worker(_)));
    let plot_w = W - LABEL_W - PAD_R;
    let x = |ms: f64| LABEL_W + ms / span * plot_w;
    let h = TOP + lanes.len() as f64 * LANE_H + AXIS_H;
    let _ = write!(
        o,
        r#"<svg id="timeline" viewBox="0 0 {W} {h}" role="img" aria-label="Timeline of the run's iterations, coloured by outcome">"#
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = TOP + i as f64 * LANE_H;
        if i % 2 == 0 {
            let _ = write!(o, r#"<rect class="lane" x="0" y="{y}" width="{W}" height="{LANE_H}"/>"#);
        }
        let task = lane.label();
        let shown: String = if task.chars().count() > 22 {
            task.chars().take(21).chain(std::iter::once('…')).collect()
        } else {
            task.to_string()
        };
        let _ = write!(
            o,
            r#"<text x="8" y="{:.1}"><title>{}</title>{}</text>"#,
            y + LANE_H / 2.0 + 4.0,
            esc(&task),
            esc(&shown)
        );
    }
    let axis_y = TOP + lanes.len() as f64 * LANE_H;
    let step = time_step(span);
    let mut t = 0.0;
    while t <= span + 1e-6 {
        let xt = x(t);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{xt:.1}" y1="{TOP}" x2="{xt:.1}" y2="{axis_y:.1}"/><text x="{xt:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            axis_y + 16.0,
            tick_label(t)
        );
        t += step;
    }
    for (r, p) in records.iter().zip(placed) {
        let lane = Lane::of(r, by_worker);
        let row = lanes.iter().position(|l| *l == lane).unwrap_or(0);
        let y = TOP + row as f64 * LANE_H + (LANE_H - BAR_H) / 2.0;
        let x0 = x(p.start);
        let w = (x(p.end) - x0).max(3.0);
        let outcome = r.outcome.as_str();
        let who = match lane {
            Lane::Worker(Some(w)) => format!("worker {w} · "),
            _ => String::new(),
        };
        let _ = write!(
            o,
            r##"<a href="#it-{n}"><rect class="bar o-{outcome}" data-iteration="{n}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" rx="2"><title>iteration {n} · {who}{task} · {outcome} · {dur}</title></rect>"##,
            n = r.iteration,
            task = esc(&r.task),
            dur = human_ms(r.duration_ms),
        );
        let fits = |label: &str| w >= 8.0 + 6.5 * label.chars().count() as f64;
        // On a worker's lane the bar names its task too, where it fits: the lane does not.
        let label = Some(format!("{} · {}", r.iteration, r.task))
            .filter(|l| by_worker && fits(l))
            .unwrap_or_else(|| r.iteration.to_string());
        if fits(&label) {
            let _ = write!(
                o,
                r#"<text class="barlabel" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x0 + w / 2.0,
                y + BAR_H / 2.0 + 3.5,
                esc(&label)
            );
        }
        o.push_str("</a>");
    }
    o.push_str("</svg>");
}

fn spending_chart(o: &mut String, records: &[IterationRecord], placed: &[Placed], span: f64) {
    let has_tokens = records.iter().any(|r| r.tokens.is_some());
    let has_cost = records.iter().any(|r| r.cost_usd.is_some());
    if !has_tokens && !has_cost {
        o.push_str(
            r#"<p class="empty" id="spending-empty">The agent reported neither tokens nor cost for this run.</p>"#,
        );
        return;
    }
    const L: f64 = 64.0;
    const R: f64 = 64.0;
    const TOP: f64 = 12.0;
    const H: f64 = 240.0;
    const BOTTOM: f64 = 26.0;
    let plot_w = W - L - R;
    let plot_h = H - TOP - BOTTOM;
    let x = |ms: f64| L + ms / span * plot_w;
    // Cumulative spend: flat between iterations, rising across each one.
    let mut tok = vec![(0.0, 0.0)];
    let mut cost = vec![(0.0, 0.0)];
    let (mut ct, mut cc) = (0.0, 0.0);
    for (r, p) in records.iter().zip(placed) {
        tok.push((p.start, ct));
        cost.push((p.start, cc));
        ct += r.tokens.map_or(0, |t| t.total()) as f64;
        cc += r.cost_usd.unwrap_or(0.0);
        tok.push((p.end, ct));
        cost.push((p.end, cc));
    }
    let tmax = nice_ceil(ct);
    let cmax = nice_ceil(cc);
    let yt = |v: f64| TOP + plot_h - v / tmax * plot_h;
    let yc = |v: f64| TOP + plot_h - v / cmax * plot_h;
    o.push_str(r#"<div class="legend">"#);
    if has_tokens {
        o.push_str(r#"<span class="k-tokens"><i class="line"></i>tokens (cumulative, left axis)</span>"#);
    }
    if has_cost {
        o.push_str(r#"<span class="k-cost"><i class="line"></i>cost in USD (cumulative, right axis)</span>"#);
    }
    o.push_str("</div>");
    let _ = write!(
        o,
        r#"<svg id="spending" viewBox="0 0 {W} {H}" role="img" aria-label="Tokens and cost over time">"#
    );
    const TICKS: usize = 4;
    for i in 0..=TICKS {
        let f = i as f64 / TICKS as f64;
        let y = TOP + plot_h - f * plot_h;
        let _ = write!(o, r#"<line class="grid" x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#, W - R);
        if has_tokens {
            let _ = write!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                L - 6.0,
                y + 4.0,
                human_tokens(f * tmax)
            );
        }
        if has_cost {
            let _ = write!(o, r#"<text x="{:.1}" y="{:.1}">${:.2}</text>"#, W - R + 6.0, y + 4.0, f * cmax);
        }
    }
    let step = time_step(span);
    let mut t = 0.0;
    while t <= span + 1e-6 {
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            H - 8.0,
            tick_label(t)
        );
        t += step;
    }
    let poly = |pts: &[(f64, f64)], y: &dyn Fn(f64) -> f64| {
        pts.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ")
    };
    if has_tokens {
        let _ = write!(o, r#"<polyline class="series tokens" points="{}"/>"#, poly(&tok, &yt));
    }
    if has_cost {
        let _ = write!(o, r#"<polyline class="series cost" points="{}"/>"#, poly(&cost, &yc));
    }
    // A dot per iteration at its end, in its outcome's colour, on the main series.
    let (mut ct, mut cc) = (0.0, 0.0);
    for (r, p) in records.iter().zip(placed) {
        ct += r.tokens.map_or(0, |t| t.total()) as f64;
        cc += r.cost_usd.unwrap_or(0.0);
        let y = if has_tokens { yt(ct) } else { yc(cc) };
        let _ = write!(
            o,
            r#"<circle class="point o-{}" cx="{:.1}" cy="{y:.1}" r="3.5"><title>iteration {}: {} tokens, ${:.4} so far</title></circle>"#,
            r.outcome.as_str(),
            x(p.end),
            r.iteration,
            ct,
            cc
        );
    }
    o.push_str("</svg>");
}

fn failed_check(checks: &[CheckRecord]) -> Option<(&str, bool)> {
    checks
        .iter()
        .find(|c| !c.tolerated && (c.timed_out || c.exit_code != Some(0)))
        .map(|c| (c.command.as_str(), c.timed_out))
}

struct TaskRow<'a> {
    task: &'a str,
    last: Outcome,
    blocked: bool,
    iterations: u32,
    attempts: u32,
    tokens: Option<u64>,
    cost: Option<f64>,
    time_ms: u64,
}

fn task_rows(records: &[IterationRecord]) -> Vec<TaskRow<'_>> {
    let mut rows: Vec<TaskRow> = Vec::new();
    for r in records {
        let i = match rows.iter().position(|t| t.task == r.task) {
            Some(i) => i,
            None => {
                rows.push(TaskRow {
                    task: &r.task,
                    last: r.outcome,
                    blocked: false,
                    iterations: 0,
                    attempts: 0,
                    tokens: None,
                    cost: None,
                    time_ms: 0,
                });
                rows.len() - 1
            }
        };
        let t = &mut rows[i];
        t.last = r.outcome;
        t.blocked = r.blocked;
        t.iterations += 1;
        t.attempts += u32::from(r.outcome.counts_as_attempt());
        t.time_ms += r.duration_ms;
        if let Some(tok) = r.tokens {
            *t.tokens.get_or_insert(0) += tok.total();
        }
        if let Some(c) = r.cost_usd {
            *t.cost.get_or_insert(0.0) += c;
        }
    }
    rows
}

fn usd(c: Option<f64>) -> String {
    c.map_or("–".into(), |c| format!("${c:.2}"))
}

fn tokens_cell(t: Option<u64>) -> String {
    t.map_or("–".into(), |t| human_tokens(t as f64))
}

/// The whole page.
pub fn render(input: &Input) -> String {
    let records = input.records;
    let (placed, span) = place(records);
    let mut o = String::with_capacity(16 * 1024 + records.len() * 1200);
    let title = format!("ralph run {}", input.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&title)
    );
    let _ = write!(o, "<h1>Run {}</h1>", esc(input.run_id));
    let state = match input.meta {
        Some(m) => {
            let mut s = format!("started {}", m.started_at);
            match &m.ended_at {
                Some(end) => {
                    let _ = write!(s, ", ended {end}");
                    if let Some(c) = m.exit_code {
                        let _ = write!(s, ", exit {c}");
                    }
                    if let Some(r) = &m.end_reason {
                        let _ = write!(s, ": {r}");
                    }
                }
                None => s.push_str(", no end recorded (still running, or it crashed)"),
            }
            if let Some(b) = &m.branch {
                let _ = write!(s, " · branch {b}");
            }
            s
        }
        None => "run.json is missing or unreadable".into(),
    };
    let _ = write!(o, r#"<p class="sub" id="run-state">{}</p>"#, esc(&state));

    let tasks = task_rows(records);
    let done = tasks.iter().filter(|t| t.last == Outcome::Done).count();
    let active: u64 = records.iter().map(|r| r.duration_ms).sum();
    let tok: Option<u64> = records.iter().filter_map(|r| r.tokens.map(|t| t.total())).reduce(|a, b| a + b);
    let cost: Option<f64> = records.iter().filter_map(|r| r.cost_usd).reduce(|a, b| a + b);
    let learnings: usize = records.iter().map(|r| r.learnings_added.len()).sum();
    o.push_str(r#"<div class="cards">"#);
    let cards = [
        ("iterations", records.len().to_string()),
        ("tasks done", format!("{done} of {}", tasks.len())),
        ("wall clock", human_ms(span as u64)),
        ("time in iterations", human_ms(active)),
        ("tokens", tokens_cell(tok)),
        ("cost", usd(cost)),
        ("learnings added", learnings.to_string()),
    ];
    for (label, value) in cards {
        let _ = write!(o, r#"<div class="card"><b>{}</b><span>{label}</span></div>"#, esc(&value));
    }
    o.push_str("</div>");

    o.push_str("<h2>Timeline</h2>");
    if records.is_empty() {
        o.push_str(r#"<p class="empty">No iteration has been recorded in this run yet.</p>"#);
    } else {
        let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
        for r in records {
            *counts.entry(r.outcome).or_insert(0) += 1;
        }
        o.push_str(r#"<div class="legend" id="outcomes">"#);
        for (outcome, n) in &counts {
            let _ = write!(o, r#"<span class="o-{0}"><i></i>{0} {n}</span>"#, outcome.as_str());
        }
        o.push_str("</div>");
        timeline(&mut o, records, &placed, span);
    }

    o.push_str("<h2>Tokens and cost</h2>");
    if !records.is_empty() {
        spending_chart(&mut o, records, &placed, span);
    }

    o.push_str(
        r#"<h2>Tasks</h2><table id="tasks"><thead><tr><th>Task</th><th>Status</th><th class="num">Iterations</th><th class="num" title="failed iterations: what max_attempts limits">Attempts</th><th class="num">Tokens</th><th class="num">Cost</th><th class="num">Time</th></tr></thead><tbody>"#,
    );
    for t in &tasks {
        let (status, class) = if t.last == Outcome::Done {
            ("done", "done")
        } else if t.blocked {
            ("blocked", "checks_failed")
        } else {
            ("open", "none")
        };
        let _ = write!(
            o,
            r#"<tr class="task"><td><code>{}</code></td><td><span class="badge o-{class}">{status}</span></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(t.task),
            t.iterations,
            t.attempts,
            tokens_cell(t.tokens),
            usd(t.cost),
            human_ms(t.time_ms)
        );
    }
    o.push_str("</tbody></table>");

    o.push_str(
        r#"<h2>Iterations</h2><table id="iterations"><thead><tr><th class="num">#</th><th>Task</th><th>Outcome</th><th>Started (UTC)</th><th class="num">Time</th><th class="num">Tokens</th><th class="num">Cost</th><th>What happened</th><th>Files</th></tr></thead><tbody>"#,
    );
    let no_links = Vec::new();
    let mut rows: Vec<(u32, String)> = Vec::with_capacity(records.len() + input.unrecorded.len());
    for r in records {
        let mut row = String::new();
        let outcome = r.outcome.as_str();
        let started = r.started_at.get(11..19).unwrap_or(&r.started_at);
        let what = if r.outcome.is_green() {
            let mut w = match &r.commit {
                Some(c) => format!("committed <code>{}</code>", esc(c.get(..10).unwrap_or(c))),
                None => "nothing to commit".into(),
            };
            if let Some(p) = &r.progress {
                let _ = write!(w, " · {}", esc(p));
            }
            w
        } else {
            let (_, c) =
                cause(r.outcome, r.cause, r.failure.as_deref(), failed_check(&r.checks), r.exit_code);
            match &r.failure {
                Some(f) => format!("<details><summary>{}</summary><pre>{}</pre></details>", esc(&c), esc(f)),
                None => esc(&c),
            }
        };
        let files: String = input
            .links
            .get(&r.iteration)
            .unwrap_or(&no_links)
            .iter()
            .map(|(label, h)| format!(r#"<a href="{}">{label}</a>"#, esc(h)))
            .collect();
        let _ = write!(
            row,
            r#"<tr class="iteration o-{outcome}" id="it-{n}"><td class="num">{n}</td><td><code>{task}</code></td><td><span class="badge">{outcome}</span></td><td>{started}</td><td class="num">{dur}</td><td class="num">{tok}</td><td class="num">{cost}</td><td>{what}</td><td class="files">{files}</td></tr>"#,
            n = r.iteration,
            task = esc(&r.task),
            started = esc(started),
            dur = human_ms(r.duration_ms),
            tok = tokens_cell(r.tokens.map(|t| t.total())),
            cost = usd(r.cost_usd),
        );
        rows.push((r.iteration, row));
    }
    for &n in input.unrecorded {
        let files: String = input
            .links
            .get(&n)
            .unwrap_or(&no_links)
            .iter()
            .map(|(label, h)| format!(r#"<a href="{}">{label}</a>"#, esc(h)))
            .collect();
        rows.push((
            n,
            format!(
                r#"<tr class="iteration o-none" id="it-{n}"><td class="num">{n}</td><td></td><td><span class="badge">no record</span></td><td></td><td></td><td></td><td></td><td>in progress, or cut short by a crash</td><td class="files">{files}</td></tr>"#
            ),
        ));
    }
    rows.sort_by_key(|(n, _)| *n);
    for (_, row) in rows {
        o.push_str(&row);
    }
    o.push_str("</tbody></table>");
    let _ = writeln!(
        o,
        "<footer>Made by ralph {} at {} from the run's records; times are UTC.</footer></main></body></html>",
        env!("CARGO_PKG_VERSION"),
        esc(input.generated_at)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32, task: &str, outcome: Outcome, start_s: u64, dur_s: u64) -> IterationRecord {
        let ts = |s: u64| {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string()
        };
        IterationRecord {
            started_at: ts(1_800_000_000 + start_s),
            ended_at: ts(1_800_000_000 + start_s + dur_s),
            duration_ms: dur_s * 1000,
            exit_code: Some(0),
            ..IterationRecord::new("r1", n, task, outcome)
        }
    }

    fn page(records: &[IterationRecord]) -> String {
        let links = BTreeMap::from([(1, vec![("prompt", "iter-0001/prompt.md".to_string())])]);
        render(&Input {
            run_id: "r1",
            meta: None,
            records,
            unrecorded: &[9],
            links: &links,
            generated_at: "2027-01-01T00:00:00Z",
        })
    }

    #[test]
    fn text_from_records_is_escaped() {
        let mut bad = rec(2, "<b>t</b>", Outcome::ChecksFailed, 60, 30);
        bad.failure = Some("</pre><script>alert('x')</script>".into());
        let html = page(&[rec(1, "a", Outcome::Done, 0, 30), bad]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>t</b>"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("<code>&lt;b&gt;t&lt;/b&gt;</code>"));
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = page(&[rec(1, "a", Outcome::Done, 0, 30)]);
        for external in ["<script", "<link", "src=", "@import", "url(", "http://", "https://"] {
            assert!(!html.contains(external), "found {external}");
        }
    }

    #[test]
    fn bars_sit_on_task_lanes_in_time_and_carry_their_outcome() {
        let records = [
            rec(1, "a", Outcome::Done, 0, 30),
            rec(2, "b", Outcome::ChecksFailed, 40, 20),
            rec(3, "b", Outcome::Done, 90, 30),
        ];
        let html = page(&records);
        assert_eq!(html.matches(r#"class="bar o-done""#).count(), 2);
        assert_eq!(html.matches(r#"class="bar o-checks_failed""#).count(), 1);
        // 120 s span over 792 px from x = 150: iteration 2 starts at 40 s.
        assert!(html.contains(r#"data-iteration="2" x="414.0" y="34.0""#), "{html}");
        assert!(html.contains(r##"<a href="#it-2">"##));
        // A folder without a record has a row; the recorded ones link their files.
        assert!(html.contains(r#"<tr class="iteration o-none" id="it-9">"#));
        assert!(html.contains(r#"<a href="iter-0001/prompt.md">prompt</a>"#));
        assert!(html.contains(r#"<span class="o-checks_failed"><i></i>checks_failed 1</span>"#));
    }

    fn on(worker: Option<u32>, r: IterationRecord) -> IterationRecord {
        IterationRecord { worker, ..r }
    }

    #[test]
    fn a_parallel_run_has_a_lane_per_worker_where_iterations_overlap() {
        let records = [
            on(Some(2), rec(1, "010-a", Outcome::Done, 0, 30)),
            on(Some(1), rec(2, "020-b", Outcome::Progress, 0, 60)),
            on(Some(2), rec(3, "030-c", Outcome::ChecksFailed, 30, 30)),
            on(Some(1), rec(4, "020-b", Outcome::Done, 60, 60)),
        ];
        let html = page(&records);
        // Workers by number, whatever order their records came in; no lane per task.
        let w1 = html.find("<title>worker 1</title>worker 1</text>").expect("lane of worker 1");
        let w2 = html.find("<title>worker 2</title>worker 2</text>").expect("lane of worker 2");
        assert!(w1 < w2);
        assert!(!html.contains("<title>010-a</title>"), "{html}");
        // Iterations 1 and 2 run at once, each on its worker's lane; 3 follows 1 on lane 2.
        assert!(html.contains(r#"data-iteration="2" x="150.0" y="8.0""#), "{html}");
        assert!(html.contains(r#"data-iteration="1" x="150.0" y="34.0""#), "{html}");
        assert!(html.contains(r#"data-iteration="3" x="348.0" y="34.0""#), "{html}");
        assert!(
            html.contains("<title>iteration 3 · worker 2 · 030-c · checks_failed · 30.0s</title>"),
            "{html}"
        );
        // The bar names its task, since the lane does not.
        assert!(html.contains(">1 · 010-a</text>"), "{html}");
    }

    #[test]
    fn iterations_without_a_worker_share_one_lane_beside_the_workers() {
        let records = [
            rec(1, "010-a", Outcome::Done, 0, 30),
            on(Some(1), rec(2, "020-b", Outcome::Done, 30, 30)),
            rec(3, "<b>x</b>", Outcome::Done, 60, 30),
        ];
        let html = page(&records);
        assert!(html.contains("<title>single loop</title>single loop</text>"), "{html}");
        assert!(html.contains(r#"data-iteration="3" x="678.0" y="8.0""#), "{html}");
        assert!(html.contains(r#"data-iteration="2" x="414.0" y="34.0""#), "{html}");
        assert!(!html.contains("<b>x</b>"));
    }

    #[test]
    fn the_single_loop_keeps_a_lane_per_task_and_numbered_bars() {
        let html = page(&[rec(1, "010-a", Outcome::Done, 0, 30), rec(2, "020-b", Outcome::Done, 30, 30)]);
        assert!(html.contains("<title>010-a</title>010-a</text>"), "{html}");
        assert!(html.contains("<title>iteration 2 · 020-b · done · 30.0s</title>"), "{html}");
        assert!(html.contains(">2</text>") && !html.contains("worker"), "{html}");
    }

    #[test]
    fn spending_is_charted_only_when_reported() {
        let html = page(&[rec(1, "a", Outcome::Done, 0, 30)]);
        assert!(html.contains(r#"id="spending-empty""#));
        let mut r = rec(1, "a", Outcome::Done, 0, 30);
        r.tokens = Some(crate::record::Tokens { input: 900, output: 100, cache_read: 0, cache_write: 0 });
        r.cost_usd = Some(0.3);
        let html = page(&[r]);
        assert!(
            html.contains(r#"<polyline class="series tokens" points="64.0,214.0 64.0,214.0 896.0,12.0"#),
            "{html}"
        );
        assert!(html.contains(">$0.40</text>"), "the cost axis ends at a round value");
    }

    #[test]
    fn helpers() {
        assert_eq!(href(["..", "my dir", "iter-0001", "agent.log"]), "../my%20dir/iter-0001/agent.log");
        assert_eq!(nice_ceil(1000.0), 1000.0);
        assert_eq!(nice_ceil(1200.0), 2000.0);
        assert_eq!(nice_ceil(2100.0), 4000.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(time_step(120_000.0), 15_000.0);
        assert_eq!(tick_label(90_000.0), "1m30s");
        assert_eq!(tick_label(3_600_000.0), "1h");
    }
}
