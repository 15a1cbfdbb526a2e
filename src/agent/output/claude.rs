//! Claude Code `--output-format stream-json` (one JSON object per line), also spoken by Amp,
//! Qwen Code and Cursor CLI. A failed API call arrives as `subtype: "success"` with
//! `is_error: true` and `api_error_status`: classify on those, never on `subtype`. Qwen Code's
//! failed run has no `result` but `error.message` ("[API Error: 401 No auth credentials
//! found]"), classified on the status it names.

use super::{Report, Tokens, str_at, u64_at};
use crate::agent::limits::{self, Fatal, Limit};
use jiff::{Timestamp, Zoned};
use serde_json::Value;

/// The usage Claude streams per model call, summed while no final `result` line (which Claude
/// does not print when it is killed) gives the total.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The latest usage of each message: Claude repeats a message's usage on every content
    /// block of it, so it is counted once, by message id.
    calls: Vec<(String, Tokens)>,
    /// The `result` line came: its totals are the iteration's.
    result: bool,
}

pub(super) fn line(st: &mut State, r: &mut Report, v: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    match str_at(v, "type") {
        Some("system") => {
            if let Some(id) = str_at(v, "session_id") {
                r.session_id = Some(id.to_string());
            }
            if let Some(m) = str_at(v, "model") {
                r.model = Some(m.to_string());
            }
        }
        Some("assistant") => {
            let msg = &v["message"];
            // Claude labels the messages it makes up itself (API errors) "<synthetic>".
            if r.model.is_none() {
                r.model = str_at(msg, "model").filter(|m| !m.starts_with('<')).map(str::to_string);
            }
            let mut last = None;
            for block in msg["content"].as_array().into_iter().flatten() {
                if str_at(block, "type") == Some("text")
                    && let Some(t) = str_at(block, "text")
                {
                    emit(t);
                    last = Some(t.to_string());
                }
            }
            if let Some(t) = &last {
                r.final_message = Some(t.clone());
            }
            let u = &msg["usage"];
            if u.is_object() {
                let ctx = u64_at(u, "input_tokens")
                    + u64_at(u, "cache_read_input_tokens")
                    + u64_at(u, "cache_creation_input_tokens");
                if ctx > 0 {
                    r.context_tokens = Some(ctx);
                }
                let call = Tokens {
                    input: u64_at(u, "input_tokens"),
                    output: u64_at(u, "output_tokens"),
                    cache_read: u64_at(u, "cache_read_input_tokens"),
                    cache_write: u64_at(u, "cache_creation_input_tokens"),
                };
                // A message without an id is a call of its own.
                let id = str_at(msg, "id").map_or_else(|| format!("#{}", st.calls.len()), str::to_string);
                match st.calls.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, t)) => *t = call,
                    None => st.calls.push((id, call)),
                }
                if !st.result {
                    let mut sum = Tokens::default();
                    for (_, t) in &st.calls {
                        sum.add(*t);
                    }
                    r.tokens = Some(sum);
                }
            }
            if let Some(err) = str_at(v, "error") {
                let text = last.unwrap_or_else(|| err.to_string());
                match err {
                    "rate_limit" => {
                        r.limit
                            .get_or_insert(Limit { reset_at: limits::reset_time(&text, now), message: text });
                    }
                    "authentication_failed" | "billing_error" => r.fatal = Some(Fatal::Auth(text)),
                    _ => {}
                }
            }
        }
        Some("rate_limit_event") => {
            let info = &v["rate_limit_info"];
            if str_at(info, "status") == Some("rejected") {
                let reset_at =
                    info.get("resetsAt").and_then(Value::as_i64).and_then(|s| Timestamp::from_second(s).ok());
                let kind = str_at(info, "rateLimitType").unwrap_or("usage");
                r.limit = Some(Limit { reset_at, message: format!("{kind} limit reached") });
            }
        }
        Some("result") => {
            st.result = true;
            r.is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
            r.num_turns = v.get("num_turns").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
            if let Some(id) = str_at(v, "session_id") {
                r.session_id = Some(id.to_string());
            }
            let result = str_at(v, "result").unwrap_or("").to_string();
            if !result.is_empty() {
                // The result repeats the last assistant text; a stream that had none still
                // carries the agent's final words here.
                if r.final_message.as_deref() != Some(result.as_str()) && !r.is_error {
                    emit(&result);
                }
                r.final_message = Some(result.clone());
            }
            if let Some(c) = v.get("total_cost_usd").or_else(|| v.get("total_cost")).and_then(Value::as_f64) {
                r.cost_usd = Some(c);
            }
            let u = &v["usage"];
            if u.is_object() {
                r.tokens = Some(Tokens {
                    input: u64_at(u, "input_tokens"),
                    output: u64_at(u, "output_tokens"),
                    cache_read: u64_at(u, "cache_read_input_tokens"),
                    cache_write: u64_at(u, "cache_creation_input_tokens"),
                });
            }
            if r.is_error {
                let status =
                    v.get("api_error_status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
                let message = if result.is_empty() {
                    str_at(&v["error"], "message").or_else(|| str_at(v, "error")).unwrap_or("").to_string()
                } else {
                    result
                };
                r.fail(&message, status, now);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::super::{Format, Tokens};
    use crate::agent::limits::Fatal;

    #[test]
    fn a_successful_run() {
        let text = r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5","tools":[]}
{"type":"assistant","message":{"model":"claude-sonnet-4-5","content":[{"type":"tool_use","name":"Bash","input":{"command":"echo '<promise>COMPLETE</promise>'"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","content":"<promise>COMPLETE</promise>"}]}}
{"type":"assistant","message":{"content":[{"type":"text","text":"Done. <learning>use make</learning>\n<promise>COMPLETE</promise>"}]}}
{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"Done. <learning>use make</learning>\n<promise>COMPLETE</promise>","total_cost_usd":0.0123,"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":30,"cache_creation_input_tokens":40},"session_id":"s-1"}
"#;
        let (r, f) = parse(Format::ClaudeStreamJson, text);
        assert!(!r.is_error);
        assert_eq!(r.num_turns, Some(3));
        assert_eq!(r.cost_usd, Some(0.0123));
        assert_eq!(r.tokens, Some(Tokens { input: 10, output: 20, cache_read: 30, cache_write: 40 }));
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(r.session_id.as_deref(), Some("s-1"));
        assert!(f.promise);
        assert_eq!(f.learnings, vec!["use make"]);
    }

    #[test]
    fn a_killed_run_without_a_result_counts_its_streamed_usage() {
        // Two calls; the first repeats its usage on each content block (counted once).
        let text = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"a"}],"usage":{"input_tokens":100,"output_tokens":1,"cache_read_input_tokens":5}}}
{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Bash","input":{}}],"usage":{"input_tokens":100,"output_tokens":7,"cache_read_input_tokens":5}}}
{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"b"}],"usage":{"input_tokens":200,"output_tokens":3,"cache_creation_input_tokens":9}}}
"#;
        let (r, _) = parse(Format::ClaudeStreamJson, text);
        assert_eq!(r.tokens, Some(Tokens { input: 300, output: 10, cache_read: 5, cache_write: 9 }));
        // The result's totals win once it comes.
        let done = format!(
            "{text}{}\n",
            r#"{"type":"result","is_error":false,"result":"ok","usage":{"input_tokens":1,"output_tokens":2}}"#
        );
        let (r, _) = parse(Format::ClaudeStreamJson, &done);
        assert_eq!(r.tokens, Some(Tokens { input: 1, output: 2, cache_read: 0, cache_write: 0 }));
    }

    #[test]
    fn the_promise_in_tool_output_does_not_count() {
        let text = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"cat notes"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","content":"<promise>COMPLETE</promise>"}]}}
{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Still working."}
"#;
        let (_, f) = parse(Format::ClaudeStreamJson, text);
        assert!(!f.promise);
    }

    #[test]
    fn api_errors_are_classified_from_the_result() {
        let limit = r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795341600,"rateLimitType":"five_hour"}}
{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429) · rate_limit_error"}
"#;
        let (r, _) = parse(Format::ClaudeStreamJson, limit);
        assert!(r.is_error);
        assert_eq!(r.limit.unwrap().reset_at.unwrap().as_second(), 1795341600);

        let auth = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Failed to authenticate. API Error: 401 authentication_error"}"#;
        let (r, _) = parse(Format::ClaudeStreamJson, auth);
        assert!(matches!(r.fatal, Some(Fatal::Auth(_))));
        assert!(r.limit.is_none());
    }

    #[test]
    fn qwen_errors_are_classified_on_the_status_they_name() {
        let auth = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":1,"error":{"message":"[API Error: 401 No auth credentials found]"}}"#;
        let (r, _) = parse(Format::ClaudeStreamJson, auth);
        assert!(matches!(r.fatal, Some(Fatal::Auth(_))), "{r:?}");
        assert_eq!(r.error_message.as_deref(), Some("[API Error: 401 No auth credentials found]"));
        let limit = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":1,"error":{"message":"[API Error: 429 Provider returned error]"}}"#;
        let (r, _) = parse(Format::ClaudeStreamJson, limit);
        assert!(r.limit.is_some() && r.fatal.is_none(), "{r:?}");
    }
}
