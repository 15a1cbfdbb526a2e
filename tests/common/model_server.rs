//! A scripted model server on 127.0.0.1 for the real-agent suite. It speaks the Anthropic
//! Messages API (SSE), the OpenAI Responses API (SSE), OpenAI Chat Completions (SSE or JSON)
//! and Gemini's generateContent, enough for Claude Code, Codex, pi, Gemini CLI and opencode.
//!
//! The script is stateless, read from each request: a request whose conversation already holds
//! a tool result gets the final text; a request offering a shell tool gets one call of it
//! running `command` (with the CLI's own tool and argument names); anything else (a CLI's side
//! calls: titles, routing) gets a short text. `fail` makes the next model requests answer 429
//! or 401 instead.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shell tools by name, in the order they are preferred.
const SHELL_TOOLS: &[&str] = &["Bash", "exec_command", "shell", "bash", "run_shell_command", "shell_command"];

/// What the next model requests get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// 429 with "try again in 1s", for the next `n` model requests (then Ok).
    RateLimited(u32),
    /// 401, always.
    Unauthorized,
    /// 429 for the requests of one wire protocol until the Unix time `reset` (then Ok), with
    /// the reset in the headers each CLI reads (`retry-after`, Anthropic's
    /// `anthropic-ratelimit-unified-*`) and in the message ("try again in N seconds"); the
    /// other protocols are served as usual: one agent limited, another not.
    LimitedUntil {
        dialect: Dialect,
        reset: u64,
    },
}

/// A wire protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic Messages: Claude Code.
    Anthropic,
    /// OpenAI Responses and Chat Completions: Codex, pi, opencode.
    OpenAi,
    /// Gemini generateContent: Gemini CLI.
    Gemini,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Anthropic => "anthropic",
            Dialect::OpenAi => "openai",
            Dialect::Gemini => "gemini",
        }
    }
}

/// The Unix time now, in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[derive(Debug)]
struct State {
    command: String,
    final_text: String,
    mode: Mode,
    log: Vec<String>,
}

/// The running server; it stops when dropped.
pub struct ModelServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl ModelServer {
    /// Starts a server whose tool call runs `command` and whose final message is `final_text`.
    pub fn start(command: &str, final_text: &str) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            command: command.to_string(),
            final_text: final_text.to_string(),
            mode: Mode::Ok,
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        ModelServer { port, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// One line per request answered: "METHOD path -> what".
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Request {
    method: String,
    path: String,
    body: Value,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end).ok()?;
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk).ok()?;
            body.extend(chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf).ok()?;
        }
    } else if length > 0 {
        body = vec![0; length];
        r.read_exact(&mut body).ok()?;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Request { method, path, body })
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let Ok(write) = conn.try_clone() else { return };
    let mut out = Writer(write, false);
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let what = answer(&req, state, &mut out);
        state.lock().unwrap().log.push(format!("{} {} -> {what}", req.method, req.path));
        if out.1 {
            return;
        }
    }
}

/// The connection, and whether writing to it failed.
struct Writer(TcpStream, bool);

impl Writer {
    fn json(&mut self, status: u16, body: &Value, headers: &[(&str, &str)]) {
        let b = body.to_string();
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reason(status),
            b.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.raw(head.as_bytes());
        self.raw(b.as_bytes());
    }

