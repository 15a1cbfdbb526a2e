//! What each kind of notifier is sent for an event: the generic webhook gets the event's JSON,
//! the presets a body shaped for their service (ntfy: the text with a title, tags and a
//! priority; Slack: `{"text"}`; Discord: `{"content"}` with mentions off; Telegram:
//! `sendMessage`). Pure: the URL and tokens come resolved, nothing is sent here.

use super::Event;
use crate::agent::output::activity::shorten;

/// The Telegram Bot API.
pub const TELEGRAM_API: &str = "https://api.telegram.org";

/// Discord's limit on a message's content.
const DISCORD_MAX: usize = 2000;
/// Telegram's limit on a message's text.
const TELEGRAM_MAX: usize = 4096;

/// Where a notifier's events go, its URLs and tokens read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Webhook { url: String, token: Option<String> },
    Command(Vec<String>),
    Ntfy { url: String, token: Option<String> },
    Slack { url: String },
    Discord { url: String },
    Telegram { api: String, token: String, chat_id: String },
}

/// One HTTP POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The POST that delivers `ev` to `target`; `None` for a command.
pub fn post(target: &Target, ev: &Event) -> Option<Post> {
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    let content_json = ("Content-Type".to_string(), "application/json".to_string());
    let bearer =
        |t: &Option<String>| t.as_ref().map(|t| ("Authorization".to_string(), format!("Bearer {t}")));
    Some(match target {
        Target::Command(_) => return None,
        Target::Webhook { url, token } => Post {
            url: url.clone(),
            headers: std::iter::once(content_json).chain(bearer(token)).collect(),
            body: ev.json(),
        },
        Target::Ntfy { url, token } => {
            let mut headers = vec![
                ("Content-Type".to_string(), "text/plain; charset=utf-8".to_string()),
                ("Title".to_string(), ascii(&format!("ralph: {}", ev.event.replace('_', " ")))),
                ("Tags".to_string(), ntfy_tag(&ev.event).to_string()),
                ("Priority".to_string(), if urgent(&ev.event) { "high" } else { "default" }.to_string()),
            ];
            headers.extend(bearer(token));
            Post { url: url.clone(), headers, body: ev.text.clone().into_bytes() }
        }
        Target::Slack { url } => Post {
            url: url.clone(),
            headers: vec![content_json],
            body: json(serde_json::json!({ "text": slack_escape(&ev.text) })),
        },
        Target::Discord { url } => Post {
            url: url.clone(),
            headers: vec![content_json],
            body: json(serde_json::json!({
                "content": shorten(&ev.text, DISCORD_MAX),
                "allowed_mentions": { "parse": [] },
            })),
        },
        Target::Telegram { api, token, chat_id } => Post {
            url: format!("{}/bot{token}/sendMessage", api.trim_end_matches('/')),
            headers: vec![content_json],
            body: json(serde_json::json!({
                "chat_id": chat_id,
                "text": shorten(&ev.text, TELEGRAM_MAX),
                "disable_web_page_preview": true,
            })),
        },
    })
}

/// Events a person should look at soon.
fn urgent(event: &str) -> bool {
    matches!(event, "task_blocked" | "budget_spent" | "checks_red_streak")
}

/// An ntfy tag (shown as an emoji) per event.
fn ntfy_tag(event: &str) -> &'static str {
    match event {
        "task_done" => "white_check_mark",
        "task_blocked" => "no_entry",
        "budget_spent" => "money_with_wings",
        "rate_limited" => "hourglass",
        "agent_fallback" => "twisted_rightwards_arrows",
        "checks_red_streak" => "red_circle",
        _ => "checkered_flag",
    }
}

/// HTTP header values are ASCII.
fn ascii(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect()
}

