//! Processes that escaped the agent's process group (`setsid`, a double fork) or its marked
//! environment (`env -i`): ralph makes itself a child subreaper at the start of `ralph run`, so
//! every orphaned descendant re-parents to ralph instead of init, and [`sweep`] ends what is
//! left of them once the agent (or the checks) ended.
//!
//! Invariant: a sweep runs only when ralph has no child of its own running (the agent and the
//! checks were waited for, git commands are waited for as they run): every descendant it
//! finds is an escapee. It reaps only the pids it found, never `waitpid(-1)`, so no status of
//! a child tokio waits for is taken. The one exception is a child started through [`spare`]
//! (a `[[notify]]` command, run on a thread of its own while the loop goes on): it and its
//! descendants are neither ended nor reaped by a sweep, and its own thread waits for it.

use std::time::{Duration, Instant};

/// Makes ralph the reaper of its orphaned descendants (Linux); whether it took.
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The children started through [`spare`] that still run: a sweep leaves them and their
/// descendants alone. Held while such a child is started and while a sweep lists what to end,
/// so that a sweep never finds one not yet named here.
static SPARED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn spared() -> std::sync::MutexGuard<'static, Vec<i32>> {
    SPARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts a child that a sweep must leave alone (it runs beside the loop, on a thread that
/// waits for it): `start` spawns it and returns it with its pid. Call [`unspare`] with the pid
/// once it was waited for.
pub fn spare<T>(start: impl FnOnce() -> std::io::Result<(T, u32)>) -> std::io::Result<T> {
    let mut list = spared();
    let (child, pid) = start()?;
    list.push(i32::try_from(pid).unwrap_or(i32::MAX));
    Ok(child)
}

/// The child `pid`, started through [`spare`], was waited for.
pub fn unspare(pid: u32) {
    let pid = i32::try_from(pid).unwrap_or(i32::MAX);
    spared().retain(|p| *p != pid);
}

/// One process as `/proc/<pid>/stat` shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold anything): state, then ppid.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Proc { pid, ppid, zombie: state == "Z" || state == "X" })
}

/// Every descendant of `me`, children first, but the spared children's ([`spare`]) trees.
fn descendants(me: i32) -> Vec<Proc> {
    let spared = spared();
    let mut found = all_descendants(me, &spared);
    found.retain(|p| !spared.contains(&p.pid));
    found
}

/// Every descendant of `me`, children first, not looking below the pids in `skip`.
fn all_descendants(me: i32, skip: &[i32]) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let all: Vec<Proc> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(read_proc)
        .collect();
    let mut found: Vec<Proc> = Vec::new();
    let mut parents = vec![me];
    while !parents.is_empty() {
        let next: Vec<i32> = all.iter().filter(|p| parents.contains(&p.ppid)).map(|p| p.pid).collect();
        for pid in &next {
            if let Some(p) = all.iter().find(|p| p.pid == *pid) {
                found.push(Proc { pid: p.pid, ppid: p.ppid, zombie: p.zombie });
            }
        }
        parents = next.into_iter().filter(|p| !skip.contains(p)).collect();
    }
    found
}

/// Reaps `pid` if it is a child of ralph that has exited.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on one pid, WNOHANG: never blocks, writes only `status`.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Whether ralph has any child still running, reaping the exited ones (adopted orphans: at a
/// sweep ralph's own children were all waited for): a few system calls where a scan of `/proc`
/// reads every process's `stat` (2-3 ms an iteration with a few hundred processes). No child,
/// no descendant: every orphan re-parents to ralph, the subreaper.
fn has_children() -> bool {
    #[cfg(target_os = "linux")]
    {
        loop {
            // SAFETY: a zeroed siginfo_t is a valid out-parameter; WNOWAIT leaves the child as
            // it is, to be reaped by its pid below.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
            };
            if rc == -1 {
                return std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD);
            }
            // SAFETY: waitid filled `info`; si_pid is 0 when no child has exited.
            let pid = unsafe { info.si_pid() };
            if pid == 0 {
                // Children, none exited: they run.
                return true;
            }
            if spared().contains(&pid) {
                // Its own thread reaps it; what else runs is for the listing to tell.
                return true;
            }
            reap(pid);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

/// Ends every descendant of ralph still running: SIGTERM, `grace`, SIGKILL, reaped. Returns
/// how many were running.
pub fn sweep(grace: Duration) -> usize {
    if !has_children() {
        return 0;
    }
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let found = descendants(me);
    // Exited escapees (zombies ralph adopted) only need reaping.
    for p in found.iter().filter(|p| p.zombie && p.ppid == me) {
        reap(p.pid);
    }
    let live: Vec<i32> = found.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
    if live.is_empty() {
        return 0;
    }
    let signal_all = |sig| {
        for pid in &live {
            // SAFETY: kill has no memory-safety preconditions; a gone pid yields ESRCH.
            unsafe {
                libc::kill(*pid, sig);
            }
        }
    };
    signal_all(libc::SIGTERM);
    let end = Instant::now() + grace;
    loop {
        // Their children may have re-parented to ralph meanwhile: reap by what is ours now.
        let left = descendants(me);
        for p in left.iter().filter(|p| p.zombie && p.ppid == me) {
            reap(p.pid);
        }
        let running: Vec<i32> = left.iter().filter(|p| !p.zombie).map(|p| p.pid).collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() >= end {
            for pid in &running {
                // SAFETY: as above.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            if Instant::now() >= end + Duration::from_secs(5) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    live.len()
}
