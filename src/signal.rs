//! Ctrl-C, SIGTERM and SIGHUP. The first asks the run to stop: the agent's process group gets
//! SIGTERM and a grace period, the tree is restored, the iteration is recorded as
//! `interrupted`. The second skips the grace period. The third exits at once. SIGUSR1 (sent by
//! `ralph stop`) asks for a stop once the current iteration is over.
//!
//! The agent runs in its own process group, so the terminal's SIGINT never reaches it
//! directly: ralph forwards the stop itself.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Tokens the loop watches.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Stop gracefully.
    pub cancel: CancellationToken,
    /// Stop now: no grace period.
    pub force: CancellationToken,
    /// Stop once the current iteration is over (`ralph stop`, SIGUSR1).
    pub after_iteration: CancellationToken,
}

/// Installs the handlers; returns the tokens they cancel.
pub fn install() -> std::io::Result<Stop> {
    let stop = Stop::default();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let after = stop.after_iteration.clone();
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            eprintln!("\nralph: `ralph stop`: stopping after this iteration");
            after.cancel();
        }
    });
    let s = stop.clone();
    tokio::spawn(async move {
        let mut count = 0u32;
        loop {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
                _ = hup.recv() => {},
            }
            count += 1;
            match count {
                1 => {
                    eprintln!(
                        "\nralph: stopping: ending the agent and restoring the tree (press Ctrl-C again to skip the grace period)"
                    );
                    s.cancel.cancel();
                }
                2 => {
                    eprintln!("ralph: stopping now");
                    s.force.cancel();
                }
                _ => std::process::exit(i32::from(crate::exit_code::INTERRUPTED)),
            }
        }
    });
    Ok(stop)
}
