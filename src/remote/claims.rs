//! Claims on a git remote: a worker owns a task while `refs/ralph/claims/<task>` on the remote
//! is its commit. Every change of a claim is a push with a lease (`--force-with-lease`) on
//! what the pusher last saw there, so of two claimants exactly one wins: creation leases on
//! "no such ref", a heartbeat on the worker's own last claim commit, stealing on the commit the
//! stealer watched go stale, and the release (or the landing that deletes it) on the owner's.
//!
//! Invariants: staleness is timed only by the observer's own monotonic clock ([`Watcher`]):
//! never by a timestamp written on another machine or a commit date, so a clock hours off
//! neither steals early nor holds forever. A claim commit holds the worker, its host, the base
//! commit and the attempt, as trailers; its tree is the base's (no new objects to send).

use crate::error::CliError;
use crate::git;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where a task's claim lives on the remote.
pub fn claim_ref(task: &str) -> String {
    format!("refs/ralph/claims/{task}")
}

/// Where the fetched claims are kept locally.
pub const SEEN: &str = "refs/ralph/remote-claims/";

/// Where a task's failed attempts are counted on the remote, across every worker that tried
/// it: a chain of commits, one per attempt, the last one's `Ralph-Tries` the count. Only the
/// claim's holder adds to it; the landing or the block that ends the task deletes it.
pub fn tries_ref(task: &str) -> String {
    format!("refs/ralph/tries/{task}")
}

/// Where the fetched tries are kept locally.
const SEEN_TRIES: &str = "refs/ralph/remote-tries/";

/// The workers' learnings store on the remote: a commit whose tree holds `learnings.json`,
/// moved in the same atomic push as the landing whose AGENTS.md it renders.
pub const STORE_REF: &str = "refs/ralph/store/learnings";

/// Where the fetched store is kept locally.
const SEEN_STORE: &str = "refs/ralph/remote-store/learnings";

/// A worker's view of the remote.
#[derive(Debug, Clone)]
pub struct Remote {
    pub root: PathBuf,
    /// The remote's name (`[remote] name`).
    pub name: String,
    /// The branch work lands on.
    pub target: String,
    pub worker: String,
    pub host: String,
}

/// The outcome of a push that needs its lease to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leased {
    /// It held: the new claim commit (or nothing, for a release).
    Won(String),
    /// Someone else changed the ref first.
    Lost(String),
}

impl Remote {
    /// The remote-tracking ref of the target.
    pub fn tracking(&self) -> String {
        format!("refs/remotes/{}/{}", self.name, self.target)
    }

