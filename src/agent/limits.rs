//! What an agent's failure means: a usage or rate limit (wait and retry the same task, no
//! attempt counted), an authentication failure or a missing model (stop the run: retrying
//! cannot help), or an ordinary failure.
//!
//! Structured signals come from the output parsers; this module classifies error text (the
//! CLIs' known messages, which change wording often, so several are matched) and reads reset
//! times such as "resets 3:30am (Asia/Calcutta)", "try again at 3:28 PM" or an epoch.

use jiff::{Timestamp, Zoned, civil, tz::TimeZone};
use std::time::Duration;

/// A usage or rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// When the agent said it resets, if it said.
    pub reset_at: Option<Timestamp>,
    /// The message it gave.
    pub message: String,
}

/// A failure that waiting cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    Auth(String),
    ModelMissing(String),
}

impl Fatal {
    pub fn message(&self) -> String {
        match self {
            Fatal::Auth(m) => format!("the agent could not authenticate: {m}"),
            Fatal::ModelMissing(m) => format!("the agent's model does not exist: {m}"),
        }
    }
}

/// What an error text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Limit(Limit),
    Fatal(Fatal),
}

const LIMIT_PATTERNS: &[&str] = &[
    "usage limit",
    "hit your limit",
    "hit your session limit",
    "limit reached",
    "rate limit",
    "rate_limit",
    "ratelimit",
    "too many requests",
    "quota exceeded",
    "exceeded your current quota",
    "exhausted your daily quota",
    "resource_exhausted",
    "resource exhausted",
    "resource has been exhausted",
    "out of extra usage",
    "grace_daily_limit_reached",
    "status: 429",
    "status 429",
    "(429)",
    " 429 ",
    "error 429",
    "overloaded_error",
];

const AUTH_PATTERNS: &[&str] = &[
    "invalid api key",
    "invalid x-api-key",
    "authentication_error",
    "authentication_failed",
    "failed to authenticate",
    "not logged in",
    "please run /login",
    "unauthorized",
    "providerautherror",
    "incorrect api key",
    "api key not valid",
    "unauthenticated",
    "(401)",
    "status: 401",
    "status 401",
    "error 401",
];

const MODEL_PATTERNS: &[&str] = &[
    "model not found",
    "model_not_found",
    "unknown model",
    "no such model",
    "invalid model",
    "model does not exist",
    "does not exist or you do not have access",
];

/// Classifies an error text; `now` anchors relative reset times. An HTTP status the text
/// names as such ("API Error: 401 ...", "[API Error: 429 ...]", "HTTP 429") decides over its
/// words: "401 No auth credentials found" says nothing the patterns know.
pub fn classify(text: &str, now: &Zoned) -> Option<Signal> {
    // A 404 in free output is as likely a test's HTTP client as the agent's model.
    let named = |l: &str| {
        stated_status(l, false)
            .filter(|&s| s != 404 || l.to_lowercase().contains("model"))
            .and_then(|s| classify_status(s, l, now))
    };
    if let Some(signal) = text.lines().find_map(named) {
        return Some(signal);
    }
    let lower = text.to_lowercase();
    if AUTH_PATTERNS.iter().any(|p| lower.contains(p)) {
        return Some(Signal::Fatal(Fatal::Auth(first_line(text))));
    }
    if MODEL_PATTERNS.iter().any(|p| lower.contains(p))
        || (lower.contains("not_found_error") && lower.contains("model"))
    {
        return Some(Signal::Fatal(Fatal::ModelMissing(first_line(text))));
    }
    if LIMIT_PATTERNS.iter().any(|p| lower.contains(p)) {
        return Some(Signal::Limit(Limit { reset_at: reset_time(text, now), message: first_line(text) }));
    }
    None
}

/// Classifies a message the agent reported as the error of its model call: on the HTTP status
/// it starts with (pi's and OpenRouter's "429 Provider returned error"), else on its text.
pub fn classify_error(message: &str, now: &Zoned) -> Option<Signal> {
    match stated_status(message, true) {
        Some(s) => classify_status(s, message, now).or_else(|| classify(message, now)),
        None => classify(message, now),
    }
}

