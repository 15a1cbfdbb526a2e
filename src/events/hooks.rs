//! `[hooks]`: the user's shell commands at the loop's lifecycle points. Each runs as `sh -c`
//! at the repository's root in its own process group, the event's JSON on its stdin and in
//! `RALPH_EVENT_*` variables, `RALPH_HOOK` naming the hook, under `[hooks] timeout`; its output
//! is appended, masked, to `hooks.log` in the folder it is given. The commands of one hook run
//! in order; the first that fails ends the hook. They are the user's commands: no frame, gate
//! or sandbox applies to them.

use super::Event;
use crate::process::{self, Ending, Limits, SpawnRequest};
use crate::secrets::{Secrets, StreamMasker};
use crate::signal::Stop;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The log a hook's output goes to, in the iteration's folder (or the run's).
pub const HOOKS_LOG: &str = "hooks.log";

/// Lines of a failing hook's output kept for the reason it gives.
const TAIL_LINES: usize = 10;
const TAIL_BYTES: usize = 8 * 1024;

/// A lifecycle point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    BeforeIteration,
    AfterIteration,
    OnLand,
    OnBlocked,
}

impl Hook {
    /// The key in `[hooks]`, and the event's name.
    pub fn name(self) -> &'static str {
        match self {
            Hook::BeforeIteration => "before_iteration",
            Hook::AfterIteration => "after_iteration",
            Hook::OnLand => "on_land",
            Hook::OnBlocked => "on_blocked",
        }
    }

    pub(super) fn commands(self, h: &crate::config::HooksConfig) -> &[String] {
        match self {
            Hook::BeforeIteration => &h.before_iteration,
            Hook::AfterIteration => &h.after_iteration,
            Hook::OnLand => &h.on_land,
            Hook::OnBlocked => &h.on_blocked,
        }
    }
}

/// How a hook went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookRun {
    /// Commands run.
    pub ran: usize,
    /// The failing command and the last lines of its output; `None` when every command passed
    /// (or none is configured).
    pub failure: Option<String>,
    /// ralph was stopped while it ran.
    pub interrupted: bool,
}

/// Where and how hooks run.
pub(super) struct Ctx<'a> {
    pub root: &'a Path,
    pub timeout: Duration,
    pub grace: Duration,
    pub stop: &'a Stop,
    pub secrets: &'a Secrets,
}

/// Runs `commands` for `hook`, the output appended to `dir/hooks.log`.
pub(super) async fn run(hook: Hook, commands: &[String], ev: &Event, dir: &Path, ctx: &Ctx<'_>) -> HookRun {
    let mut result = HookRun::default();
    let log_path = dir.join(HOOKS_LOG);
    let _ = crate::fsx::create_dir_all(dir);
    let mut log = crate::fsx::append(&log_path).ok();
    let say = |log: &mut Option<std::fs::File>, bytes: &[u8]| {
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(bytes);
        }
    };
    let json = ev.json();
    let mut env = ev.env();
    env.push(("RALPH_HOOK".into(), hook.name().into()));
    for command in commands {
        result.ran += 1;
        say(
            &mut log,
            format!("[ralph] {} {}: $ {command}\n", crate::logs::now_rfc3339(), hook.name()).as_bytes(),
        );
        let req =
            SpawnRequest { stdin: Some(json.clone()), ..SpawnRequest::shell(command, ctx.root, env.clone()) };
        let t0 = Instant::now();
        let child = match process::spawn(&req) {
            Ok(c) => c,
            Err(e) => {
                say(&mut log, format!("[ralph] {e}\n").as_bytes());
                result.failure = Some(format!("`{command}` could not start: {e}"));
                return result;
            }
        };
        let mut masker = StreamMasker::new(ctx.secrets.clone());
        let mut tail: Vec<u8> = Vec::new();
        let limits = Limits { timeout: ctx.timeout, idle_timeout: None, grace: ctx.grace };
        let finished = process::supervise(child, limits, &ctx.stop.cancel, &ctx.stop.force, |chunk| {
            let masked = masker.push(&chunk.data);
            if let Some(f) = log.as_mut() {
                let _ = f.write_all(&masked);
            }
            tail.extend_from_slice(&masked);
            if tail.len() > 2 * TAIL_BYTES {
                tail.drain(..tail.len() - TAIL_BYTES);
            }
            std::ops::ControlFlow::Continue(())
        })
        .await;
        let rest = masker.finish();
        say(&mut log, &rest);
        tail.extend_from_slice(&rest);
        let status = match (finished.ending, finished.exit_code) {
            (Ending::Timeout, _) => format!("timed out after {}", humantime::format_duration(ctx.timeout)),
            (Ending::Cancelled, _) => "interrupted".to_string(),
            (_, Some(c)) => format!("exit {c}"),
            (_, None) => "killed by a signal".to_string(),
        };
        say(
            &mut log,
            format!(
                "\n[ralph] {} `{command}`: {status} in {:.1}s\n",
                hook.name(),
                t0.elapsed().as_secs_f64()
            )
            .as_bytes(),
        );
        if finished.ending == Ending::Cancelled {
            result.interrupted = true;
            result.failure = Some(format!("`{command}` was interrupted"));
            return result;
        }
        if finished.ending != Ending::Exited || finished.exit_code != Some(0) {
            let text = crate::checks::last_lines(&String::from_utf8_lossy(&tail), TAIL_LINES);
            result.failure = Some(if text.is_empty() {
                format!("`{command}` failed ({status})")
            } else {
                format!("`{command}` failed ({status}): {text}")
            });
            return result;
        }
    }
    result
}
