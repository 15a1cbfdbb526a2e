//! Gemini CLI `--output-format stream-json`: `init`, `message` (assistant text, possibly in
//! `delta` pieces), `tool_use`, `tool_result`, `error`, `result` with `stats`.

use super::{Report, Tokens, str_at, u64_at};
use jiff::Zoned;
use serde_json::Value;

/// The assistant message being assembled from deltas.
#[derive(Debug, Default)]
pub(super) struct State {
    current: String,
}

pub(super) fn line(s: &mut State, r: &mut Report, v: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    let kind = str_at(v, "type");
    if kind != Some("message") {
        finish(s, r, emit);
    }
    match kind {
        Some("init") => {
            r.session_id = str_at(v, "session_id").map(str::to_string);
            r.model = str_at(v, "model").map(str::to_string);
        }
        Some("message") if str_at(v, "role") == Some("assistant") => {
            let text = str_at(v, "content").unwrap_or("");
            if v.get("delta").and_then(Value::as_bool) == Some(true) {
                s.current.push_str(text);
            } else {
                finish(s, r, emit);
                s.current.push_str(text);
                finish(s, r, emit);
            }
        }
        Some("message") => finish(s, r, emit),
        Some("error") => {
            let m = str_at(v, "message").unwrap_or("error");
            if str_at(v, "severity") != Some("warning") {
                r.fail(m, None, now);
            }
        }
        Some("result") => {
            if str_at(v, "status") == Some("error") {
                let m = str_at(&v["error"], "message").unwrap_or("the run failed").to_string();
                r.fail(&m, None, now);
            }
            let st = &v["stats"];
            if st.is_object() {
                let cached = u64_at(st, "cached");
                let input = st
                    .get("input")
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| u64_at(st, "input_tokens").saturating_sub(cached));
                r.tokens = Some(Tokens {
                    input,
                    output: u64_at(st, "output_tokens"),
                    cache_read: cached,
                    cache_write: 0,
                });
                if let Some(n) = st.get("turns").and_then(Value::as_u64) {
                    r.num_turns = u32::try_from(n).ok();
                }
            }
        }
        _ => {}
    }
}

/// Flushes the assistant message assembled so far.
pub(super) fn finish(s: &mut State, r: &mut Report, emit: &mut dyn FnMut(&str)) {
    if !s.current.is_empty() {
        let text = std::mem::take(&mut s.current);
        emit(&text);
        r.final_message = Some(text);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::parse;

    #[test]
    fn deltas_make_one_message() {
        let text = r#"{"type":"init","session_id":"g-1","model":"gemini-2.5-pro"}
{"type":"message","role":"user","content":"the prompt <promise>COMPLETE</promise>"}
{"type":"message","role":"assistant","content":"Done. <promise>COMP","delta":true}
{"type":"message","role":"assistant","content":"LETE</promise>","delta":true}
{"type":"result","status":"success","stats":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"cached":5,"input":15}}
"#;
        let (r, f) = parse(Format::GeminiStreamJson, text);
        assert!(f.promise);
        assert_eq!(r.final_message.as_deref(), Some("Done. <promise>COMPLETE</promise>"));
        assert_eq!(r.tokens.unwrap().input, 15);
        assert_eq!(r.model.as_deref(), Some("gemini-2.5-pro"));
    }
}
