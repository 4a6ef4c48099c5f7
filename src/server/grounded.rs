//! The server-side tool loop: a chat request without client `tools`, on a server with
//! built-in tools (`--catalog`, `[tools]`), runs the model, executes the calls it writes
//! (several in one turn at once), appends the calls and their results to the conversation and
//! runs the model again, until it answers in text or `max_rounds` turns of calls are spent
//! (then it must answer: the call marker is banned). Each round's prompt extends the previous
//! round's prompt and output, so the engine's prefix cache serves it (`cached_tokens` grows).
//!
//! The client sees one answer, unary or streamed: content only, the calls listed in the
//! `aisle_tools` extension field (and, for unary answers and calls made before a stream's first
//! content, the `x-aisle-tools` header); each call is logged with its latency and rows.
//! Owns: deciding whether a request runs the loop (`prepare`), the rounds, the answer's extra
//! fields. Must not: execute tools itself (`toolbox`), validate fields (`validate` does, once
//! per round) or shape choices (`shape`).

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderValue;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::api::{Body, ChatMessageIn, ChatRequest, MessageContent};
use super::errors::ApiError;
use super::responses::{count_failure, sse_stream, submit, Local, Payloads, Tracker};
use super::shape::{usage_json, Meta};
use super::validate::{self, ValidRequest};
use super::AppState;
use crate::engine::{EngineError, Event, FinishReason, RequestOutput, RequestStream, Usage};
use crate::fallback::{LocalPlan, Reroute};
use crate::sampling::TokenLogprobs;
use crate::toolbox::{CallRecord, Toolbox};
use crate::tools::{ToolDelta, ToolFormat, ToolStream};

/// What a request running the loop carries beyond its first round's `ValidRequest`.
pub struct ToolLoop {
    toolbox: Arc<Toolbox>,
    /// The conversation so far, with the built-in tools as its `tools`.
    body: ChatRequest,
}

/// The loop applies to a chat request without `tools` on a server with built-in tools (and
/// not `tool_choice: "none"`): give the request the built-in tools, or `None`.
pub fn prepare(st: &AppState, body: &mut Body) -> Result<Option<ToolLoop>, ApiError> {
    let (Some(toolbox), Body::Chat(chat)) = (st.0.toolbox.as_ref(), body) else {
        return Ok(None);
    };
    let client_tools = chat.tools.as_ref().is_some_and(|t| !t.is_null());
    if client_tools || chat.tool_choice.as_ref().is_some_and(|c| c == "none") {
        return Ok(None);
    }
    if chat.common.n.unwrap_or(1) != 1 {
        return Err(ApiError::invalid(
            "n",
            "the server's built-in tools answer one choice per request; n must be 1",
        ));
    }
    if chat.common.prompt_logprobs.is_some() {
        return Err(ApiError::invalid(
            "prompt_logprobs",
            "prompt_logprobs is not available with the server's built-in tools (send tool_choice: \"none\")",
        ));
    }
    chat.tools = Some(toolbox.definitions());
    Ok(Some(ToolLoop {
        toolbox: toolbox.clone(),
        body: chat.clone(),
    }))
}

/// One call the loop ran, with the round it ran in.
struct Ran {
    round: usize,
    record: CallRecord,
}

/// Why the loop stopped without an answer: the plan may still send the request elsewhere
/// (nothing was sent yet), or the error to answer with.
enum Failure {
    Reroute(Reroute),
    Api(ApiError),
}

/// What the current round produced for the client.
enum Step {
    /// Content text of the answer (with its tokens' logprobs).
    Content(String, Vec<TokenLogprobs>),
    /// The answer ended: the final round's output (its usage the whole loop's).
    Done(RequestOutput),
}

/// The loop's state between rounds.
struct Rounds {
    st: AppState,
    rid: String,
    tl: ToolLoop,
    plan: LocalPlan,
    format: ToolFormat,
    round: usize,
    valid: ValidRequest,
    events: RequestStream,
    split: ToolStream,
    out: RequestOutput,
    per_round: Vec<Usage>,
    ran: Vec<Ran>,
    tracker: Tracker,
    /// The response has started: no rerouting any more.
    sent: bool,
    _admission: super::Admission,
}

fn sum(usages: &[Usage]) -> Usage {
    usages.iter().fold(Usage::default(), |a, u| Usage {
        prompt_tokens: a.prompt_tokens + u.prompt_tokens,
        completion_tokens: a.completion_tokens + u.completion_tokens,
        cached_tokens: a.cached_tokens + u.cached_tokens,
    })
}