/// The HTTP status (400 to 599) a message starts with, after an opening `[` and a label such
/// as "API Error:", "HTTP" or "status". A bare leading number counts only when `bare` (the
/// text is known to be an error message): in free output "401 passing" is a test count.
pub fn stated_status(text: &str, bare: bool) -> Option<u16> {
    const LABELS: &[&str] = &["api error", "http error", "http", "status code", "status"];
    let mut rest = text.trim_start().trim_start_matches('[').trim_start();
    let mut labelled = false;
    for label in LABELS {
        if rest.len() >= label.len()
            && rest.is_char_boundary(label.len())
            && rest[..label.len()].eq_ignore_ascii_case(label)
        {
            rest = rest[label.len()..].trim_start_matches([':', ' ']);
            labelled = true;
            break;
        }
    }
    if !labelled && !bare {
        return None;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let after = &rest[digits..];
    // "4291 items", "429ms" and "401.5 ms" are not statuses.
    if digits != 3
        || after.starts_with(char::is_alphanumeric)
        || after.strip_prefix('.').is_some_and(|a| a.starts_with(|c: char| c.is_ascii_digit()))
    {
        return None;
    }
    rest[..3].parse().ok().filter(|s| (400..600).contains(s))
}

/// Classifies an HTTP status an agent reported for its model call.
pub fn classify_status(status: u16, message: &str, now: &Zoned) -> Option<Signal> {
    match status {
        429 | 529 => {
            Some(Signal::Limit(Limit { reset_at: reset_time(message, now), message: first_line(message) }))
        }
        401 | 403 => Some(Signal::Fatal(Fatal::Auth(first_line(message)))),
        404 => Some(Signal::Fatal(Fatal::ModelMissing(first_line(message)))),
        _ => None,
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.chars().take(300).collect()
}

/// Reads a reset time from a limit message.
pub fn reset_time(text: &str, now: &Zoned) -> Option<Timestamp> {
    epoch_after_bar(text)
        .or_else(|| {
            clock_after(
                text,
                &["resets at ", "resets ", "reset at ", "try again at ", "available again at "],
                now,
            )
        })
        .or_else(|| relative_after(text, now))
}

/// `Claude AI usage limit reached|1700000000`.
fn epoch_after_bar(text: &str) -> Option<Timestamp> {
    let i = text.find("limit reached|")?;
    let digits: String =
        text[i + "limit reached|".len()..].chars().take_while(char::is_ascii_digit).collect();
    Timestamp::from_second(digits.parse().ok()?).ok()
}

/// "resets 3:30am (Asia/Calcutta)", "reset at 3pm (America/Bogota)", "try again at 3:28 PM."
fn clock_after(text: &str, markers: &[&str], now: &Zoned) -> Option<Timestamp> {
    let lower = text.to_lowercase();
    for marker in markers {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            from = start;
            let rest = &text[start..];
            if let Some((h, m, after)) = parse_clock(rest) {
                let tz = parse_zone(after).unwrap_or_else(|| now.time_zone().clone());
                return next_occurrence(h, m, &tz, now);
            }
        }
    }
    None
}

/// Parses "3:30am", "7pm", "3:28 PM", "15:30"; returns hour, minute and the text after.
fn parse_clock(s: &str) -> Option<(i8, i8, &str)> {
    let s = s.trim_start();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || digits > 2 {
        return None;
    }
    let mut hour: i8 = s[..digits].parse().ok()?;
    let mut rest = &s[digits..];
    let mut minute: i8 = 0;
    if let Some(r) = rest.strip_prefix(':') {
        let md = r.chars().take_while(char::is_ascii_digit).count();
        if md != 2 {
            return None;
        }
        minute = r[..2].parse().ok()?;
        rest = &r[2..];
    }
    let trimmed = rest.trim_start();
    let lower = trimmed.to_lowercase();
    let meridiem = if lower.starts_with("am") || lower.starts_with("a.m.") {
        Some(false)
    } else if lower.starts_with("pm") || lower.starts_with("p.m.") {
        Some(true)
    } else {
        None
    };
    match meridiem {
        Some(pm) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour %= 12;
            if pm {
                hour += 12;
            }
            let skip = if lower.starts_with("a.m.") || lower.starts_with("p.m.") { 4 } else { 2 };
            rest = &trimmed[skip..];
        }
        None if digits == 2 || rest.starts_with(':') || minute > 0 => {}
        // A bare "3" with neither minutes nor am/pm is not a time.
        None if !text_has_minutes(s) => return None,
        None => {}
    }
    if hour > 23 || minute > 59 {
        return None;
    }
    Some((hour, minute, rest))
}

