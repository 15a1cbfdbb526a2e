//! Codex `exec --json`: `thread.started`, `turn.*`, `item.*` and `error` events. Agent text is
//! in `item.completed` items of type `agent_message`; usage in `turn.completed` (input tokens
//! include the cached ones); failures in `turn.failed` and `error`. No cost, no model.

use super::{Report, Tokens, str_at, u64_at};
use jiff::Zoned;
use serde_json::Value;

pub(super) fn line(r: &mut Report, v: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    match str_at(v, "type") {
        Some("thread.started") => r.session_id = str_at(v, "thread_id").map(str::to_string),
        Some("turn.started") => *r.num_turns.get_or_insert(0) += 1,
        Some("item.completed") => {
            let item = &v["item"];
            // Older versions call the field `item_type`.
            let kind = str_at(item, "type").or_else(|| str_at(item, "item_type"));
            if kind == Some("agent_message")
                && let Some(t) = str_at(item, "text")
            {
                emit(t);
                r.final_message = Some(t.to_string());
            }
        }
        Some("turn.completed") => {
            r.error_message = None;
            let u = &v["usage"];
            let input = u64_at(u, "input_tokens");
            let cached = u64_at(u, "cached_input_tokens");
            // Each turn reports the thread's running total.
            r.tokens = Some(Tokens {
                input: input.saturating_sub(cached),
                output: u64_at(u, "output_tokens"),
                cache_read: cached,
                cache_write: 0,
            });
        }
        Some("turn.failed") => r.fail(str_at(&v["error"], "message").unwrap_or("turn failed"), None, now),
        // Not fatal by itself: codex reports its own retries ("Reconnecting... 1/5") this way
        // and may still complete the turn. Kept as the error text if the run then fails.
        Some("error") => r.error_message = str_at(v, "message").map(str::to_string),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::super::{Format, Tokens};

    #[test]
    fn a_successful_run_and_a_usage_limit() {
        let ok = r#"{"type":"thread.started","thread_id":"t-9"}
{"type":"turn.started"}
{"type":"item.completed","item":{"id":"i1","type":"command_execution","command":"echo <promise>COMPLETE</promise>","aggregated_output":"<promise>COMPLETE</promise>","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"i2","type":"agent_message","text":"All done.\n<promise>COMPLETE</promise>"}}
{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":400,"output_tokens":50,"reasoning_output_tokens":10}}
"#;
        let (r, f) = parse(Format::CodexJson, ok);
        assert_eq!(r.session_id.as_deref(), Some("t-9"));
        assert_eq!(r.tokens, Some(Tokens { input: 600, output: 50, cache_read: 400, cache_write: 0 }));
        assert_eq!(r.num_turns, Some(1));
        assert!(f.promise);
        assert!(!r.is_error);

        let limited = r#"{"type":"turn.started"}
{"type":"turn.failed","error":{"message":"You've hit your usage limit. Try again at 3:28 PM."}}
"#;
        let (r, _) = parse(Format::CodexJson, limited);
        assert!(r.is_error);
        assert!(r.limit.unwrap().reset_at.is_some());

        // A retried error followed by a completed turn is no failure.
        let recovered = r#"{"type":"turn.started"}
{"type":"error","message":"Reconnecting... 1/5 (unexpected status 429 Too Many Requests)"}
{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"ok"}}
{"type":"turn.completed","usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1}}
"#;
        let (r, _) = parse(Format::CodexJson, recovered);
        assert!(!r.is_error && r.limit.is_none() && r.error_message.is_none(), "{r:?}");
    }
}
