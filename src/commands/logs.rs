//! `ralph logs`: prints an iteration's agent log (or its checks log, prompt or rejected patch);
//! `-f` follows the live iteration and moves on to the next one when it starts, until the run
//! ends. A structured agent log (stream-json, JSONL) is rendered as readable lines — messages,
//! tool calls with their input, results shortened, errors — unless `--raw` asks for the bytes.
//! What the agent wrote is shown without its terminal control sequences (a clipboard write, a
//! window title, cursor moves: see [`crate::term`]): always in the rendered view, and in the
//! raw bytes when they go to a terminal (a redirect to a file gets them as they are). Following wakes on file-system events (notify) and falls back to a slow poll, so a
//! new line shows at once without spinning on `stat`.
//!
//! `--worker N` picks a parallel run's worker's current iteration from the run's
//! `workers.json` (only while that run is running and the file is its coordinator's); with
//! `-f` it moves on when `workers.json` puts the worker on its next iteration, never to
//! another worker's. `-f` alone, in a parallel run under way, follows the first worker at work
//! that way (the iterations of all would interleave).

use crate::agent::output::activity::Render;
use crate::cli::LogsArgs;
use crate::error::CliError;
use crate::logs as layout;
use crate::parallel::{WorkerRow, WorkersFile};
use crate::state::{RALPH_DIR, RunLock, RunMeta};
use crate::term::Sanitizer;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `-f` looks for new output when no file-system event wakes it (and how often it
/// checks that the run is still alive).
const POLL: Duration = Duration::from_millis(500);

/// Wakes the follower when something under the run's folder changes.
struct Waker {
    _watcher: Option<notify::RecommendedWatcher>,
    events: std::sync::mpsc::Receiver<()>,
}

impl Waker {
    fn new(dir: &Path) -> Waker {
        use notify::Watcher;
        let (tx, events) = std::sync::mpsc::channel();
        let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .and_then(|mut w| w.watch(dir, notify::RecursiveMode::Recursive).map(|()| w));
        // Without a watcher (inotify limits), the poll alone still works.
        Waker { _watcher: watcher.ok(), events }
    }

    /// Blocks until a change or [`POLL`], then swallows the burst of events that came with it.
    fn wait(&self) {
        if self.events.recv_timeout(POLL).is_ok() {
            while self.events.try_recv().is_ok() {}
        }
    }
}

fn file_name(a: &LogsArgs) -> &'static str {
    if a.checks {
        "checks.log"
    } else if a.prompt {
        "prompt.md"
    } else if a.patch {
        "rejected.patch"
    } else if a.hooks {
        crate::events::hooks::HOOKS_LOG
    } else {
        "agent.log"
    }
}

/// Runs `ralph logs`.
pub fn run(cwd: &Path, a: &LogsArgs) -> Result<u8, CliError> {
    let root = crate::runner::repo_root(cwd)?;
    let run_id = match &a.run {
        Some(r) => {
            if !layout::run_dir(&root, r).join("run.json").is_file() {
                return Err(CliError::usage(format!(
                    "no run `{r}` in {}",
                    layout::runs_dir(&root).display()
                ))
                .hint("`ralph status` names the latest run"));
            }
            r.clone()
        }
        None => match layout::latest_run(&root) {
            Some(r) => r,
            // A worker is only ever found in a run under way: nothing to wait for.
            None if a.follow && a.worker.is_none() => {
                eprintln!("ralph logs: waiting for a run to start...");
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Some(r) = layout::latest_run(&root) {
                        break r;
                    }
                }
            }
            None => return Err(CliError::usage("no runs yet").hint("start one with `ralph run`")),
        },
    };
    let run_dir = layout::run_dir(&root, &run_id);
    let iterations = layout::iterations(&run_dir);
    let worker = match a.worker {
        Some(w) => Some(worker_row(&root, &run_dir, &run_id, w)?),
        // Following a parallel run under way, with no iteration named: one worker's iterations,
        // not whichever started last (the workers' would interleave), and said.
        None if a.follow && a.iteration.is_none() => {
            let first =
                live_workers(&root, &run_dir).and_then(|f| f.workers.into_iter().min_by_key(|r| r.id));
            if let Some(row) = &first {
                eprintln!(
                    "ralph: a parallel run: following worker {} (`--worker N` follows another; `ralph status` lists them)",
                    row.id
                );
            }
            first
        }
        None => None,
    };
    let iteration = match (&worker, a.iteration) {
        (Some(row), _) => row.iteration,
        (None, Some(n)) if iterations.contains(&n) => n,
        (None, Some(n)) => {
            return Err(CliError::usage(format!(
                "run {run_id} has no iteration {n} (it has {})",
                describe(&iterations)
            )));
        }
        (None, None) => match iterations.last() {
            Some(&n) => n,
            None if a.follow => 0,
            None => return Err(CliError::usage(format!("run {run_id} has no iteration yet"))),
        },
    };
    let name = file_name(a);
    let render = name == "agent.log" && !a.raw;
    use std::io::IsTerminal;
    let clean = (render || std::io::stdout().is_terminal()).then(|| Sanitizer::new(true));
    let mut out = Out { w: std::io::stdout().lock(), render: None, clean };
    if !a.follow {
        let path = layout::iter_dir(&run_dir, iteration).join(name);
        if render {
            out.render = renderer(&layout::iter_dir(&run_dir, iteration));
        }
        let mut f = crate::fsx::open(&path).map_err(|e| {
            let dir = layout::iter_dir(&run_dir, iteration);
            let hooks_only = !dir.join("agent.log").exists() && dir.join(crate::events::hooks::HOOKS_LOG).exists();
            CliError::usage(format!("cannot open {}: {e}", path.display())).hint(if a.patch {
                "only reverted iterations with changes have a rejected.patch".to_string()
            } else if hooks_only {
                format!("no agent ran in it (the before_iteration hook skipped it?): `ralph logs {iteration} --hooks`")
            } else {
                "the iteration may not have reached this step".to_string()
            })
        })?;
        copy(&mut f, &mut out)?;
        out.finish()?;
        return Ok(crate::exit_code::OK);
    }
    let track = match (&worker, a.iteration) {
        (Some(row), _) => Track::Worker(row.id, row.task.clone()),
        (None, None) => Track::Latest,
        (None, Some(_)) => Track::Fixed,
    };
    follow(&root, &run_dir, iteration, track, name, render, &mut out)
}

