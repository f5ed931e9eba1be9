//! The OpenAI wire format: request bodies (checked and bounded before any
//! work), responses, stream chunks and errors.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::template::Message;

/// Largest request body accepted (HTTP 413 past it).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most stop strings, and the longest one, a request may give.
const MAX_STOPS: usize = 8;
const MAX_STOP_BYTES: usize = 256;

/// An error as OpenAI clients read it, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, kind: "invalid_request_error", message: message.into() }
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "code": self.status } })
    }
}

/// Sampling and stopping, common to both completion endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Generate past end-of-generation tokens (llama-server's extension;
    /// for benchmarks).
    pub ignore_eos: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields both endpoints share, as sent.
#[derive(Debug, Deserialize)]
struct RawParams {
    model: Option<String>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<i64>,
    #[serde(default)]
    ignore_eos: bool,
}

impl RawParams {
    fn check(self) -> Result<(Option<String>, Params), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported"));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(n) if n < 1 => return Err(ApiError::bad_request(format!("max_tokens must be at least 1, got {n}"))),
            n => n.map(|n| n as usize),
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(format!("temperature must be between 0 and 2, got {temperature}")));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(format!("top_p must be in (0, 1], got {top_p}")));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::bad_request(format!(
                "stop takes up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_BYTES} bytes"
            )));
        }
        let params = Params {
            max_tokens,
            temperature,
            top_p,
            seed: self.seed.map_or(0xdead_beef, |s| s as u64),
            stop,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            ignore_eos: self.ignore_eos,
        };
        Ok((self.model, params))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct RawChat {
    messages: Vec<RawMessage>,
    #[serde(flatten)]
    params: RawParams,
}

#[derive(Debug, Deserialize)]
struct RawCompletion {
    prompt: String,
    #[serde(flatten)]
    params: RawParams,
}

/// A checked chat request: its messages, the model it names, and params.
#[derive(Debug)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub params: Params,
}

/// A checked completion request.
#[derive(Debug)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: String,
    pub params: Params,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

pub fn chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let raw: RawChat = parse(body)?;
    if raw.messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(raw.messages.len());
    for m in raw.messages {
        if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad_request(format!("unknown message role {:?}", m.role)));
        }
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!("content part {kind:?} is not supported")))
                        }
                    }
                }
                text
            }
        };
        let role = if m.role == "developer" { "system".to_owned() } else { m.role };
        messages.push(Message { role, content });
    }
    let (model, params) = raw.params.check()?;
    Ok(ChatRequest { model, messages, params })
}

pub fn completion_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let raw: RawCompletion = parse(body)?;
    let (model, params) = raw.params.check()?;
    Ok(CompletionRequest { model, prompt: raw.prompt, params })
}

/// Why a generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    Stop,
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = chat_request(br#"{"messages":[{"role":"user","content":"hi"}],"stop":"\n","max_tokens":5}"#).unwrap();
        assert_eq!(ok.messages, [Message { role: "user".into(), content: "hi".into() }]);
        assert_eq!((ok.params.stop.as_slice(), ok.params.max_tokens), (&["\n".to_owned()][..], Some(5)));
        let parts =
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#;
        assert_eq!(chat_request(parts).unwrap().messages[0].content, "ab");
        for (body, says) in [
            (&br#"{"messages":[]}"#[..], "must not be empty"),
            (br#"{"messages":[{"role":"wizard","content":"x"}]}"#, "unknown message role"),
            (br#"{"messages":[{"role":"user","content":"x"}],"n":2}"#, "n = 1"),
            (br#"{"messages":[{"role":"user","content":"x"}],"temperature":9}"#, "temperature"),
            (br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, "max_tokens"),
            (br#"{"messages":[{"role":"user","content":"x"}],"stop":[""]}"#, "stop"),
            (br#"{"messages":"#, "bad request body"),
            (br#"{"prompt":"x"}"#, "missing field `messages`"),
        ] {
            let e = chat_request(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(says), "{} lacks {says:?}", e.message);
        }
    }

    proptest! {
        #[test]
        fn any_body_is_a_request_or_a_400(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = chat_request(&body) {
                prop_assert_eq!(e.status, 400);
            }
            if let Err(e) = completion_request(&body) {
                prop_assert_eq!(e.status, 400);
            }
        }

        #[test]
        fn any_json_request_is_a_request_or_a_400(
            temperature in -5.0f32..5.0,
            top_p in -1.0f32..2.0,
            max_tokens in -3i64..100,
            stop in proptest::collection::vec(".{0,4}", 0..12),
            role in "(user|system|assistant|x)",
        ) {
            let body = serde_json::to_vec(&json!({
                "messages": [{"role": role, "content": "hi"}],
                "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "stop": stop,
            })).unwrap();
            match chat_request(&body) {
                Ok(r) => {
                    prop_assert!((0.0..=2.0).contains(&r.params.temperature));
                    prop_assert!(r.params.stop.len() <= MAX_STOPS);
                    prop_assert!(r.params.max_tokens.is_some_and(|n| n >= 1));
                }
                Err(e) => prop_assert_eq!(e.status, 400),
            }
        }
    }
}

/// A worker's request to join a serving ring.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub port: u16,
    pub host: Option<String>,
}

impl JoinRequest {
    /// The worker's address: `host`, else the request's source, with `port`.
    pub fn address(&self, from: std::net::IpAddr) -> Result<String, String> {
        if self.port == 0 {
            return Err("port 0 is not a worker's port".into());
        }
        match &self.host {
            None => Ok(std::net::SocketAddr::new(from, self.port).to_string()),
            Some(h) if h.is_empty() || h.len() > 253 => Err("host must be 1 to 253 characters".into()),
            Some(h) if !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')) => {
                Err(format!("host {h:?} is not a host name or address"))
            }
            Some(h) if h.contains(':') && !h.starts_with('[') => Ok(format!("[{h}]:{}", self.port)),
            Some(h) => Ok(format!("{h}:{}", self.port)),
        }
    }
}
