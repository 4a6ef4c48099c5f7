//! Where evaluation requests go: the server's router in this process (no socket), or an
//! OpenAI-compatible server over HTTP. Both get the same streamed `/v1/chat/completions`
//! request, so an in-process run takes every step a served one does (the tool loop too).
//!
//! Owns: sending one chat request greedily and timing it (end-to-end latency, time to first
//! token, completion tokens, the tool calls the server ran). Must not: score answers or
//! aggregate figures.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::dataset::EvalItem;
use super::EvalError;

/// What one request produced and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub text: String,
    pub latency: Duration,
    /// Until the first non-empty piece of text.
    pub ttft: Option<Duration>,
    pub completion_tokens: usize,
    pub error: Option<String>,
    /// The server's tool calls (`aisle_tools.calls`), when it ran its tool loop.
    pub calls: Vec<Value>,
    /// Model turns the answer took (1 without tool calls).
    pub rounds: usize,
}

pub enum Target {
    /// The server's router in this process (the caller keeps its engine alive).
    App { app: axum::Router, model: String },
    /// A running server: base URL without `/v1`, model name, optional API key.
    Http {
        client: reqwest::Client,
        base: String,
        model: String,
        api_key: Option<String>,
    },
}

impl Target {
    /// Connect to a server; `model` defaults to the first id its `/v1/models` lists.
    pub async fn http(url: &str, model: Option<String>, api_key: Option<String>) -> Result<Target, EvalError> {
        let base = url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| EvalError::Http(e.to_string()))?;
        let model = match model {
            Some(m) => m,
            None => first_model(&client, &base, api_key.as_deref()).await?,
        };
        Ok(Target::Http {
            client,
            base,
            model,
            api_key,
        })
    }

    /// Send one item greedily with at most `max_tokens` new tokens.
    pub async fn ask(&self, item: &EvalItem, max_tokens: usize) -> Outcome {
        let start = Instant::now();
        let mut out = Outcome {
            rounds: 1,
            ..Outcome::default()
        };
        let body = |model: &str| {
            json!({
                "model": model, "messages": item.messages, "max_tokens": max_tokens, "temperature": 0,
                "stream": true, "stream_options": {"include_usage": true},
            })
        };
        let result = match self {
            Target::App { app, model } => ask_app(app, body(model), start, &mut out).await,
            Target::Http {
                client,
                base,
                model,
                api_key,
            } => {
                let req = authorised(client.post(format!("{base}/v1/chat/completions")), api_key.as_deref());
                ask_http(req.json(&body(model)), start, &mut out).await
            }
        };
        out.latency = start.elapsed();
        out.error = result.err();
        out
    }
}

fn authorised(req: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(k) => req.bearer_auth(k),
        None => req,
    }
}

async fn first_model(client: &reqwest::Client, base: &str, key: Option<&str>) -> Result<String, EvalError> {
    let url = format!("{base}/v1/models");
    let fail = |m: String| EvalError::Http(format!("GET {url}: {m}"));
    let resp = authorised(client.get(&url), key)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("{status}: {body}")));
    }
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail("no models listed".into()))
}

fn note_text(out: &mut Outcome, text: &str, start: Instant) {
    if !text.is_empty() && out.ttft.is_none() {
        out.ttft = Some(start.elapsed());
    }
    out.text.push_str(text);
}

/// One streamed event: content, usage, and the tool loop's report on the finish chunk.
fn on_event(out: &mut Outcome, event: &Value, start: Instant) {
    if let Some(text) = event["choices"][0]["delta"]["content"].as_str() {
        note_text(out, text, start);
    }
    if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
        out.completion_tokens = n as usize;
    }
    let tools = &event["choices"][0]["aisle_tools"];
    let tools = if tools.is_null() { &event["aisle_tools"] } else { tools };
    if let Some(calls) = tools["calls"].as_array() {
        out.calls = calls.clone();
        out.rounds = tools["rounds"].as_array().map_or(1, Vec::len);
    }
}

async fn ask_app(app: &axum::Router, body: Value, start: Instant, out: &mut Outcome) -> Result<(), String> {
    use tower::ServiceExt;
    let req = axum::http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .map_err(|e| e.to_string())?;
    let resp = app.clone().oneshot(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let stream = resp.into_body().into_data_stream();
    if !status.is_success() {
        let bytes = axum::body::to_bytes(axum::body::Body::from_stream(stream), 1 << 20)
            .await
            .unwrap_or_default();
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    crate::sse::read_stream(stream, |event| on_event(out, &event, start))
        .await
        .map_err(|e| e.to_string())
}

async fn ask_http(req: reqwest::RequestBuilder, start: Instant, out: &mut Outcome) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    crate::sse::read_events(resp, |event| on_event(out, &event, start))
        .await
        .map_err(|e| e.to_string())
}
