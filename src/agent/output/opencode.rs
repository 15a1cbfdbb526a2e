//! opencode `run --format json`: every line has `type` and `sessionID`; text in `text` parts,
//! usage and cost per step in `step_finish`, failures in `error`.

use super::{Report, Tokens, str_at, u64_at};
use crate::agent::limits::Fatal;
use jiff::Zoned;
use serde_json::Value;

pub(super) fn line(r: &mut Report, v: &Value, now: &Zoned, emit: &mut dyn FnMut(&str)) {
    if let Some(id) = str_at(v, "sessionID") {
        r.session_id = Some(id.to_string());
    }
    let part = &v["part"];
    match str_at(v, "type") {
        Some("text") => {
            if let Some(t) = str_at(part, "text") {
                emit(t);
                r.final_message = Some(t.to_string());
            }
        }
        Some("step_finish") => {
            *r.num_turns.get_or_insert(0) += 1;
            let t = &part["tokens"];
            if t.is_object() {
                let cache = &t["cache"];
                r.context_tokens = Some(u64_at(t, "input") + u64_at(cache, "read") + u64_at(cache, "write"));
                r.add_tokens(Tokens {
                    input: u64_at(t, "input"),
                    output: u64_at(t, "output") + u64_at(t, "reasoning"),
                    cache_read: u64_at(cache, "read"),
                    cache_write: u64_at(cache, "write"),
                });
            }
            if let Some(c) = part.get("cost").and_then(Value::as_f64) {
                r.add_cost(c);
            }
        }
        Some("error") => {
            let e = &v["error"];
            let name = str_at(e, "name").unwrap_or("");
            let data = &e["data"];
            let message =
                str_at(data, "message").or_else(|| str_at(e, "message")).unwrap_or(name).to_string();
            if name == "ProviderAuthError" {
                r.set_error(&message);
                r.fatal = Some(Fatal::Auth(message));
                return;
            }
            let status = data.get("statusCode").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
            r.fail(&message, status, now);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::parse;

    #[test]
    fn steps_add_up() {
        let text = r#"{"type":"step_start","sessionID":"o-1","part":{}}
{"type":"text","sessionID":"o-1","part":{"text":"Done <promise>COMPLETE</promise>"}}
{"type":"step_finish","sessionID":"o-1","part":{"cost":0.5,"tokens":{"input":10,"output":5,"reasoning":1,"cache":{"read":2,"write":3}}}}
{"type":"step_finish","sessionID":"o-1","part":{"cost":0.25,"tokens":{"input":1,"output":1,"reasoning":0,"cache":{"read":0,"write":0}}}}
"#;
        let (r, f) = parse(Format::OpencodeJson, text);
        assert!(f.promise);
        assert_eq!(r.cost_usd, Some(0.75));
        assert_eq!(r.tokens.unwrap().output, 7);
        assert_eq!(r.num_turns, Some(2));
        assert_eq!(r.session_id.as_deref(), Some("o-1"));
    }
}
