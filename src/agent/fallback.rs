//! Fallback agents: which agent runs the next iteration. The chain is the main agent (`[agent]`)
//! then `[agent] fallback`, in order of preference; a task's own `agent:` goes first for that
//! task. An agent is usable when its own usage limit has reset and it has not failed in a way
//! no wait fixes (authentication, a missing model). The first usable agent of the chain runs;
//! when none is, the run waits for the limit that resets first.
//!
//! Invariants: pure — the caller passes the clock, so the choice is tested with plain
//! timestamps; an agent is known by its name only (the chain and ralph.toml may change between
//! iterations, and a name no longer configured is simply never chosen); a limit shorter than
//! `[agent] fallback_after` is waited out on the same agent, never recorded here.

use jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the agents of a run can do: which are limited until when, and which cannot run at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Per agent name: when its usage limit resets.
    limited: BTreeMap<String, Timestamp>,
    /// Per agent name: why it cannot run for the rest of the run.
    unusable: BTreeMap<String, String>,
}

/// The agent for the next iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Run this agent now.
    Run(String),
    /// Every agent of the chain is limited: wait until the earliest reset, then run that agent.
    Wait { agent: String, until: Timestamp },
    /// No agent of the chain can run at all.
    NoneLeft,
}

/// What a usage limit an agent hit means for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnLimit {
    /// Short (at most `fallback_after`), or no other agent to turn to: wait it out, then run the
    /// same agent again.
    WaitOut,
    /// Recorded: the agent is left out until `until`, and the chain's next choice runs.
    FallBack { until: Timestamp },
}

impl Chain {
    /// The chain as a run left it: agents limited until the given times (RFC 3339), as
    /// [`Chain::limits`] wrote them; unreadable times are dropped.
    pub fn resume(limits: &BTreeMap<String, String>) -> Chain {
        Chain {
            limited: limits.iter().filter_map(|(n, t)| Some((n.clone(), t.parse().ok()?))).collect(),
            unusable: BTreeMap::new(),
        }
    }

    /// The limits still in force at `now`, by agent name (RFC 3339), for `run.json`: a restarted
    /// run does not try an agent again before its reset.
    pub fn limits(&self, now: Timestamp) -> BTreeMap<String, String> {
        self.limited.iter().filter(|(_, t)| **t > now).map(|(n, t)| (n.clone(), t.to_string())).collect()
    }

    /// When `name`'s usage limit resets, if it is limited at `now`.
    pub fn limited_until(&self, name: &str, now: Timestamp) -> Option<Timestamp> {
        self.limited.get(name).copied().filter(|t| *t > now)
    }

    /// Whether `name` was limited and its limit has lifted by `now`: forgotten, so that it is
    /// said once.
    pub fn lifted(&mut self, name: &str, now: Timestamp) -> bool {
        let lifted = self.limited.get(name).is_some_and(|t| *t <= now);
        if lifted {
            self.limited.remove(name);
        }
        lifted
    }

    /// Why `name` cannot run, if it cannot.
    pub fn unusable(&self, name: &str) -> Option<&str> {
        self.unusable.get(name).map(String::as_str)
    }

    /// The first usable agent of `order` at `now`; else the one whose limit resets first.
    pub fn choose(&self, order: &[String], now: Timestamp) -> Choice {
        let live: Vec<&String> = order.iter().filter(|n| !self.unusable.contains_key(*n)).collect();
        if let Some(n) = live.iter().find(|n| self.limited_until(n, now).is_none()) {
            return Choice::Run((*n).clone());
        }
        // Every live agent is limited: the earliest reset, ties to the preferred agent.
        let mut best: Option<(&String, Timestamp)> = None;
        for n in live {
            if let Some(t) = self.limited_until(n, now)
                && best.is_none_or(|(_, b)| t < b)
            {
                best = Some((n, t));
            }
        }
        match best {
            Some((agent, until)) => Choice::Wait { agent: agent.clone(), until },
            None => Choice::NoneLeft,
        }
    }

    /// `name` hit a usage limit that lifts in `wait`: longer than `after`, and with another
    /// agent of `order` not out for good, it is left out until then; else it is waited out.
    pub fn on_limit(
        &mut self,
        name: &str,
        wait: Duration,
        after: Duration,
        order: &[String],
        now: Timestamp,
    ) -> OnLimit {
        let others = order.iter().any(|n| n != name && !self.unusable.contains_key(n));
        if wait <= after || !others {
            return OnLimit::WaitOut;
        }
        let until = jiff::SignedDuration::try_from(wait)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
        self.limited.insert(name.to_string(), until);
        OnLimit::FallBack { until }
    }

