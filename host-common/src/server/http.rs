//! Routes: the OpenAI endpoints, health and metrics, with OpenAI-style
//! errors for everything that goes wrong.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::api::{self, ApiError, Finish, Params, Usage, MAX_BODY_BYTES};
use super::engine::{Event, Job};
use super::AppState;

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/models", get(models))
        .route("/apply-template", post(apply_template))
        .route("/health", get(health))
        .route("/", get(page))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .route("/ring/join", post(join))
        .fallback(not_found)
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

fn error(status: u16, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, kind, message: message.into() }
}

async fn not_found() -> ApiError {
    error(404, "not_found_error", "no such route")
}

fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &s.api_key else { return Ok(()) };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(error(401, "authentication_error", "invalid or missing API key"))
    }
}

fn check_model(s: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != &s.model_name => Err(error(
            404,
            "not_found_error",
            format!("model {m:?} is not served here; this server has {:?}", s.model_name),
        )),
        _ => Ok(()),
    }
}

/// The request's body, at most [`MAX_BODY_BYTES`]: a declared length over
/// that is refused before a byte of the body is read.
async fn body(req: Request) -> Result<Bytes, ApiError> {
    let too_large = || error(413, "invalid_request_error", format!("request body over {MAX_BODY_BYTES} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await.map_err(|_| too_large())
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{ "id": s.model_name, "object": "model", "created": s.created, "owned_by": "prima" }],
    })))
}

/// The chat page, built into the binary.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("page.html"))
}

/// Once a second: the devices, their per-token times, and the counters.
async fn cluster(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = (s.stats.completion_tokens.load(Ordering::Relaxed), std::time::Instant::now());
    let ticks = stream::unfold((s, start, true), |(s, (last_tokens, last_t), first)| async move {
        if !first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let st = &s.stats;
        let tokens = st.completion_tokens.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let rate = (tokens - last_tokens) as f64 / now.duration_since(last_t).as_secs_f64().max(1e-3);
        let tpot = tpot_seconds(st);
        let ring = st.devices.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let devices: Vec<Value> = match ring.is_empty() {
            true => vec![json!({ "name": s.device_name, "layers": s.layers, "compute_s": tpot, "network_s": 0.0, "disk_s": 0.0 })],
            false => ring
                .into_iter()
                .map(|d| {
                    json!({ "name": d.name, "layers": d.layers, "compute_s": d.compute_s, "network_s": d.network_s, "disk_s": d.disk_s })
                })
                .collect(),
        };
        let view = json!({
            "model": s.model_name,
            "devices": devices,
            "stats": {
                "tokens_per_s": rate, "tpot_s": tpot, "slots": s.slots,
                "busy_slots": st.busy_slots.load(Ordering::Relaxed), "queued": st.queued.load(Ordering::Relaxed),
                "requests": st.requests.load(Ordering::Relaxed),
            },
        });
        Some((Ok(SseEvent::default().data(view.to_string())), (s, (tokens, now), false)))
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}

fn tpot_seconds(st: &super::engine::Stats) -> f64 {
    let completion = st.completion_tokens.load(Ordering::Relaxed);
    let decode_s = st.decode_micros.load(Ordering::Relaxed) as f64 / 1e6;
    if completion > 0 {
        decode_s / completion as f64
    } else {
        0.0
    }
}

/// `POST /ring/join {"port": 9000, "host": "…"}`: a worker asks a serving
/// ring's head to take it in (`prima worker --join URL`). Without `host`
/// the worker is at the address the request came from. The head connects to
/// it with its ring key between requests; a worker that does not answer or
/// cannot be planned with is left out.
async fn join(
    State(s): State<Shared>,
    ConnectInfo(from): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&s, req.headers())?;
    let Some(joins) = &s.joins else {
        return Err(error(404, "not_found_error", "this server is not a ring's head (--ring)"));
    };
    let body = body(req).await?;
    let asked: api::JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| error(400, "invalid_request_error", format!("bad join request: {e}")))?;
    let addr = asked.address(from.ip()).map_err(|why| error(400, "invalid_request_error", why))?;
    joins.send(addr.clone()).map_err(|_| error(503, "server_error", "the engine has stopped"))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "joining": addr }))))
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    Json(json!({ "status": "ok", "slots_busy": s.stats.busy_slots.load(Ordering::Relaxed) }))
}