/// Slack reads `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The event in one line (two for `run_end`: the report's path), for people: what the chat
/// presets send and `text` holds.
pub fn text(ev: &Event, repo: &str) -> String {
    let task = ev.task.as_deref().unwrap_or("?");
    let titled = match &ev.title {
        Some(t) => format!("{task} ({t})"),
        None => task.to_string(),
    };
    let reason = ev.reason.as_deref().unwrap_or("");
    let body = match ev.event.as_str() {
        "run_end" => format!("{}\nreport: {}", ev.summary, ev.report),
        "task_done" => format!(
            "task {titled} done{}",
            ev.commit.as_deref().map(|c| format!(" ({})", &c[..c.len().min(12)])).unwrap_or_default()
        ),
        "task_blocked" => format!("task {titled} blocked: {reason}"),
        "budget_spent" => format!("run stopped: {reason}"),
        "rate_limited" => format!("usage limit on {titled}: {reason}; the run waits it out"),
        "agent_fallback" => format!(
            "agent {} → {}: {reason}",
            ev.previous_agent.as_deref().unwrap_or("?"),
            ev.agent.as_deref().unwrap_or("?")
        ),
        "checks_red_streak" => format!(
            "{} iterations in a row with the checks red; the last on {titled}: {reason}",
            ev.streak.unwrap_or(0)
        ),
        other => format!("{other} {titled}"),
    };
    format!("[{repo}] {body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn event(name: &str) -> Event {
        let mut ev = Event {
            event: name.into(),
            run_id: "20261201-1".into(),
            repo: "/src/shop".into(),
            timestamp: "2026-12-01T02:00:00.000Z".into(),
            task: Some("010-login".into()),
            title: Some("Add <login> & logout".into()),
            iteration: Some(3),
            outcome: Some("checks_failed".into()),
            cause: Some("checks_failed".into()),
            reason: Some("3 failed attempts; the last: checks_failed".into()),
            commit: None,
            worker: None,
            counts: BTreeMap::from([("checks_failed".into(), 3)]),
            summary: "ralph run 20261201-1: 3 iteration(s): 3 checks_failed in 9m so far".into(),
            report: "/src/shop/.ralph/runs/20261201-1".into(),
            exit_code: None,
            streak: None,
            agent: None,
            previous_agent: None,
            text: String::new(),
        };
        ev.text = text(&ev, "shop");
        ev
    }

    fn body(p: &Post) -> serde_json::Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    fn header<'a>(p: &'a Post, name: &str) -> Option<&'a str> {
        p.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_webhook_gets_the_event_json_and_a_bearer_token_if_named() {
        let ev = event("task_blocked");
        let p = post(&Target::Webhook { url: "https://h/x".into(), token: Some("tok".into()) }, &ev).unwrap();
        assert_eq!(p.url, "https://h/x");
        assert_eq!(header(&p, "Content-Type"), Some("application/json"));
        assert_eq!(header(&p, "Authorization"), Some("Bearer tok"));
        let back: Event = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(back, ev);
        let p = post(&Target::Webhook { url: "http://h".into(), token: None }, &ev).unwrap();
        assert_eq!(header(&p, "Authorization"), None);
        assert!(post(&Target::Command(vec!["x".into()]), &ev).is_none());
    }

    #[test]
    fn ntfy_gets_the_text_with_title_tags_and_priority() {
        let ev = event("task_blocked");
        let p = post(&Target::Ntfy { url: "https://ntfy.sh/ralph-x".into(), token: None }, &ev).unwrap();
        assert_eq!(p.url, "https://ntfy.sh/ralph-x");
        assert_eq!(
            String::from_utf8(p.body.clone()).unwrap(),
            "[shop] task 010-login (Add <login> & logout) blocked: 3 failed attempts; the last: checks_failed"
        );
        assert_eq!(header(&p, "Title"), Some("ralph: task blocked"));
        assert_eq!(header(&p, "Tags"), Some("no_entry"));
        assert_eq!(header(&p, "Priority"), Some("high"));
        let done =
            post(&Target::Ntfy { url: "u".into(), token: Some("tk".into()) }, &event("task_done")).unwrap();
        assert_eq!(header(&done, "Priority"), Some("default"));
        assert_eq!(header(&done, "Authorization"), Some("Bearer tk"));
    }

    #[test]
    fn slack_gets_escaped_text() {
        let p = post(
            &Target::Slack { url: "https://hooks.slack.com/services/T/B/X".into() },
            &event("task_blocked"),
        )
        .unwrap();
        assert_eq!(
            body(&p),
            serde_json::json!({"text": "[shop] task 010-login (Add &lt;login&gt; &amp; logout) blocked: 3 failed attempts; the last: checks_failed"})
        );
    }

    #[test]
    fn discord_gets_content_without_mentions_cut_to_its_limit() {
        let mut ev = event("task_blocked");
        ev.text = "@everyone ".repeat(300);
        let p = post(&Target::Discord { url: "https://discord.com/api/webhooks/1/x".into() }, &ev).unwrap();
        let b = body(&p);
        assert_eq!(b["allowed_mentions"], serde_json::json!({"parse": []}));
        let content = b["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), DISCORD_MAX);
        assert!(content.ends_with('…'));
    }

    #[test]
    fn telegram_posts_send_message_with_the_token_in_the_path() {
        let t =
            Target::Telegram { api: TELEGRAM_API.into(), token: "123:abc".into(), chat_id: "-1001".into() };
        let p = post(&t, &event("run_end")).unwrap();
        assert_eq!(p.url, "https://api.telegram.org/bot123:abc/sendMessage");
        let b = body(&p);
        assert_eq!(b["chat_id"], "-1001");
        assert_eq!(b["disable_web_page_preview"], true);
        assert!(b["text"].as_str().unwrap().starts_with("[shop] ralph run 20261201-1"), "{b}");
    }

    #[test]
    fn each_event_reads_as_a_line() {
        let mut ev = event("checks_red_streak");
        ev.streak = Some(3);
        assert_eq!(
            text(&ev, "shop"),
            "[shop] 3 iterations in a row with the checks red; the last on 010-login (Add <login> & logout): 3 failed attempts; the last: checks_failed"
        );
        let mut ev = event("agent_fallback");
        ev.agent = Some("codex".into());
        ev.previous_agent = Some("claude".into());
        ev.reason = Some("usage limit until 06:00".into());
        assert_eq!(text(&ev, "shop"), "[shop] agent claude → codex: usage limit until 06:00");
        let mut ev = event("task_done");
        ev.commit = Some("0123456789abcdef".into());
        assert_eq!(text(&ev, "shop"), "[shop] task 010-login (Add <login> & logout) done (0123456789ab)");
        let mut ev = event("run_end");
        ev.summary = "ralph: backlog done — 1 iteration(s): 1 done in 5s (exit 0)".into();
        ev.report = "/src/shop/.ralph/runs/r/report.html".into();
        assert_eq!(
            text(&ev, "shop"),
            "[shop] ralph: backlog done — 1 iteration(s): 1 done in 5s (exit 0)\nreport: /src/shop/.ralph/runs/r/report.html"
        );
    }
}