    /// `name` cannot run for the rest of the run (`why`): the chain goes on without it.
    pub fn set_unusable(&mut self, name: &str, why: &str) {
        self.unusable.insert(name.to_string(), why.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-11-22T{s}Z").parse().unwrap()
    }

    fn order(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_agent_runs_while_nothing_is_limited() {
        let c = Chain::default();
        assert_eq!(c.choose(&order(&["claude", "codex"]), t("10:00:00")), Choice::Run("claude".into()));
        assert_eq!(c.choose(&[], t("10:00:00")), Choice::NoneLeft);
    }

    #[test]
    fn a_long_limit_falls_back_and_the_first_agent_returns_after_its_reset() {
        let chain = order(&["claude", "codex", "pi"]);
        let mut c = Chain::default();
        let now = t("10:00:00");
        assert_eq!(
            c.on_limit("claude", HOUR, FIVE_MIN, &chain, now),
            OnLimit::FallBack { until: t("11:00:00") }
        );
        assert_eq!(c.choose(&chain, now), Choice::Run("codex".into()));
        assert_eq!(c.choose(&chain, t("10:59:59")), Choice::Run("codex".into()));
        // Its own reset passed: back to the preferred agent.
        assert_eq!(c.choose(&chain, t("11:00:00")), Choice::Run("claude".into()));
        // codex limited too, for less long: pi, then codex before claude.
        assert!(matches!(c.on_limit("codex", HOUR / 2, FIVE_MIN, &chain, now), OnLimit::FallBack { .. }));
        assert_eq!(c.choose(&chain, now), Choice::Run("pi".into()));
        assert_eq!(c.choose(&chain, t("10:30:00")), Choice::Run("codex".into()));
    }

    #[test]
    fn a_short_limit_or_a_lone_agent_is_waited_out() {
        let chain = order(&["claude", "codex"]);
        let mut c = Chain::default();
        let now = t("10:00:00");
        assert_eq!(c.on_limit("claude", FIVE_MIN, FIVE_MIN, &chain, now), OnLimit::WaitOut);
        assert_eq!(c.choose(&chain, now), Choice::Run("claude".into()));
        assert_eq!(c.on_limit("claude", HOUR, FIVE_MIN, &order(&["claude"]), now), OnLimit::WaitOut);
        // The only other agent cannot run: nothing to fall back to.
        c.set_unusable("codex", "bad key");
        assert_eq!(c.on_limit("claude", HOUR, FIVE_MIN, &chain, now), OnLimit::WaitOut);
    }

    #[test]
    fn with_every_agent_limited_the_earliest_reset_is_waited_for() {
        let chain = order(&["claude", "codex", "pi"]);
        let mut c = Chain::default();
        let now = t("10:00:00");
        c.on_limit("claude", HOUR, FIVE_MIN, &chain, now);
        c.on_limit("codex", 2 * HOUR, FIVE_MIN, &chain, now);
        c.on_limit("pi", HOUR, FIVE_MIN, &chain, now);
        // claude and pi reset together: the preferred one.
        assert_eq!(c.choose(&chain, now), Choice::Wait { agent: "claude".into(), until: t("11:00:00") });
        c.set_unusable("claude", "bad key");
        assert_eq!(c.choose(&chain, now), Choice::Wait { agent: "pi".into(), until: t("11:00:00") });
    }

    #[test]
    fn agents_that_cannot_run_are_skipped_until_none_is_left() {
        let chain = order(&["claude", "codex"]);
        let mut c = Chain::default();
        c.set_unusable("claude", "bad key");
        assert_eq!(c.choose(&chain, t("10:00:00")), Choice::Run("codex".into()));
        assert_eq!(c.unusable("claude"), Some("bad key"));
        c.set_unusable("codex", "no model");
        assert_eq!(c.choose(&chain, t("10:00:00")), Choice::NoneLeft);
    }

    #[test]
    fn limits_survive_a_restart_until_they_reset() {
        let chain = order(&["claude", "codex"]);
        let mut c = Chain::default();
        c.on_limit("claude", HOUR, FIVE_MIN, &chain, t("10:00:00"));
        let kept = c.limits(t("10:30:00"));
        assert_eq!(kept.get("claude").map(String::as_str), Some("2026-11-22T11:00:00Z"));
        let resumed = Chain::resume(&kept);
        assert_eq!(resumed.choose(&chain, t("10:30:00")), Choice::Run("codex".into()));
        assert_eq!(resumed.choose(&chain, t("11:00:01")), Choice::Run("claude".into()));
        // A reset that passed is not kept; an unreadable one is dropped.
        assert!(c.limits(t("12:00:00")).is_empty());
        let odd = BTreeMap::from([("claude".to_string(), "soon".to_string())]);
        assert_eq!(Chain::resume(&odd), Chain::default());
    }
}