async fn metrics(State(s): State<Shared>) -> String {
    let st = &s.stats;
    let completion = st.completion_tokens.load(Ordering::Relaxed);
    let tpot = tpot_seconds(st);
    let rows = [
        ("prima_requests_total", "counter", "Requests accepted.", st.requests.load(Ordering::Relaxed) as f64),
        (
            "prima_requests_cancelled_total",
            "counter",
            "Requests whose client left.",
            st.cancelled.load(Ordering::Relaxed) as f64,
        ),
        (
            "prima_prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            st.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        ("prima_completion_tokens_total", "counter", "Tokens generated.", completion as f64),
        (
            "prima_forward_passes_total",
            "counter",
            "Forward passes; each carries every busy slot's tokens (on a ring, one trip round it).",
            st.passes.load(Ordering::Relaxed) as f64,
        ),
        ("prima_queue_depth", "gauge", "Requests waiting for a slot.", st.queued.load(Ordering::Relaxed) as f64),
        ("prima_slots_busy", "gauge", "Slots decoding.", st.busy_slots.load(Ordering::Relaxed) as f64),
        ("prima_time_per_output_token_seconds", "gauge", "Mean decode time per generated token.", tpot),
        (
            "prima_draft_tokens_total",
            "counter",
            "Draft tokens the target checked (speculative decoding).",
            st.drafted.load(Ordering::Relaxed) as f64,
        ),
        (
            "prima_draft_tokens_accepted_total",
            "counter",
            "Draft tokens that stood.",
            st.accepted.load(Ordering::Relaxed) as f64,
        ),
    ];
    rows.iter()
        .map(|(name, kind, help, v)| format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"))
        .collect()
}

/// Tokenizes `prompt`, checks it fits a slot, and queues it.
fn submit(s: &AppState, prompt: &str, params: Params) -> Result<(usize, mpsc::UnboundedReceiver<Event>), ApiError> {
    let ids = s.tokenizer.encode(prompt, true, true);
    if ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty after tokenization"));
    }
    let wanted = ids.len() + params.max_tokens.unwrap_or(1);
    if wanted > s.slot_ctx {
        return Err(ApiError::bad_request(format!(
            "context overflow: {} prompt tokens + {} to generate exceed the {} tokens of a slot (raise -c or lower --parallel)",
            ids.len(),
            params.max_tokens.unwrap_or(1),
            s.slot_ctx
        )));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let n = ids.len();
    s.stats.queued.fetch_add(1, Ordering::Relaxed);
    if s.jobs.try_send(Job { prompt: ids, params, events: tx }).is_err() {
        s.stats.queued.fetch_sub(1, Ordering::Relaxed);
        return Err(error(503, "server_busy", "the queue is full; try again shortly"));
    }
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    Ok((n, rx))
}

/// Collects a job's events into its text, finish reason and usage.
async fn collect(n_prompt: usize, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<(String, Finish, Usage), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, usage } => return Ok((text, finish, usage)),
            Event::Failed(e) => return Err(error(500, "server_error", e)),
        }
    }
    Err(error(500, "server_error", format!("the engine dropped a request of {n_prompt} prompt tokens")))
}

fn id(prefix: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What differs between the chat and completion formats of a response.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn choice(self, text: &str, finish: Option<Finish>, chunk: bool) -> Value {
        match (self, chunk) {
            (Kind::Chat, false) => {
                json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish })
            }
            (Kind::Chat, true) => json!({ "index": 0, "delta": { "content": text }, "finish_reason": finish }),
            (Kind::Text, _) => json!({ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }),
        }
    }
}