    fn sse_start(&mut self) {
        self.raw(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n");
    }

    fn event(&mut self, name: Option<&str>, data: &str) {
        let mut s = String::new();
        if let Some(n) = name {
            s.push_str(&format!("event: {n}\n"));
        }
        s.push_str(&format!("data: {data}\n\n"));
        self.raw(format!("{:x}\r\n{s}\r\n", s.len()).as_bytes());
    }

    fn sse_end(&mut self) {
        self.raw(b"0\r\n\r\n");
    }

    fn raw(&mut self, b: &[u8]) {
        if self.0.write_all(b).and_then(|()| self.0.flush()).is_err() {
            self.1 = true;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Error",
    }
}

fn id(prefix: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{:024x}", N.fetch_add(1, Ordering::SeqCst))
}

/// The shell tool a request offers: its name and the arguments that run `command`.
fn shell_call(tools: &[(String, Value)], command: &str) -> Option<(String, Value)> {
    for want in SHELL_TOOLS {
        if let Some((name, schema)) = tools.iter().find(|(n, _)| n == want) {
            let props = &schema["properties"];
            let key = if props.get("cmd").is_some() { "cmd" } else { "command" };
            let args = if props[key]["type"] == "array" {
                json!({ key: ["bash", "-lc", command] })
            } else {
                json!({ key: command })
            };
            return Some((name.clone(), args));
        }
    }
    None
}

/// Tool names and parameter schemas, in any dialect.
fn tools_of(body: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for t in body["tools"].as_array().into_iter().flatten() {
        if let Some(f) = t.get("function") {
            out.push((f["name"].as_str().unwrap_or("").to_string(), f["parameters"].clone()));
        } else if let Some(n) = t["name"].as_str() {
            let schema =
                t.get("input_schema").or_else(|| t.get("parameters")).cloned().unwrap_or(Value::Null);
            out.push((n.to_string(), schema));
        }
        for fd in t["functionDeclarations"].as_array().into_iter().flatten() {
            let schema = fd
                .get("parameters")
                .or_else(|| fd.get("parametersJsonSchema"))
                .cloned()
                .unwrap_or(Value::Null);
            out.push((fd["name"].as_str().unwrap_or("").to_string(), schema));
        }
    }
    out
}

/// Whether this model request (in `dialect`) must fail, and how: the status and, for a 429,
/// the seconds until the limit resets.
fn failing(state: &Mutex<State>, dialect: Dialect) -> Option<(u16, u64)> {
    let mut s = state.lock().unwrap();
    match s.mode {
        Mode::Ok => None,
        Mode::Unauthorized => Some((401, 0)),
        Mode::RateLimited(n) => {
            s.mode = if n <= 1 { Mode::Ok } else { Mode::RateLimited(n - 1) };
            Some((429, 1))
        }
        Mode::LimitedUntil { dialect: d, reset } => {
            let now = unix_now();
            (d == dialect && now < reset).then(|| (429, reset - now))
        }
    }
}

fn fail(out: &mut Writer, (status, reset_in): (u16, u64), dialect: Dialect) -> String {
    let wait = if reset_in == 1 { "1s".to_string() } else { format!("{reset_in} seconds") };
    let body = match (dialect.name(), status) {
        ("anthropic", 429) => {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": format!("Rate limited (mock). Please try again in {wait}.")}})
        }
        ("anthropic", _) => {
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        }
        ("gemini", 429) => {
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": format!("Resource has been exhausted (mock). Please try again in {wait}.")}})
        }
        ("gemini", _) => {
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "API key not valid (mock)."}})
        }
        (_, 429) => {
            json!({"error": {"message": format!("Rate limit reached (mock). Please try again in {wait}."), "type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "param": null}})
        }
        _ => {
            json!({"error": {"message": "Incorrect API key provided (mock).", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}})
        }
    };
    let (secs, reset) = (reset_in.to_string(), (unix_now() + reset_in).to_string());
    let headers: Vec<(&str, &str)> = if status != 429 {
        Vec::new()
    } else if reset_in == 1 {
        vec![("retry-after", "1")]
    } else {
        vec![
            ("retry-after", secs.as_str()),
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", reset.as_str()),
        ]
    };
    out.json(status, &body, &headers);
    format!("{status}")
}

/// What a request gets: the final text, a shell call, or a side answer.
enum Turn {
    Final(String),
    Shell(String, Value),
    Side,
}

fn turn(state: &Mutex<State>, has_result: bool, tools: &[(String, Value)]) -> Turn {
    let s = state.lock().unwrap();
    if has_result {
        return Turn::Final(s.final_text.clone());
    }
    match shell_call(tools, &s.command) {
        Some((name, args)) => Turn::Shell(name, args),
        None => Turn::Side,
    }
}

fn answer(req: &Request, state: &Mutex<State>, out: &mut Writer) -> String {
    let path = req.path.split('?').next().unwrap_or("");
    if req.method == "GET" {
        if path.ends_with("/models") {
            out.json(200, &json!({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "mock"}], "models": []}), &[]);
            return "models".into();
        }
        out.json(404, &json!({"error": {"message": format!("not found: {path}")}}), &[]);
        return "404".into();
    }
    if path.ends_with("/messages/count_tokens") {
        out.json(200, &json!({"input_tokens": 42}), &[]);
        return "count_tokens".into();
    }
    if path.contains(":countTokens") {
        out.json(200, &json!({"totalTokens": 42}), &[]);
        return "count_tokens".into();
    }
    if path.ends_with("/messages") {
        return anthropic(req, state, out);
    }
    if path.ends_with("/responses") {
        return responses(req, state, out);
    }
    if path.ends_with("/chat/completions") {
        return chat(req, state, out);
    }
    if path.contains(":streamGenerateContent") || path.contains(":generateContent") {
        return gemini(req, state, out, path.contains(":stream"));
    }
    out.json(404, &json!({"error": {"message": format!("not found: {path}")}}), &[]);
    "404".into()
}

