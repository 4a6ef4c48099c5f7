//! Where evaluation requests go: the engine in this process, or an OpenAI-compatible server.
//!
//! Owns: sending one chat request greedily and timing it (end-to-end latency, time to first
//! token, completion tokens). Over HTTP it streams `/v1/chat/completions` with usage included.
//! Must not: score answers or aggregate figures.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::dataset::EvalItem;
use super::EvalError;
use crate::engine::{EngineHandle, Event, GenerationRequest};
use crate::tokenizer::TextTokenizer;

/// What one request produced and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub text: String,
    pub latency: Duration,
    /// Until the first non-empty piece of text.
    pub ttft: Option<Duration>,
    pub completion_tokens: usize,
    pub error: Option<String>,
}

pub enum Target {
    /// The engine in this process (the caller keeps the `Engine` alive).
    Local {
        engine: EngineHandle,
        tokenizer: TextTokenizer,
    },
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
        let mut out = Outcome::default();
        let result = match self {
            Target::Local { engine, tokenizer } => {
                ask_local(engine, tokenizer, item, max_tokens, start, &mut out).await
            }
            Target::Http {
                client,
                base,
                model,
                api_key,
            } => {
                let body = json!({
                    "model": model, "messages": item.messages, "max_tokens": max_tokens, "temperature": 0,
                    "stream": true, "stream_options": {"include_usage": true},
                });
                let req = authorised(client.post(format!("{base}/v1/chat/completions")), api_key.as_deref());
                ask_http(req.json(&body), start, &mut out).await
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

async fn ask_local(
    engine: &EngineHandle,
    tokenizer: &TextTokenizer,
    item: &EvalItem,
    max_tokens: usize,
    start: Instant,
    out: &mut Outcome,
) -> Result<(), String> {
    let prompt = tokenizer.encode_chat(&item.messages, None).map_err(|e| e.to_string())?;
    let req = GenerationRequest {
        prompt,
        max_tokens,
        ..GenerationRequest::default()
    };
    let mut stream = engine.submit(req).map_err(|e| e.to_string())?;
    while let Some(event) = stream.next().await {
        match event {
            Event::Token { text, .. } | Event::Finished { text, .. } => note_text(out, &text, start),
            Event::Done(usage) => out.completion_tokens = usage.completion_tokens,
            Event::Error(e) => return Err(e.to_string()),
            Event::Started | Event::PromptLogprobs { .. } => {}
        }
    }
    Ok(())
}

async fn ask_http(req: reqwest::RequestBuilder, start: Instant, out: &mut Outcome) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    crate::sse::read_events(resp, |event| {
        if let Some(text) = event["choices"][0]["delta"]["content"].as_str() {
            note_text(out, text, start);
        }
        if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
            out.completion_tokens = n as usize;
        }
    })
    .await
    .map_err(|e| e.to_string())
}