    /// Fetches the target and every claim (a deleted claim disappears locally too).
    pub fn fetch(&self) -> Result<(), CliError> {
        let specs = vec![
            format!("+refs/heads/{}:{}", self.target, self.tracking()),
            format!("+refs/ralph/claims/*:{SEEN}*"),
            format!("+refs/ralph/tries/*:{SEEN_TRIES}*"),
            // A pattern, so that a remote without a store yet is no error.
            "+refs/ralph/store/*:refs/ralph/remote-store/*".to_string(),
        ];
        // A claim deleted between the remote's listing and the transfer fails the fetch
        // ("not our ref"): the next listing no longer has it.
        let mut tries = 0;
        loop {
            match git::fetch(&self.root, &self.name, &specs) {
                Ok(()) => return Ok(()),
                Err(e) if tries < 3 => {
                    tracing::debug!("fetch failed, again: {e}");
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The target's tip as last fetched.
    pub fn tip(&self) -> Result<String, CliError> {
        git::rev_parse(&self.root, &self.tracking())?
            .ok_or_else(|| CliError::usage(format!("the remote {} has no branch {}", self.name, self.target)))
    }

    /// The claims as last fetched: task → claim commit.
    pub fn claims(&self) -> Result<BTreeMap<String, String>, CliError> {
        Ok(git::refs_under(&self.root, SEEN)?.into_iter().collect())
    }

    /// `task`'s failed attempts as last fetched: the count and the commit that holds it.
    pub fn tries(&self, task: &str) -> Result<(u32, Option<String>), CliError> {
        let Some(sha) = git::rev_parse(&self.root, &format!("{SEEN_TRIES}{task}"))? else {
            return Ok((0, None));
        };
        let count = trailer(&git::commit_message(&self.root, &sha)?, "Ralph-Tries")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((count, Some(sha)))
    }

    /// Counts one more failed attempt at `task` (`why`, its first line kept), leased on the
    /// count last seen and fetched again when someone moved it; the new count. `base` gives
    /// the commit its tree (no new objects to send).
    pub fn add_try(&self, task: &str, base: &str, why: &str) -> Result<u32, CliError> {
        let first = why.lines().next().unwrap_or("").chars().take(200).collect::<String>();
        let mut last = String::new();
        for _ in 0..3 {
            let (count, seen) = self.tries(task)?;
            let msg = format!(
                "ralph try {task}\n\n{first}\n\nRalph-Task: {task}\nRalph-Worker: {}\nRalph-Tries: {}\n",
                self.worker,
                count + 1
            );
            let sha = git::commit_tree(&self.root, base, seen.as_deref(), &msg)?;
            let r = tries_ref(task);
            let lease = format!("--force-with-lease={r}:{}", seen.as_deref().unwrap_or(""));
            match git::push(&self.root, &self.name, &[lease, format!("{sha}:{r}")])? {
                Ok(()) => {
                    git::update_ref(&self.root, &format!("{SEEN_TRIES}{task}"), Some(&sha))?;
                    return Ok(count + 1);
                }
                Err(text) => last = text,
            }
            self.fetch()?;
        }
        Err(CliError::failure(format!(
            "cannot count the failed attempt at {task} on the remote: {}",
            last.lines().last().unwrap_or("")
        )))
    }

    /// The push arguments that delete `task`'s count of tries (leased on what was fetched), for
    /// the atomic push that ends the task; none when it has none.
    pub fn drop_tries(&self, task: &str) -> Result<Vec<String>, CliError> {
        let r = tries_ref(task);
        Ok(match self.tries(task)?.1 {
            Some(seen) => vec![format!("--force-with-lease={r}:{seen}"), format!(":{r}")],
            None => Vec::new(),
        })
    }

    /// The workers' learnings store as last fetched: its commit, and `learnings.json`'s bytes.
    pub fn store(&self) -> Result<Option<(String, Vec<u8>)>, CliError> {
        let Some(sha) = git::rev_parse(&self.root, SEEN_STORE)? else { return Ok(None) };
        Ok(git::file_at(&self.root, &sha, STORE_FILE)?.map(|bytes| (sha, bytes)))
    }

    /// The worker named in the claim commit `sha` (a claim or a heartbeat).
    pub fn holder(&self, sha: &str) -> String {
        git::commit_message(&self.root, sha)
            .ok()
            .and_then(|m| trailer(&m, "Ralph-Worker").map(str::to_string))
            .unwrap_or_else(|| "another worker".into())
    }

    fn message(&self, task: &str, base: &str, attempt: u32) -> String {
        format!(
            "ralph claim {task}\n\nRalph-Task: {task}\nRalph-Worker: {}\nRalph-Host: {}\nRalph-Base: {base}\nRalph-Attempt: {attempt}\n",
            self.worker, self.host
        )
    }

    /// Claims `task` if nobody has: a create-only push.
    pub fn create(&self, task: &str, base: &str, attempt: u32) -> Result<Leased, CliError> {
        let sha = git::commit_tree(&self.root, base, None, &self.message(task, base, attempt))?;
        self.swap(task, "", &sha)
    }

    /// Takes over `task`'s claim from `observed`, the commit the caller watched go stale.
    pub fn steal(&self, task: &str, observed: &str, base: &str, attempt: u32) -> Result<Leased, CliError> {
        let sha = git::commit_tree(&self.root, base, Some(observed), &self.message(task, base, attempt))?;
        self.swap(task, observed, &sha)
    }

    /// Renews the worker's claim `mine` (a heartbeat): a new commit on top of it.
    pub fn renew(&self, task: &str, mine: &str) -> Result<Leased, CliError> {
        let sha = git::commit_tree(
            &self.root,
            mine,
            Some(mine),
            &format!("ralph heartbeat {task}\n\nRalph-Worker: {}\n", self.worker),
        )?;
        self.swap(task, mine, &sha)
    }

    /// Marks the claim `mine` as pending: its work is on `branch`, for the forge to land. A
    /// pending claim is never stale; it goes once the target has the task done.
    pub fn pend(&self, task: &str, mine: &str, branch: &str) -> Result<Leased, CliError> {
        let msg = format!(
            "ralph pull-request {task}\n\nRalph-Task: {task}\nRalph-Worker: {}\nRalph-Pending: {branch}\n",
            self.worker
        );
        let sha = git::commit_tree(&self.root, mine, Some(mine), &msg)?;
        self.swap(task, mine, &sha)
    }

    /// Whether the claim commit `sha` is pending (see [`Remote::pend`]).
    pub fn pending(&self, sha: &str) -> bool {
        git::commit_message(&self.root, sha).is_ok_and(|m| m.contains("\nRalph-Pending: "))
    }

    /// Lets go of the claim `mine` (deleted, if it is still the worker's).
    pub fn release(&self, task: &str, mine: &str) -> Result<Leased, CliError> {
        let r = claim_ref(task);
        match git::push(&self.root, &self.name, &[format!("--force-with-lease={r}:{mine}"), format!(":{r}")])?
        {
            Ok(()) => Ok(Leased::Won(String::new())),
            Err(text) => Ok(Leased::Lost(text)),
        }
    }

    /// Moves `task`'s claim from `from` ("" for none) to `to`, if it is still `from`.
    fn swap(&self, task: &str, from: &str, to: &str) -> Result<Leased, CliError> {
        let r = claim_ref(task);
        match git::push(
            &self.root,
            &self.name,
            &[format!("--force-with-lease={r}:{from}"), format!("{to}:{r}")],
        )? {
            Ok(()) => Ok(Leased::Won(to.to_string())),
            Err(text) => Ok(Leased::Lost(text)),
        }
    }
}

/// The file in the store commit's tree.
pub const STORE_FILE: &str = "learnings.json";

/// The value of trailer `key` in `message` (the last one, as git reads trailers).
fn trailer<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message.lines().rev().find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")).map(str::trim)
}

/// When each claim was first seen as it is now, by this process's monotonic clock.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: HashMap<String, (String, Instant)>,
}

impl Watcher {
    /// Notes the claims as fetched at `now`: a claim whose commit changed starts over.
    pub fn observe(&mut self, claims: &BTreeMap<String, String>, now: Instant) {
        self.seen.retain(|task, _| claims.contains_key(task));
        for (task, sha) in claims {
            match self.seen.get(task) {
                Some((was, _)) if was == sha => {}
                _ => {
                    self.seen.insert(task.clone(), (sha.clone(), now));
                }
            }
        }
    }

    /// The commit of `task`'s claim if it has not changed for `ttl` (as this process timed it).
    pub fn stale(&self, task: &str, ttl: Duration, now: Instant) -> Option<&str> {
        let (sha, since) = self.seen.get(task)?;
        (now.saturating_duration_since(*since) >= ttl).then_some(sha.as_str())
    }
}

/// This machine's name, for the claims.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_claim_is_stale_only_after_it_stayed_the_same_for_the_ttl_by_the_observers_clock() {
        let ttl = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut w = Watcher::default();
        w.observe(&claims(&[("a", "c1")]), t0);
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(59)), None);
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(60)), Some("c1"));
        // A heartbeat (a new commit) starts the wait over, whenever it is seen.
        w.observe(&claims(&[("a", "c2")]), t0 + Duration::from_secs(61));
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(100)), None);
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(121)), Some("c2"));
        // Seen again unchanged: the wait is not restarted.
        w.observe(&claims(&[("a", "c2")]), t0 + Duration::from_secs(110));
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(121)), Some("c2"));
        // Released: forgotten; claimed again: a fresh wait.
        w.observe(&claims(&[]), t0 + Duration::from_secs(130));
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(500)), None);
        w.observe(&claims(&[("a", "c2")]), t0 + Duration::from_secs(500));
        assert_eq!(w.stale("a", ttl, t0 + Duration::from_secs(520)), None);
    }
}