fn anthropic(req: &Request, state: &Mutex<State>, out: &mut Writer) -> String {
    if let Some(failure) = failing(state, Dialect::Anthropic) {
        return fail(out, failure, Dialect::Anthropic);
    }
    let b = &req.body;
    let has_result = b["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["content"].as_array().into_iter().flatten().any(|c| c["type"] == "tool_result"));
    let (kind, blocks) = match turn(state, has_result, &tools_of(b)) {
        Turn::Final(t) => ("final", vec![json!({"type": "text", "text": t})]),
        Turn::Shell(name, args) => {
            ("tool", vec![json!({"type": "tool_use", "id": id("toolu_"), "name": name, "input": args})])
        }
        Turn::Side => ("side", vec![json!({"type": "text", "text": "Side answer"})]),
    };
    let stop = if kind == "tool" { "tool_use" } else { "end_turn" };
    let model = b["model"].as_str().unwrap_or("claude-mock").to_string();
    let usage = json!({"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    let mid = id("msg_");
    if b["stream"] != true {
        out.json(200, &json!({"id": mid, "type": "message", "role": "assistant", "model": model, "content": blocks, "stop_reason": stop, "stop_sequence": null, "usage": usage}), &[]);
        return kind.into();
    }
    out.sse_start();
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let ev = |out: &mut Writer, name: &str, v: Value| out.event(Some(name), &v.to_string());
    ev(
        out,
        "message_start",
        json!({"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    );
    for (i, block) in blocks.iter().enumerate() {
        if block["type"] == "text" {
            ev(
                out,
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
            );
            ev(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}}),
            );
        } else {
            ev(
                out,
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            );
            ev(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            );
        }
        ev(out, "content_block_stop", json!({"type": "content_block_stop", "index": i}));
    }
    ev(
        out,
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 20}}),
    );
    ev(out, "message_stop", json!({"type": "message_stop"}));
    out.sse_end();
    kind.into()
}

fn responses(req: &Request, state: &Mutex<State>, out: &mut Writer) -> String {
    if let Some(failure) = failing(state, Dialect::OpenAi) {
        return fail(out, failure, Dialect::OpenAi);
    }
    let b = &req.body;
    let has_result = b["input"].as_array().into_iter().flatten().any(|i| {
        matches!(
            i["type"].as_str(),
            Some("function_call_output" | "custom_tool_call_output" | "local_shell_call_output")
        )
    });
    let (kind, item) = match turn(state, has_result, &tools_of(b)) {
        Turn::Shell(name, args) => (
            "tool",
            json!({"type": "function_call", "id": id("fc_"), "call_id": id("call_"), "name": name, "arguments": args.to_string(), "status": "completed"}),
        ),
        t => {
            let (kind, text) = match t {
                Turn::Final(t) => ("final", t),
                _ => ("side", "Side answer".to_string()),
            };
            (
                kind,
                json!({"type": "message", "id": id("msg_"), "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}),
            )
        }
    };
    let model = b["model"].as_str().unwrap_or("m");
    let rid = id("resp_");
    let base = json!({"id": rid, "object": "response", "created_at": 0, "model": model, "status": "in_progress", "output": []});
    out.sse_start();
    let ev = |out: &mut Writer, name: &str, v: Value| out.event(Some(name), &v.to_string());
    ev(out, "response.created", json!({"type": "response.created", "response": base}));
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    ev(
        out,
        "response.output_item.added",
        json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
    );
    if item["type"] == "message" {
        ev(
            out,
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": item["content"][0]["text"]}),
        );
    }
    ev(
        out,
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    );
    let mut done = base.clone();
    done["status"] = json!("completed");
    done["output"] = json!([item]);
    done["usage"] = json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120});
    ev(out, "response.completed", json!({"type": "response.completed", "response": done}));
    out.sse_end();
    kind.into()
}

