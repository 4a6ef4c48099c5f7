//! Turning engine events into OpenAI response objects: one JSON body, or an SSE stream of
//! chunks in OpenAI's order (role delta, content deltas, finish chunk, optional usage chunk
//! with empty `choices`, `data: [DONE]`).
//!
//! Owns: response shapes for chat and completions, logprob formatting, per-request timing
//! (queue time, TTFT, inter-token latency, e2e) into metrics, and the request log line.
//! Must not: validate requests.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use super::errors::{ApiError, ApiErrorKind};
use super::{Admission, AppState};
use crate::engine::{ChoiceOutput, Event, FinishReason, GenerationRequest, RequestOutput, RequestStream, Usage};
use crate::sampling::TokenLogprobs;
use crate::tokenizer::TextTokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A validated request, ready to submit.
pub struct Prepared {
    /// Confidence cascade: (minimum mean token logprob, tokens to judge a stream on).
    pub cascade: Option<(f64, usize)>,
    /// A local failure or deadline before any answer may be rerouted to a remote.
    pub can_reroute: bool,
    pub kind: Endpoint,
    pub req: GenerationRequest,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub admission: Admission,
}

/// What every chunk and body shares.
struct Meta {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    kind: Endpoint,
    logprobs: bool,
    tok: TextTokenizer,
    price: crate::fallback::Price,
}

/// The local route gave up before answering; the caller asks a remote instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Reroute {
    /// The answer's mean token logprob was below the cascade threshold.
    LowConfidence(f64),
    /// The local request failed or hit its deadline.
    Failed(String),
}

/// Mean of the logprobs, or `None` without any.
fn mean(lps: impl Iterator<Item = f32>) -> Option<f64> {
    let (sum, n) = lps.fold((0.0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Timings of one request, observed into metrics and logged when it ends.
struct Tracker {
    st: AppState,
    rid: String,
    t0: Instant,
    started: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
}

fn finish_str(r: Option<FinishReason>) -> Value {
    r.map_or(Value::Null, |r| Value::from(r.as_str()))
}

fn usage_json(u: &Usage, price: &crate::fallback::Price) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens,
           "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
           "cost_usd": price.cost(u.prompt_tokens, u.completion_tokens)})
}

impl Tracker {
    fn new(st: &AppState, rid: &str, t0: Instant) -> Tracker {
        Tracker {
            st: st.clone(),
            rid: rid.to_string(),
            t0,
            started: None,
            first: None,
            last: None,
        }
    }

    fn on_event(&mut self, e: &Event) {
        let now = Instant::now();
        match e {
            Event::Started => self.started = Some(now),
            Event::Token { .. } => {
                let m = &self.st.0.metrics;
                match self.last {
                    None => m.ttft.observe((now - self.t0).as_secs_f64()),
                    Some(prev) => m.inter_token.observe((now - prev).as_secs_f64()),
                }
                self.first.get_or_insert(now);
                self.last = Some(now);
            }
            _ => {}
        }
    }

    fn done(&self, out: &RequestOutput, status: u16) {
        let m = &self.st.0.metrics;
        let u = &out.usage;
        let total = self.t0.elapsed().as_secs_f64();
        let queue = self.started.map(|s| (s - self.t0).as_secs_f64());
        m.e2e_latency.observe(total);
        if let Some(q) = queue {
            m.queue_time.observe(q);
        }
        m.prompt_len.observe(u.prompt_tokens as f64);
        m.generation_len.observe(u.completion_tokens as f64);
        m.prompt_tokens.inc_by(u.prompt_tokens as u64);
        m.generation_tokens.inc_by(u.completion_tokens as u64);
        let reason = out
            .choices
            .first()
            .and_then(|c| c.finish_reason)
            .map_or("none", |r| r.as_str());
        m.success.with_label_values(&[reason]).inc();
        let cost = self.st.0.cfg.local_price.cost(u.prompt_tokens, u.completion_tokens);
        m.cost.with_label_values(&["local"]).inc_by(cost);
        self.st.record_latency(total * 1e3);
        let version = self.st.0.model.get().map(|m| m.version.as_str()).unwrap_or("");
        tracing::info!(
            target: "aisle::request",
            request_id = %self.rid, model = %self.st.0.cfg.model_name, version, route = "local",
            prompt_tokens = u.prompt_tokens, completion_tokens = u.completion_tokens,
            cached_tokens = u.cached_tokens, queue_time_ms = queue.map(|q| q * 1e3),
            ttft_ms = self.first.map(|f| (f - self.t0).as_secs_f64() * 1e3), latency_ms = total * 1e3,
            finish_reason = reason, status, cost_usd = cost, "request"
        );
    }
}