fn text_has_minutes(s: &str) -> bool {
    s.chars().nth(1) == Some(':') || s.chars().nth(2) == Some(':')
}

/// "(Asia/Calcutta)" or " (UTC)" right after the clock.
fn parse_zone(s: &str) -> Option<TimeZone> {
    let s = s.trim_start();
    let inner = s.strip_prefix('(')?;
    let end = inner.find(')')?;
    let name = inner[..end].trim();
    TimeZone::get(name).ok()
}

/// The first instant at `h:m` in `tz` that is after `now`.
fn next_occurrence(h: i8, m: i8, tz: &TimeZone, now: &Zoned) -> Option<Timestamp> {
    let local_now = now.with_time_zone(tz.clone());
    let today = local_now.date();
    let time = civil::Time::new(h, m, 0, 0).ok()?;
    for days in 0..2 {
        let date = today.checked_add(jiff::Span::new().days(days)).ok()?;
        let candidate = date.to_datetime(time).to_zoned(tz.clone()).ok()?;
        if candidate.timestamp() > now.timestamp() {
            return Some(candidate.timestamp());
        }
    }
    None
}

/// "try again in 5 minutes", "retry after 30 seconds", "in 2h".
fn relative_after(text: &str, now: &Zoned) -> Option<Timestamp> {
    let lower = text.to_lowercase();
    for marker in ["try again in ", "retry in ", "retry after ", "retry-after: ", "resets in ", "wait "] {
        if let Some(i) = lower.find(marker) {
            let rest = &lower[i + marker.len()..];
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let Ok(n) = n.parse::<u64>() else { continue };
            let unit = rest[n.to_string().len()..].trim_start();
            let secs = if unit.starts_with('h') {
                n * 3600
            } else if unit.starts_with("mi")
                || unit.starts_with("m ")
                || unit == "m"
                || unit.starts_with("m.")
            {
                n * 60
            } else {
                n
            };
            let span = jiff::SignedDuration::from_secs(i64::try_from(secs).ok()?);
            return now.timestamp().checked_add(span).ok();
        }
    }
    None
}