fn chat(req: &Request, state: &Mutex<State>, out: &mut Writer) -> String {
    if let Some(failure) = failing(state, Dialect::OpenAi) {
        return fail(out, failure, Dialect::OpenAi);
    }
    let b = &req.body;
    let has_result = b["messages"].as_array().into_iter().flatten().any(|m| m["role"] == "tool");
    let (kind, msg, finish) = match turn(state, has_result, &tools_of(b)) {
        Turn::Shell(name, args) => (
            "tool",
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": id("call_"), "type": "function", "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
        Turn::Final(t) => ("final", json!({"role": "assistant", "content": t}), "stop"),
        Turn::Side => ("side", json!({"role": "assistant", "content": "Side answer"}), "stop"),
    };
    let model = b["model"].as_str().unwrap_or("m");
    let cid = id("chatcmpl-");
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120});
    if b["stream"] != true {
        out.json(200, &json!({"id": cid, "object": "chat.completion", "created": 0, "model": model, "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage}), &[]);
        return kind.into();
    }
    out.sse_start();
    let chunk = |out: &mut Writer, delta: Value, fr: Value| {
        out.event(None, &json!({"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": fr}]}).to_string());
    };
    chunk(out, json!({"role": "assistant", "content": ""}), Value::Null);
    if kind == "tool" {
        let tc = &msg["tool_calls"][0];
        chunk(
            out,
            json!({"tool_calls": [{"index": 0, "id": tc["id"], "type": "function", "function": {"name": tc["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        );
        chunk(
            out,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": tc["function"]["arguments"]}}]}),
            Value::Null,
        );
    } else {
        chunk(out, json!({"content": msg["content"]}), Value::Null);
    }
    chunk(out, json!({}), json!(finish));
    if b["stream_options"]["include_usage"] == true {
        out.event(None, &json!({"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}).to_string());
    }
    out.event(None, "[DONE]");
    out.sse_end();
    kind.into()
}

/// Fills a JSON schema with plain values (Gemini CLI's side calls ask for JSON output).
fn fill(schema: &Value) -> Value {
    match schema["type"].as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("array") => json!([]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("string") => schema["enum"].get(0).cloned().unwrap_or(json!("mock")),
        _ => {
            let mut o = serde_json::Map::new();
            for (k, v) in schema["properties"].as_object().into_iter().flatten() {
                o.insert(k.clone(), fill(v));
            }
            Value::Object(o)
        }
    }
}

fn gemini(req: &Request, state: &Mutex<State>, out: &mut Writer, stream: bool) -> String {
    if let Some(failure) = failing(state, Dialect::Gemini) {
        return fail(out, failure, Dialect::Gemini);
    }
    let b = &req.body;
    let has_result =
        b["contents"].as_array().into_iter().flatten().any(|c| {
            c["parts"].as_array().into_iter().flatten().any(|p| p.get("functionResponse").is_some())
        });
    let (kind, parts) = match turn(state, has_result, &tools_of(b)) {
        Turn::Final(t) => ("final", json!([{"text": t}])),
        Turn::Shell(name, args) => ("tool", json!([{"functionCall": {"name": name, "args": args}}])),
        Turn::Side => {
            let gc = &b["generationConfig"];
            let text = if gc["responseMimeType"] == "application/json" {
                let schema = gc
                    .get("responseJsonSchema")
                    .or_else(|| gc.get("responseSchema"))
                    .cloned()
                    .unwrap_or(Value::Null);
                fill(&schema).to_string()
            } else {
                "Side answer".to_string()
            };
            ("side", json!([{"text": text}]))
        }
    };
    let resp = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}, "modelVersion": "gemini-mock"});
    if !stream {
        out.json(200, &resp, &[]);
        return kind.into();
    }
    out.sse_start();
    out.event(None, &resp.to_string());
    out.sse_end();
    kind.into()
}
