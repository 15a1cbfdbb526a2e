//! Signals to whole process groups. Every child ralph starts leads its own group, so one
//! `killpg` reaches the agent and every grandchild it forked that stayed in the group.

/// Sends `signal` to process group `pgid`. A group that no longer exists is not an error.
pub fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
    if pgid <= 1 {
        // killpg(0) would signal ralph's own group and killpg(1) init's: never.
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; a stale or empty group yields ESRCH.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// SIGTERM to the group.
pub fn terminate(pgid: u32) {
    signal_group(pgid, libc::SIGTERM);
}

/// SIGTERM to every process of the group but its leader, as `/proc` lists them (a process
/// forked meanwhile misses it, and gets the group's SIGKILL after the grace period).
pub fn terminate_members(pgid: u32) {
    let Ok(leader) = libc::pid_t::try_from(pgid) else { return };
    if leader <= 1 {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok()) {
        if pid != leader && group_of(pid) == Some(leader) {
            // SAFETY: kill has no memory-safety preconditions; a gone pid yields ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// The process group of `pid`, from `/proc/<pid>/stat` (after the command name: state, ppid,
/// pgrp).
fn group_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// SIGKILL to the group.
pub fn kill(pgid: u32) {
    signal_group(pgid, libc::SIGKILL);
}

/// Kills the group when dropped, unless disarmed: a panic or an early return anywhere in the
/// supervisor never leaves an agent running (codex's kill-on-drop, for the whole group).
#[derive(Debug)]
pub struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl GroupGuard {
    pub fn new(pgid: u32) -> Self {
        Self { pgid, armed: true }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill(self.pgid);
        }
    }
}