async fn chat(State(s): State<Shared>, req: Request) -> Response {
    let run = async {
        authorize(&s, req.headers())?;
        let req = api::chat_request(&body(req).await?)?;
        check_model(&s, &req.model)?;
        let prompt = render(&s, &req.messages)?;
        respond(&s, Kind::Chat, &prompt, req.params).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The prompt a chat request becomes, as llama-server's endpoint of the
/// same name returns it.
async fn apply_template(State(s): State<Shared>, req: Request) -> Result<Json<Value>, ApiError> {
    authorize(&s, req.headers())?;
    let req = api::chat_request(&body(req).await?)?;
    Ok(Json(json!({ "prompt": render(&s, &req.messages)? })))
}

fn render(s: &AppState, messages: &[super::template::Message]) -> Result<String, ApiError> {
    s.template
        .render(messages, true)
        .map_err(|e| ApiError::bad_request(format!("the chat template refused the messages: {e}")))
}

async fn completion(State(s): State<Shared>, req: Request) -> Response {
    let run = async {
        authorize(&s, req.headers())?;
        let req = api::completion_request(&body(req).await?)?;
        check_model(&s, &req.model)?;
        respond(&s, Kind::Text, &req.prompt, req.params).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn respond(s: &Shared, kind: Kind, prompt: &str, params: Params) -> Result<Response, ApiError> {
    let (stream, include_usage) = (params.stream, params.include_usage);
    let (n_prompt, rx) = submit(s, prompt, params)?;
    let (id, created, model) =
        (id(if matches!(kind, Kind::Chat) { "chatcmpl" } else { "cmpl" }), now(), s.model_name.clone());
    if !stream {
        let (text, finish, usage) = collect(n_prompt, rx).await?;
        return Ok(Json(json!({
            "id": id, "object": kind.object(false), "created": created, "model": model,
            "choices": [kind.choice(&text, Some(finish), false)],
            "usage": usage,
        }))
        .into_response());
    }
    let head = json!({ "id": id, "object": kind.object(true), "created": created, "model": model });
    Ok(Sse::new(events(head, kind, include_usage, rx)).keep_alive(KeepAlive::default()).into_response())
}

/// The SSE stream of a job: a chunk per piece of text, one with the finish
/// reason, one with usage if asked, then `[DONE]`. Dropping it (the client
/// left) closes the job's channel, which frees its slot.
fn events(
    head: Value,
    kind: Kind,
    include_usage: bool,
    rx: mpsc::UnboundedReceiver<Event>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let chunk = move |choices: Value, usage: Option<Usage>| {
        let mut v = head.clone();
        v["choices"] = choices;
        if let Some(u) = usage {
            v["usage"] = json!(u);
        }
        SseEvent::default().data(v.to_string())
    };
    let first = matches!(kind, Kind::Chat).then(|| {
        chunk(json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]), None)
    });
    let state = (rx, Vec::<SseEvent>::new(), false);
    let body = stream::unfold(state, move |(mut rx, mut pending, mut ended)| {
        let chunk = chunk.clone();
        async move {
            loop {
                if let Some(ev) = pending.pop() {
                    return Some((Ok(ev), (rx, pending, ended)));
                }
                if ended {
                    return None;
                }
                match rx.recv().await {
                    Some(Event::Text(t)) => pending.push(chunk(json!([kind.choice(&t, None, true)]), None)),
                    Some(Event::Done { finish, usage }) => {
                        ended = true;
                        pending.push(SseEvent::default().data("[DONE]"));
                        if include_usage {
                            pending.push(chunk(json!([]), Some(usage)));
                        }
                        pending.push(chunk(json!([kind.choice("", Some(finish), true)]), None));
                    }
                    Some(Event::Failed(e)) => {
                        ended = true;
                        let error = json!({ "error": { "message": e, "type": "server_error" } });
                        pending.push(SseEvent::default().data(error.to_string()));
                    }
                    None => return None,
                }
            }
        }
    });
    stream::iter(first.map(Ok)).chain(body)
}
