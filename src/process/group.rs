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
