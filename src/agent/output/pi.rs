//! pi `--mode json`: a `session` header, then agent, turn, message and tool events. Assistant
//! messages carry `usage` (with `cost.total`) and `stopReason`; `--mode json` exits 0 even on
//! error, so `stopReason: "error"` is what marks a failure.

use super::{Report, Tokens, str_at, u64_at};
use jiff::Zoned;
use serde_json::Value;

#[derive(Debug, Default)]
pub(super) struct State {
    /// Assistant messages already counted (`message_end` and `agent_end` both carry them).
    seen_messages: bool,
}

pub(super) fn line(s: &mut State, r: &mut Report, v: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    match str_at(v, "type") {
        Some("session") => r.session_id = str_at(v, "id").map(str::to_string),
        Some("turn_end") => *r.num_turns.get_or_insert(0) += 1,
        Some("message_end") => {
            s.seen_messages = true;
            message(r, &v["message"], now, emit);
        }
        Some("agent_end") if !s.seen_messages => {
            for m in v["messages"].as_array().into_iter().flatten() {
                message(r, m, now, emit);
            }
        }
        _ => {}
    }
}

fn message(r: &mut Report, m: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    if str_at(m, "role") != Some("assistant") {
        return;
    }
    if let Some(model) = str_at(m, "model") {
        r.model = Some(model.to_string());
    }
    let mut text = String::new();
    for block in m["content"].as_array().into_iter().flatten() {
        if str_at(block, "type") == Some("text") {
            text.push_str(str_at(block, "text").unwrap_or(""));
        }
    }
    if !text.is_empty() {
        emit(&text);
        r.final_message = Some(text);
    }
    let u = &m["usage"];
    if u.is_object() {
        let ctx = u64_at(u, "input") + u64_at(u, "cacheRead") + u64_at(u, "cacheWrite");
        if ctx > 0 {
            r.context_tokens = Some(ctx);
        }
        r.add_tokens(Tokens {
            input: u64_at(u, "input"),
            output: u64_at(u, "output"),
            cache_read: u64_at(u, "cacheRead"),
            cache_write: u64_at(u, "cacheWrite"),
        });
        if let Some(c) = u["cost"].get("total").and_then(Value::as_f64) {
            r.add_cost(c);
        }
    }
    if matches!(str_at(m, "stopReason"), Some("error") | Some("aborted")) {
        let msg = str_at(m, "errorMessage").unwrap_or("the model call failed").to_string();
        r.fail(&msg, None, now);
    } else {
        // A later successful message clears an earlier retried failure.
        r.is_error = false;
        r.limit = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::parse;

    #[test]
    fn messages_are_counted_once() {
        let a = r#"{"role":"assistant","content":[{"type":"text","text":"ok <promise>COMPLETE</promise>"}],"usage":{"input":5,"output":6,"cacheRead":1,"cacheWrite":0,"totalTokens":12,"cost":{"total":0.002}},"stopReason":"stop","model":"m"}"#;
        let text = format!(
            "{{\"type\":\"session\",\"id\":\"p-1\"}}\n{{\"type\":\"message_end\",\"message\":{a}}}\n{{\"type\":\"turn_end\"}}\n{{\"type\":\"agent_end\",\"messages\":[{a}]}}\n"
        );
        let (r, f) = parse(Format::PiJson, &text);
        assert!(f.promise);
        assert_eq!(r.tokens.unwrap().input, 5);
        assert_eq!(r.cost_usd, Some(0.002));
        assert_eq!(r.session_id.as_deref(), Some("p-1"));
        assert_eq!(r.num_turns, Some(1));
        assert!(!r.is_error);
    }

    #[test]
    fn an_error_stop_is_a_failure_even_with_exit_0() {
        let text = r#"{"type":"message_end","message":{"role":"assistant","content":[],"stopReason":"error","errorMessage":"429 Too Many Requests"}}"#;
        let (r, _) = parse(Format::PiJson, text);
        assert!(r.is_error);
        assert!(r.limit.is_some());
    }

    #[test]
    fn a_status_at_the_start_of_the_error_decides() {
        let stop = |m: &str| {
            format!(
                r#"{{"type":"message_end","message":{{"role":"assistant","content":[],"stopReason":"error","errorMessage":"{m}"}}}}"#
            )
        };
        let (r, _) = parse(Format::PiJson, &stop("401 No auth credentials found"));
        assert!(matches!(r.fatal, Some(crate::agent::limits::Fatal::Auth(_))), "{r:?}");
        // OpenRouter's wording for an upstream provider's rate limit.
        let (r, _) = parse(Format::PiJson, &stop("429 Provider returned error"));
        assert!(r.limit.is_some() && r.fatal.is_none(), "{r:?}");
    }
}