impl Rounds {
    fn start(st: &AppState, rid: &str, local: Local, tl: ToolLoop, t0: Instant) -> Result<Rounds, ApiError> {
        let Local { valid, plan, admission } = local;
        let format = valid.tools.unwrap_or(ToolFormat::Hermes);
        let events = submit(st, &plan, valid.generations.clone())?;
        Ok(Rounds {
            st: st.clone(),
            rid: rid.to_string(),
            tl,
            plan,
            format,
            round: 1,
            valid,
            events,
            split: ToolStream::new(format),
            out: RequestOutput::default(),
            per_round: Vec::new(),
            ran: Vec::new(),
            tracker: Tracker::new(st, rid, t0),
            sent: false,
            _admission: admission,
        })
    }

    /// Calls before any content was produced (what a stream's header can list).
    fn names(&self) -> String {
        let names: Vec<&str> = self.ran.iter().map(|r| r.record.name.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    }

    /// The `aisle_tools` extension field.
    fn report(&self) -> Value {
        let calls: Vec<Value> = self
            .ran
            .iter()
            .map(|r| {
                let mut v = r.record.json();
                v["round"] = json!(r.round);
                v
            })
            .collect();
        let rounds: Vec<Value> = self
            .per_round
            .iter()
            .map(|u| {
                json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                            "cached_tokens": u.cached_tokens})
            })
            .collect();
        json!({"rounds": rounds, "calls": calls})
    }

    /// Drive the engine to the next thing the client sees, running tools between rounds.
    async fn next(&mut self) -> Result<Option<Step>, Failure> {
        loop {
            let Some(e) = self.events.next().await else {
                return Err(Failure::Api(ApiError::from(&EngineError::Lost)));
            };
            self.tracker.on_event(&e);
            if let Event::Error(err) = &e {
                return Err(match (self.sent, self.plan.on_error(err)) {
                    (false, Some(why)) => Failure::Reroute(why),
                    _ => Failure::Api(ApiError::from(err)),
                });
            }
            let content = self.content_of(&e);
            let done = matches!(e, Event::Done(_));
            if let Err(err) = self.out.apply(e) {
                return Err(Failure::Api(ApiError::from(&err)));
            }
            if let Some(step) = content {
                return Ok(Some(step));
            }
            if done {
                self.per_round.push(self.out.usage);
                let turn = self.split.turn();
                let cut = self.cut_calls(&turn).await;
                if turn.calls.is_empty() || self.round > self.tl.toolbox.max_rounds || cut {
                    let mut out = std::mem::take(&mut self.out);
                    out.usage = sum(&self.per_round);
                    return Ok(Some(Step::Done(out)));
                }
                self.next_round(turn).await.map_err(Failure::Api)?;
            }
        }
    }

    /// A round that hit `max_tokens` inside a call leaves arguments that are not JSON: the
    /// loop ends there (finish reason `length`) with those calls reported as invalid, never
    /// run and never fed back to the model. True when that happened.
    async fn cut_calls(&mut self, turn: &crate::tools::Turn) -> bool {
        let length = self.out.choices.first().and_then(|c| c.finish_reason) == Some(FinishReason::Length);
        let cut: Vec<(String, String)> = turn
            .calls
            .iter()
            .filter(|c| serde_json::from_str::<Value>(&c.arguments).is_err())
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        if !length || cut.is_empty() {
            return false;
        }
        let records = self.tl.toolbox.call_all(&cut).await; // invalid JSON: nothing runs
        let round = self.round;
        self.ran.extend(records.into_iter().map(|record| Ran { round, record }));
        true
    }

    /// The content text an event adds (tool-call text is held back and never sent).
    fn content_of(&mut self, e: &Event) -> Option<Step> {
        let (text, lps, end) = match e {
            Event::Token { text, logprobs, .. } => (text, logprobs.iter().cloned().collect(), false),
            Event::Finished { text, .. } => (text, Vec::new(), true),
            _ => return None,
        };
        let mut deltas = self.split.push(text);
        if end {
            deltas.extend(self.split.finish());
        }
        let content: String = deltas
            .iter()
            .filter_map(|d| match d {
                ToolDelta::Content(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        (!content.is_empty()).then_some(Step::Content(content, lps))
    }

    /// Run the turn's calls, append them and their results, start the next round.
    async fn next_round(&mut self, turn: crate::tools::Turn) -> Result<(), ApiError> {
        let calls: Vec<(String, String)> = turn
            .calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        let records = self.tl.toolbox.call_all(&calls).await;
        let msgs = &mut self.tl.body.messages;
        let tool_calls: Vec<Value> = turn
            .calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        msgs.push(ChatMessageIn {
            role: "assistant".into(),
            content: turn.content.clone().map(MessageContent::Text),
            tool_calls: Some(Value::Array(tool_calls)),
            tool_call_id: None,
            name: None,
        });
        let m = &self.st.0.metrics;
        for (c, r) in turn.calls.iter().zip(&records) {
            let outcome = match (&r.error, r.valid) {
                (None, _) => "ok",
                (Some(_), true) => "error",
                (Some(_), false) => "invalid",
            };
            m.tool_calls.with_label_values(&[&r.name, outcome]).inc();
            m.tool_latency
                .with_label_values(&[&r.name])
                .observe(r.latency.as_secs_f64());
            tracing::info!(target: "aisle::tools", request_id = %self.rid, round = self.round, tool = %r.name,
                           arguments = %r.arguments, latency_ms = r.latency.as_secs_f64() * 1e3, rows = r.rows,
                           error = r.error.as_deref(), "tool call");
            msgs.push(ChatMessageIn {
                role: "tool".into(),
                content: Some(MessageContent::Text(r.content.clone())),
                tool_calls: None,
                tool_call_id: Some(c.id.clone()),
                name: Some(r.name.clone()),
            });
        }
        self.ran.extend(records.into_iter().map(|record| Ran {
            round: self.round,
            record,
        }));
        self.round += 1;
        let last = self.round > self.tl.toolbox.max_rounds;
        self.tl.body.tool_choice = Some(Value::from(if last { "none" } else { "auto" }));
        self.valid = self.revalidate(last)?;
        self.events = submit(&self.st, &self.plan, self.valid.generations.clone())?;
        self.split = ToolStream::new(self.format);
        self.out = RequestOutput::default();
        Ok(())
    }

    /// The next round's request; the last one may not open a call.
    fn revalidate(&self, last: bool) -> Result<ValidRequest, ApiError> {
        let model = self.st.model()?;
        let limits = super::handlers::limits(&self.st, model);
        let mut v = validate::chat(&self.tl.body, &limits)?;
        if last {
            let marker = self
                .format
                .markers()
                .first()
                .and_then(|m| model.tokenizer.special_token_id(m));
            for g in &mut v.generations {
                g.sampling.logit_bias.extend(marker.map(|id| (id, -100.0)));
            }
        }
        Ok(v)
    }
}

/// Answer a request through the loop: one JSON body or an SSE stream.
pub async fn respond(st: AppState, rid: String, local: Local, tl: ToolLoop, t0: Instant) -> Result<Response, Reroute> {
    let stream = local.valid.shape.stream;
    let mut rounds = match Rounds::start(&st, &rid, local, tl, t0) {
        Ok(r) => r,
        Err(e) => {
            count_failure(&st, &e);
            return Ok(e.into_response());
        }
    };
    match stream {
        false => {
            let r = unary(&mut rounds).await;
            rounds.tracker.settle(); // counted in unary or by the remote; a drop before is a cancel
            r
        }
        true => streamed(rounds).await,
    }
}

fn fail(st: &AppState, e: ApiError) -> Response {
    count_failure(st, &e);
    e.into_response()
}

fn with_header(mut resp: Response, names: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(names) {
        resp.headers_mut().insert("x-aisle-tools", v);
    }
    resp
}

async fn unary(r: &mut Rounds) -> Result<Response, Reroute> {
    let out = loop {
        match r.next().await {
            Ok(Some(Step::Done(out))) => break out,
            Ok(_) => {}
            Err(Failure::Reroute(why)) => return Err(why),
            Err(Failure::Api(e)) => return Ok(fail(&r.st, e)),
        }
    };
    let reroute = r
        .plan
        .on_answer(out.choices.iter().map(|c| c.finish_reason))
        .or_else(|| {
            r.plan
                .judge(out.choices.iter().flat_map(|c| c.logprobs.iter().map(|l| l.logprob)))
        });
    if let Some(why) = reroute {
        return Err(why);
    }
    r.tracker.done(&out, 200);
    let meta = match Meta::new(&r.st, &r.rid, &r.valid) {
        Ok(m) => m,
        Err(e) => return Ok(fail(&r.st, e)),
    };
    let mut body = meta.body(&out);
    body["aisle_tools"] = r.report();
    Ok(with_header(Json(body).into_response(), &r.names()))
}

/// Streamed: tool rounds run before the response starts (nothing is visible in them, and the
/// plan may still reroute; with the confidence cascade, the answer's first tokens are judged
/// too), then content streams as the final round writes it.
async fn streamed(mut r: Rounds) -> Result<Response, Reroute> {
    let held = hold(&mut r).await;
    let meta = Meta::new(&r.st, &r.rid, &r.valid);
    let (held, meta) = match (held, meta) {
        (Ok(held), Ok(meta)) => (held, meta),
        (Err(f), _) => {
            r.tracker.settle(); // counted here or by the remote
            return match f {
                Failure::Reroute(why) => Err(why),
                Failure::Api(e) => Ok(fail(&r.st, e)),
            };
        }
        (_, Err(e)) => {
            r.tracker.settle();
            return Ok(fail(&r.st, e));
        }
    };
    let names = r.names();
    r.sent = true;
    let mut state = Streamed {
        r,
        meta,
        queue: std::collections::VecDeque::new(),
        finished: false,
    };
    let role =
        json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
    let role = state.meta.chunk(role).to_string();
    state.queue.push_back(role);
    for step in held {
        state.on_step(Some(step));
    }
    let cut = state.r.st.stream_cut();
    let resp = Sse::new(sse_stream(state, cut)).into_response();
    Ok(with_header(resp, &names))
}

/// The steps before the response starts: up to the first content, or as many content tokens
/// as the cascade judges (then judged), or the whole answer.
async fn hold(r: &mut Rounds) -> Result<Vec<Step>, Failure> {
    let need = r.plan.hold_tokens().max(1);
    let (mut held, mut lps) = (Vec::new(), Vec::new());
    while held.len() < need {
        match r.next().await? {
            Some(Step::Content(text, l)) => {
                lps.extend(l.iter().map(|x| x.logprob));
                held.push(Step::Content(text, l));
            }
            Some(Step::Done(out)) => {
                if let Some(why) = r.plan.on_answer(out.choices.iter().map(|c| c.finish_reason)) {
                    return Err(Failure::Reroute(why));
                }
                held.push(Step::Done(out));
                break;
            }
            None => {}
        }
    }
    match r.plan.judge(lps.into_iter()) {
        Some(why) => Err(Failure::Reroute(why)),
        None => Ok(held),
    }
}

struct Streamed {
    r: Rounds,
    meta: Meta,
    queue: std::collections::VecDeque<String>,
    finished: bool,
}

impl Streamed {
    fn on_step(&mut self, step: Option<Step>) {
        match step {
            Some(Step::Content(text, lps)) => {
                let c = self.meta.delta_chunk(0, json!({"content": text}), &lps, None);
                self.queue.push_back(c.to_string());
            }
            Some(Step::Done(out)) => self.on_done(out),
            None => {}
        }
    }

    fn on_done(&mut self, out: RequestOutput) {
        let reason = out
            .choices
            .first()
            .and_then(|c| c.finish_reason)
            .unwrap_or(FinishReason::Stop);
        let mut end = self.meta.delta_chunk(0, json!({}), &[], Some(reason));
        end["aisle_tools"] = self.r.report();
        self.queue.push_back(end.to_string());
        if self.r.valid.shape.include_usage {
            let mut c = self.meta.chunk(Value::Null);
            c["choices"] = json!([]);
            c["usage"] = usage_json(&out.usage, &self.meta.price);
            self.queue.push_back(c.to_string());
        }
        self.queue.push_back("[DONE]".into());
        self.r.tracker.done(&out, 200);
        self.finished = true;
    }
}

impl Payloads for Streamed {
    fn queue(&mut self) -> &mut std::collections::VecDeque<String> {
        &mut self.queue
    }

    fn finished(&self) -> bool {
        self.finished
    }

    async fn refill(&mut self) {
        let e = match self.r.next().await {
            Ok(step) => return self.on_step(step),
            Err(Failure::Api(e)) => e,
            Err(Failure::Reroute(why)) => ApiError::from(&EngineError::Stopped(format!("{why:?}"))),
        };
        self.abort(e);
    }

    fn abort(&mut self, e: ApiError) {
        count_failure(&self.r.st, &e);
        self.r.tracker.settle();
        self.queue.push_back(e.body().to_string());
        self.finished = true;
    }
}