/// The workers file of a run while it runs as a parallel run: none once it ended, or when the
/// file was left by an earlier coordinator (killed) and describes nothing under way.
fn live_workers(root: &Path, run_dir: &Path) -> Option<WorkersFile> {
    let meta = RunMeta::load(run_dir).ok()?;
    let live = meta.ended_at.is_none() && RunLock::holder(&root.join(RALPH_DIR)) == Some(meta.pid);
    WorkersFile::load(run_dir).filter(|f| live && f.pid == meta.pid)
}

/// Worker `w` of the running parallel run, or the usage error that says why there is none.
fn worker_row(root: &Path, run_dir: &Path, run_id: &str, w: u32) -> Result<WorkerRow, CliError> {
    let Some(file) = live_workers(root, run_dir) else {
        return Err(CliError::usage(format!(
            "run {run_id} has no worker {w}: it is not a parallel run under way"
        ))
        .hint("`ralph status` shows the run; `ralph logs -f` follows its latest iteration"));
    };
    let at_work: Vec<String> = file.workers.iter().map(|r| r.id.to_string()).collect();
    file.workers.into_iter().find(|r| r.id == w).ok_or_else(|| {
        CliError::usage(format!(
            "run {run_id} has no worker {w} at work ({})",
            if at_work.is_empty() {
                "no worker is at work now".to_string()
            } else {
                format!("at work: worker {}", at_work.join(", "))
            }
        ))
        .hint("`ralph status` lists the workers and their tasks")
    })
}

/// Which iteration `-f` moves on to when the one it follows is over.
enum Track {
    /// The one asked for, only.
    Fixed,
    /// The run's next iteration, when its folder appears.
    Latest,
    /// This worker's next iteration (and the task it is on), when `workers.json` shows it.
    Worker(u32, String),
}

impl Track {
    /// The iteration after `current`, if it has begun.
    fn next(&mut self, root: &Path, run_dir: &Path, current: u32) -> Option<u32> {
        match self {
            Track::Fixed => None,
            Track::Latest => layout::iterations(run_dir).into_iter().find(|&n| n > current),
            Track::Worker(w, task) => {
                let row = live_workers(root, run_dir)?.workers.into_iter().find(|r| r.id == *w)?;
                (row.iteration > current).then(|| {
                    *task = row.task;
                    row.iteration
                })
            }
        }
    }

    /// The line that announces an iteration, when the follower moves from one to the next.
    fn heading(&self, iteration: u32) -> Option<String> {
        match self {
            Track::Fixed => None,
            Track::Latest => Some(format!("==> iteration {iteration} <==")),
            Track::Worker(w, task) => Some(format!("==> worker {w} · iteration {iteration} · {task} <==")),
        }
    }
}