/// How long to wait for a limit: until its reset (plus a margin), else the backoff.
pub fn wait_for(limit: &Limit, now: Timestamp, backoff: Duration) -> Duration {
    /// Resets are announced to the minute; a little slack avoids hitting the limit again.
    const MARGIN: Duration = Duration::from_secs(10);
    match limit.reset_at {
        Some(at) if at > now => {
            let d = now.duration_until(at);
            Duration::try_from(d).map(|d| d + MARGIN.min(d / 10)).unwrap_or(backoff)
        }
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Zoned {
        // 2026-11-22 10:00 UTC.
        "2026-11-22T10:00:00+00:00[UTC]".parse().unwrap()
    }

    fn limit(text: &str) -> Limit {
        match classify(text, &now()) {
            Some(Signal::Limit(l)) => l,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn claude_limit_with_a_named_zone() {
        // 3:30am in Kolkata (UTC+5:30) is 22:00 UTC; now is 10:00 UTC, so later today.
        let l = limit("You've hit your limit · resets 3:30am (Asia/Calcutta)");
        assert_eq!(l.reset_at.unwrap().to_string(), "2026-11-22T22:00:00Z");
        let l = limit("Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).");
        assert_eq!(l.reset_at.unwrap().to_string(), "2026-11-22T20:00:00Z");
        // Tokyo 7pm = 10:00 UTC = now, so the next one is tomorrow.
        let l = limit("5-hour limit reached ∙ resets 7pm (Asia/Tokyo)");
        assert_eq!(l.reset_at.unwrap().to_string(), "2026-11-23T10:00:00Z");
    }

    #[test]
    fn epoch_and_codex_and_relative_forms() {
        let l = limit("Claude AI usage limit reached|1795341600");
        assert_eq!(l.reset_at.unwrap().as_second(), 1795341600);
        let l = limit("You've hit your usage limit. Upgrade to Pro or try again at 3:28 PM.");
        assert_eq!(l.reset_at.unwrap().to_string(), "2026-11-22T15:28:00Z");
        let l = limit("Rate limit exceeded, try again in 5 minutes");
        assert_eq!(l.reset_at.unwrap().to_string(), "2026-11-22T10:05:00Z");
        let l = limit("API Error: Request rejected (429) · rate_limit_error");
        assert_eq!(l.reset_at, None);
    }

    #[test]
    fn auth_and_missing_models_are_fatal() {
        assert!(matches!(
            classify("Failed to authenticate. API Error: 401 authentication_error", &now()),
            Some(Signal::Fatal(Fatal::Auth(_)))
        ));
        assert!(matches!(
            classify("Invalid API key · Please run /login", &now()),
            Some(Signal::Fatal(Fatal::Auth(_)))
        ));
        assert!(matches!(
            classify(
                "API Error: 404 {\"type\":\"not_found_error\",\"message\":\"model: claude-nope\"}",
                &now()
            ),
            Some(Signal::Fatal(Fatal::ModelMissing(_)))
        ));
        assert_eq!(classify("error: test failed, 3 passed", &now()), None);
    }

    #[test]
    fn a_status_the_message_starts_with_decides() {
        let auth = |t: &str| matches!(classify_error(t, &now()), Some(Signal::Fatal(Fatal::Auth(_))));
        let wait = |t: &str| matches!(classify_error(t, &now()), Some(Signal::Limit(_)));
        // pi (OpenAI-compatible providers) and OpenRouter put the status first.
        assert!(auth("401 No auth credentials found"));
        assert!(wait("429 Provider returned error"));
        assert!(wait("429 Rate limit reached (mock). Please try again in 1s."));
        // Qwen Code wraps it.
        assert!(auth("[API Error: 401 No auth credentials found]"));
        assert!(wait("[API Error: 429 Provider returned error]"));
        assert!(wait("[API Error: 429]"));
        // Labelled statuses count in free output too; a bare number there does not.
        assert!(matches!(
            classify("[API Error: 401 No auth credentials found]", &now()),
            Some(Signal::Fatal(_))
        ));
        assert!(matches!(classify("log line\nHTTP 429 slow down", &now()), Some(Signal::Limit(_))));
        assert_eq!(classify("  401 passing (2s)\n  3 failing", &now()), None);
        // Not a status: a longer number, a version, a status outside 4xx/5xx.
        assert_eq!(stated_status("4291 items", true), None);
        assert_eq!(stated_status("401.5 ms", true), None);
        assert_eq!(stated_status("200 OK", true), None);
        assert_eq!(stated_status("status: 503 unavailable", false), Some(503));
        assert_eq!(classify("GET /x: HTTP 404 Not Found\nHTTP 404 Not Found", &now()), None);
        // A status with no meaning of its own leaves the words to decide.
        assert!(wait("500 upstream: rate limit exceeded"));
    }

    #[test]
    fn waits_follow_the_reset_or_the_backoff() {
        let at = "2026-11-22T10:30:00Z".parse::<Timestamp>().unwrap();
        let l = Limit { reset_at: Some(at), message: String::new() };
        let now = "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(wait_for(&l, now, Duration::from_secs(60)), Duration::from_secs(30 * 60 + 10));
        let soon = Limit { reset_at: Some("2026-11-22T10:00:02Z".parse().unwrap()), message: String::new() };
        assert_eq!(wait_for(&soon, now, Duration::from_secs(60)), Duration::from_millis(2200));
        let l = Limit { reset_at: None, message: String::new() };
        assert_eq!(wait_for(&l, now, Duration::from_secs(60)), Duration::from_secs(60));
    }
}