impl Meta {
    fn new(st: &AppState, rid: &str, kind: Endpoint, logprobs: bool) -> Result<Meta, ApiError> {
        let model = st.model()?;
        let (prefix, object) = match kind {
            Endpoint::Chat => ("chatcmpl", "chat.completion"),
            Endpoint::Completion => ("cmpl", "text_completion"),
        };
        Ok(Meta {
            id: format!("{prefix}-{rid}"),
            object,
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: st.0.cfg.model_name.clone(),
            kind,
            logprobs,
            tok: model.tokenizer.clone(),
            price: st.0.cfg.local_price,
        })
    }

    fn token_text(&self, id: u32) -> String {
        self.tok.decode(&[id], false).unwrap_or_default()
    }

    /// Chat logprob entries (`logprobs.content` items) for some tokens.
    fn chat_logprobs(&self, lps: &[TokenLogprobs]) -> Value {
        let entry = |id: u32, lp: f32| {
            let t = self.token_text(id);
            json!({"token": t, "logprob": lp, "bytes": t.as_bytes()})
        };
        let content: Vec<Value> = lps
            .iter()
            .map(|lp| {
                let mut e = entry(lp.token, lp.logprob);
                e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    /// Legacy completions logprobs (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
    fn completion_logprobs(&self, lps: &[TokenLogprobs], offset0: usize) -> Value {
        let mut offset = offset0;
        let (mut tokens, mut lp, mut top, mut offsets) = (vec![], vec![], vec![], vec![]);
        for l in lps {
            let t = self.token_text(l.token);
            offsets.push(offset);
            offset += t.len();
            tokens.push(t);
            lp.push(l.logprob);
            let m: serde_json::Map<String, Value> =
                l.top.iter().map(|&(id, x)| (self.token_text(id), json!(x))).collect();
            top.push(Value::Object(m));
        }
        json!({"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets})
    }

    fn logprobs_json(&self, lps: &[TokenLogprobs], offset: usize) -> Value {
        match (self.logprobs, self.kind) {
            (false, _) => Value::Null,
            (true, Endpoint::Chat) => self.chat_logprobs(lps),
            (true, Endpoint::Completion) => self.completion_logprobs(lps, offset),
        }
    }

    fn choice_json(&self, i: usize, c: &ChoiceOutput) -> Value {
        let lp = self.logprobs_json(&c.logprobs, 0);
        match self.kind {
            Endpoint::Chat => json!({"index": i, "message": {"role": "assistant", "content": c.text},
                                     "logprobs": lp, "finish_reason": finish_str(c.finish_reason)}),
            Endpoint::Completion => json!({"index": i, "text": c.text, "logprobs": lp,
                                           "finish_reason": finish_str(c.finish_reason)}),
        }
    }

    fn body(&self, out: &RequestOutput) -> Value {
        let choices: Vec<Value> = out
            .choices
            .iter()
            .enumerate()
            .map(|(i, c)| self.choice_json(i, c))
            .collect();
        json!({"id": self.id, "object": self.object, "created": self.created, "model": self.model,
               "choices": choices, "usage": usage_json(&out.usage, &self.price)})
    }

    /// One streamed chunk for choice `i`.
    fn chunk(&self, choice: Value) -> Value {
        let object = match self.kind {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]})
    }

    fn delta(&self, i: usize, text: &str, lps: &[TokenLogprobs], offset: usize, finish: Option<FinishReason>) -> Value {
        let lp = self.logprobs_json(lps, offset);
        match self.kind {
            Endpoint::Chat => {
                let delta = if text.is_empty() && finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                self.chunk(json!({"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish_str(finish)}))
            }
            Endpoint::Completion => {
                self.chunk(json!({"index": i, "text": text, "logprobs": lp, "finish_reason": finish_str(finish)}))
            }
        }
    }
}

fn submit(st: &AppState, req: GenerationRequest) -> Result<RequestStream, ApiError> {
    st.model()?
        .engine
        .submit(req)
        .map_err(|_| ApiError::new(ApiErrorKind::ShuttingDown, "the engine has stopped"))
}

fn engine_error(message: String) -> ApiError {
    let kind = if message.starts_with("inference failed") {
        ApiErrorKind::Internal
    } else {
        ApiErrorKind::Invalid { param: None }
    };
    ApiError::new(kind, message)
}

/// Run to completion and answer with one JSON body. If the client disconnects, this future is
/// dropped with the `RequestStream`, which cancels the request.
pub async fn complete(st: AppState, rid: String, p: Prepared, t0: Instant) -> Result<Response, Reroute> {
    let (cascade, can_reroute) = (p.cascade, p.can_reroute);
    let result = async {
        let meta = Meta::new(&st, &rid, p.kind, p.logprobs)?;
        let mut events = submit(&st, p.req)?;
        let mut tracker = Tracker::new(&st, &rid, t0);
        let mut out = RequestOutput::default();
        while let Some(e) = events.next().await {
            tracker.on_event(&e);
            if let (Event::Error(msg), true) = (&e, can_reroute) {
                return Ok(Err(Reroute::Failed(msg.clone())));
            }
            out.apply(e).map_err(engine_error)?;
        }
        let timed_out = out
            .choices
            .iter()
            .any(|c| c.finish_reason == Some(FinishReason::Timeout));
        if can_reroute && timed_out {
            return Ok(Err(Reroute::Failed("the local deadline expired".into())));
        }
        if let Some((threshold, _)) = cascade {
            let m = mean(out.choices.iter().flat_map(|c| c.logprobs.iter().map(|l| l.logprob)));
            if let Some(m) = m.filter(|&m| m < threshold) {
                return Ok(Err(Reroute::LowConfidence(m)));
            }
        }
        tracker.done(&out, 200);
        Ok::<_, ApiError>(Ok(meta.body(&out)))
    }
    .await;
    drop(p.admission);
    match result {
        Ok(Ok(body)) => Ok(Json(body).into_response()),
        Ok(Err(low)) => Err(low),
        Err(e) => {
            st.0.metrics.failures.with_label_values(&[e.reason()]).inc();
            Ok(e.into_response())
        }
    }
}

/// State of one SSE response.
struct Streaming {
    meta: Meta,
    events: RequestStream,
    tracker: Tracker,
    out: RequestOutput,
    pending: VecDeque<String>,
    include_usage: bool,
    n: usize,
    text_offsets: Vec<usize>,
    finished: bool,
    _admission: Admission,
}

impl Streaming {
    /// Translate one engine event into zero or more `data:` payloads.
    fn translate(&mut self, e: Event) {
        let m = &self.meta;
        match &e {
            Event::Token {
                choice, text, logprobs, ..
            } if !text.is_empty() || logprobs.is_some() => {
                let lps: Vec<TokenLogprobs> = logprobs.iter().cloned().collect();
                let chunk = m.delta(*choice, text, &lps, self.text_offsets[*choice], None);
                self.text_offsets[*choice] += text.len();
                self.pending.push_back(chunk.to_string());
            }
            Event::Finished { choice, reason, text } => {
                if !text.is_empty() {
                    self.pending.push_back(
                        m.delta(*choice, text, &[], self.text_offsets[*choice], None)
                            .to_string(),
                    );
                }
                self.pending
                    .push_back(m.delta(*choice, "", &[], 0, Some(*reason)).to_string());
            }
            Event::Done(usage) => {
                if self.include_usage {
                    let mut c = m.chunk(Value::Null);
                    c["choices"] = json!([]);
                    c["usage"] = usage_json(usage, &m.price);
                    self.pending.push_back(c.to_string());
                }
                self.pending.push_back("[DONE]".to_string());
            }
            Event::Error(msg) => {
                let err = engine_error(msg.clone());
                self.tracker
                    .st
                    .0
                    .metrics
                    .failures
                    .with_label_values(&[err.reason()])
                    .inc();
                self.pending.push_back(err.body().to_string());
                self.finished = true;
            }
            _ => {}
        }
        self.tracker.on_event(&e);
        if matches!(e, Event::Done(_)) {
            let _ = self.out.apply(e);
            self.tracker.done(&self.out, 200);
            self.finished = true;
        } else {
            let _ = self.out.apply(e);
        }
    }

    async fn next_payload(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(p);
            }
            if self.finished {
                return None;
            }
            match self.events.next().await {
                Some(e) => self.translate(e),
                None => return None,
            }
        }
    }
}

fn sse_stream(s: Streaming) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(s, |mut s| async move {
        let payload = s.next_payload().await?;
        Some((Ok(SseEvent::default().data(payload)), s))
    })
}

/// Hold the start of a local stream back until it can no longer be rerouted: with a cascade,
/// judge the first N tokens; with a fallback, wait for the first token so a failure or
/// deadline before it can still go remote. Nothing has been sent while this runs.
async fn hold_start(s: &mut Streaming, cascade: Option<(f64, usize)>, can_reroute: bool) -> Result<(), Reroute> {
    let need = match (cascade, can_reroute) {
        (Some((_, n)), _) => n.max(1),
        (None, true) => 1,
        (None, false) => return Ok(()),
    };
    let (mut held, mut lps, mut tokens) = (Vec::new(), Vec::new(), 0);
    while let Some(e) = s.events.next().await {
        match &e {
            Event::Token {
                choice: 0, logprobs, ..
            } => {
                tokens += 1;
                lps.extend(logprobs.as_ref().map(|l| l.logprob));
            }
            Event::Finished {
                reason: FinishReason::Timeout | FinishReason::Error,
                ..
            } if can_reroute && tokens == 0 => {
                return Err(Reroute::Failed("the local deadline expired".into()));
            }
            Event::Error(msg) if can_reroute => return Err(Reroute::Failed(msg.clone())),
            _ => {}
        }
        let end = matches!(e, Event::Done(_) | Event::Error(_));
        held.push(e);
        if end || tokens >= need {
            break;
        }
    }
    if let Some(m) = cascade.and_then(|(t, _)| mean(lps.into_iter()).filter(|&m| m < t)) {
        return Err(Reroute::LowConfidence(m));
    }
    for e in held {
        s.translate(e);
    }
    Ok(())
}

/// Answer with an SSE stream. Dropping the stream (client gone) cancels the request.
pub async fn stream(st: AppState, rid: String, p: Prepared, t0: Instant) -> Result<Response, Reroute> {
    let (cascade, can_reroute) = (p.cascade, p.can_reroute);
    let setup = || -> Result<Streaming, ApiError> {
        let meta = Meta::new(&st, &rid, p.kind, p.logprobs)?;
        let n = p.req.n;
        let events = submit(&st, p.req.clone())?;
        let mut pending = VecDeque::new();
        if meta.kind == Endpoint::Chat {
            for i in 0..n {
                let role = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                pending.push_back(meta.chunk(role).to_string());
            }
        }
        Ok(Streaming {
            meta,
            events,
            tracker: Tracker::new(&st, &rid, t0),
            out: RequestOutput::default(),
            pending,
            include_usage: p.include_usage,
            n,
            text_offsets: vec![0; n],
            finished: false,
            _admission: p.admission,
        })
    };
    let mut s = match setup() {
        Ok(s) => s,
        Err(e) => return Ok(e.into_response()),
    };
    hold_start(&mut s, cascade, can_reroute).await?;
    debug_assert!(s.n >= 1);
    Ok(Sse::new(sse_stream(s)).into_response())
}