/// The renderer for an iteration's agent.log, by the output format its start recorded; none
/// for plain text (shown as it is) or an iteration from before the format was recorded.
fn renderer(iter_dir: &Path) -> Option<Render> {
    let started: serde_json::Value =
        serde_json::from_slice(&crate::fsx::read(&iter_dir.join("started.json")).ok()?).ok()?;
    let format: crate::agent::output::Format = serde_json::from_value(started.get("format")?.clone()).ok()?;
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    Render::applies(format).then(|| Render::new(format, color))
}

/// Standard output, through the renderer when there is one and the sanitiser when the agent's
/// control sequences could reach a terminal.
struct Out<W: Write> {
    w: W,
    render: Option<Render>,
    clean: Option<Sanitizer>,
}

impl<W: Write> Out<W> {
    fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.clean {
            Some(s) => self.w.write_all(&s.push(bytes)),
            None => self.w.write_all(bytes),
        }
    }
}

impl<W: Write> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.render {
            Some(r) => {
                let text = r.push(buf);
                self.emit(text.as_bytes())?;
            }
            None => self.emit(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

impl<W: Write> Out<W> {
    /// Ends the current file: what the renderer still holds is printed.
    fn finish(&mut self) -> Result<(), CliError> {
        if let Some(r) = &mut self.render {
            let rest = r.finish();
            let written = self.emit(rest.as_bytes());
            if let Some(s) = &mut self.clean {
                s.finish();
            }
            match written.and_then(|()| self.w.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
                Err(e) => return Err(CliError::failure(format!("cannot print the log: {e}"))),
            }
        }
        Ok(())
    }
}

fn describe(its: &[u32]) -> String {
    match (its.first(), its.last()) {
        (Some(a), Some(b)) if a == b => format!("iteration {a}"),
        (Some(a), Some(b)) => format!("iterations {a} to {b}"),
        _ => "none".into(),
    }
}

/// Copies a reader to stdout; a closed stdout (`| head`) is a normal end.
fn copy(r: &mut impl Read, out: &mut impl Write) -> Result<u64, CliError> {
    match std::io::copy(r, out).and_then(|n| out.flush().map(|()| n)) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::failure(format!("cannot print the log: {e}"))),
    }
}

fn run_is_live(root: &Path, run_dir: &Path) -> bool {
    let Ok(meta) = RunMeta::load(run_dir) else { return false };
    meta.ended_at.is_none() && RunLock::holder(&root.join(RALPH_DIR)) == Some(meta.pid)
}

fn follow<W: Write>(
    root: &Path,
    run_dir: &Path,
    mut iteration: u32,
    mut track: Track,
    name: &str,
    render: bool,
    out: &mut Out<W>,
) -> Result<u8, CliError> {
    let mut pos = 0u64;
    let mut path: PathBuf = layout::iter_dir(run_dir, iteration).join(name);
    // The format is known once the iteration has started.
    let mut rendering_for = None;
    let mut announced = false;
    let waker = Waker::new(run_dir);
    loop {
        let live = run_is_live(root, run_dir);
        if render && iteration > 0 && rendering_for != Some(iteration) {
            out.render = renderer(&layout::iter_dir(run_dir, iteration));
            if out.render.is_some() || layout::iter_dir(run_dir, iteration).join("started.json").exists() {
                rendering_for = Some(iteration);
            }
        }
        if iteration > 0 {
            if !announced {
                if let Some(h) = track.heading(iteration) {
                    let _ = writeln!(out, "{h}");
                }
                announced = true;
            }
            if let Ok(mut f) = crate::fsx::open(&path) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len < pos {
                    pos = 0;
                }
                if len > pos {
                    f.seek(SeekFrom::Start(pos)).map_err(|e| CliError::failure(e.to_string()))?;
                    pos += copy(&mut f.take(len - pos), out)?;
                }
            }
        }
        if let Some(next) = track.next(root, run_dir, iteration) {
            // Finish the current file first: the iteration is over once the next begins.
            if iteration > 0
                && let Ok(mut f) = crate::fsx::open(&path)
            {
                let _ = f.seek(SeekFrom::Start(pos));
                copy(&mut f, out)?;
            }
            out.finish()?;
            iteration = next;
            path = layout::iter_dir(run_dir, iteration).join(name);
            pos = 0;
            announced = false;
            continue;
        }
        if !live {
            // One last read: the run may have written its final bytes just before ending.
            if let Ok(mut f) = crate::fsx::open(&path) {
                let _ = f.seek(SeekFrom::Start(pos));
                copy(&mut f, out)?;
            }
            out.finish()?;
            return Ok(crate::exit_code::OK);
        }
        waker.wait();
    }
}
