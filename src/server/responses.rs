//! Local answers: engine events become one JSON body, or an SSE stream of chunks in OpenAI's
//! order (role delta, content deltas, finish chunk, optional usage chunk with empty
//! `choices`, `data: [DONE]`). A request whose events end in an engine error gets that
//! error's status (JSON) or an error event (SSE), never an empty 200.
//!
//! Owns: running a validated request on the engine, asking its `LocalPlan` whether to give
//! up (deadline, local error, low confidence) before anything is sent, per-request timing
//! (queue time, TTFT, inter-token latency, e2e) into metrics, and the request log line.
//! Must not: validate requests, hold routing rules (the plan has them) or build JSON shapes
//! (`shape` does).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use super::api::Endpoint;
use super::errors::ApiError;
use super::shape::{tool_delta_json, tool_finish, usage_json, Meta};
use super::validate::ValidRequest;
use super::{Admission, AppState};
use crate::engine::{ChoiceOutput, EngineError, Event, FinishReason, GenerationRequest, RequestOutput, RequestStream};
use crate::fallback::{LocalPlan, Reroute};
use crate::sampling::TokenLogprobs;
use crate::tools::ToolStream;

/// A validated request routed here, with its admission slot.
pub struct Local {
    pub valid: ValidRequest,
    pub plan: LocalPlan,
    pub admission: Admission,
}

/// A local request, and the server's tool loop when it runs one.
pub struct LocalRun {
    pub local: Local,
    pub tools: Option<super::grounded::ToolLoop>,
}

/// Timings of one request, observed into metrics and logged when it ends.
pub(super) struct Tracker {
    st: AppState,
    rid: String,
    t0: Instant,
    started: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The outcome is counted: by `done`, or by whoever answered the error or rerouted.
    /// A tracker dropped unsettled is a request cancelled by its client's disconnect.
    settled: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.st.0.metrics.failures.with_label_values(&["cancelled"]).inc();
        tracing::info!(
            target: "aisle::request",
            request_id = %self.rid, model = %self.st.0.cfg.model_name, route = "local",
            latency_ms = self.t0.elapsed().as_secs_f64() * 1e3, finish_reason = "cancelled", "request cancelled"
        );
    }
}

impl Tracker {
    pub(super) fn new(st: &AppState, rid: &str, t0: Instant) -> Tracker {
        Tracker {
            st: st.clone(),
            rid: rid.to_string(),
            t0,
            started: None,
            first: None,
            last: None,
            settled: false,
        }
    }

    /// The outcome is counted elsewhere (an error answered, a reroute).
    pub(super) fn settle(&mut self) {
        self.settled = true;
    }

    pub(super) fn on_event(&mut self, e: &Event) {
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

    pub(super) fn done(&mut self, out: &RequestOutput, status: u16) {
        self.settled = true;
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

/// Submit the request's prompts together (one engine submission, one merged stream).
pub(super) fn submit(
    st: &AppState,
    plan: &LocalPlan,
    mut reqs: Vec<GenerationRequest>,
) -> Result<RequestStream, ApiError> {
    for req in &mut reqs {
        plan.prepare(req);
    }
    st.model()?
        .engine
        .submit_many(reqs)
        .map_err(|e| ApiError::from(&EngineError::Stopped(e.to_string())))
}

/// `best_of`: of the `sampled` choices per prompt keep the `keep` with the highest total
/// logprob, best first, renumbered.
fn select_best(mut out: RequestOutput, sampled: usize, keep: usize) -> RequestOutput {
    let total = |c: &ChoiceOutput| c.logprobs.iter().map(|l| l.logprob as f64).sum::<f64>();
    let mut choices = Vec::new();
    for group in out.choices.chunks(sampled.max(1)) {
        let mut group: Vec<&ChoiceOutput> = group.iter().collect();
        group.sort_by(|a, b| total(b).total_cmp(&total(a)));
        choices.extend(group.into_iter().take(keep).cloned());
    }
    out.choices = choices;
    out
}

pub(super) fn count_failure(st: &AppState, e: &ApiError) {
    st.0.metrics.failures.with_label_values(&[e.reason()]).inc();
}

/// Answer locally: a JSON body or an SSE stream, or `Err` when the plan gave up before
/// anything was sent.
pub async fn respond(st: AppState, rid: String, run: LocalRun, t0: Instant) -> Result<Response, Reroute> {
    let LocalRun { local, tools } = run;
    if let Some(tl) = tools {
        return super::grounded::respond(st, rid, local, tl, t0).await;
    }
    match local.valid.shape.stream {
        true => stream(st, rid, local, t0).await,
        false => complete(st, rid, local, t0).await,
    }
}

/// Run to completion and answer with one JSON body. If the client disconnects, this future is
/// dropped with the `RequestStream`, which cancels the request.
async fn complete(st: AppState, rid: String, local: Local, t0: Instant) -> Result<Response, Reroute> {
    let Local { valid, plan, admission } = local;
    let mut tracker = Tracker::new(&st, &rid, t0);
    let result = run_to_end(&st, valid, &plan, &mut tracker).await;
    tracker.settle(); // counted below or by the remote; only a drop before here is a cancel
    drop(admission);
    match result {
        Ok(Ok(body)) => Ok(Json(body).into_response()),
        Ok(Err(why)) => Err(why),
        Err(e) => {
            count_failure(&st, &e);
            Ok(e.into_response())
        }
    }
}

/// The whole answer's body, the plan's reason to give up, or the error to answer with.
async fn run_to_end(
    st: &AppState,
    valid: ValidRequest,
    plan: &LocalPlan,
    tracker: &mut Tracker,
) -> Result<Result<Value, Reroute>, ApiError> {
    let meta = Meta::new(st, &tracker.rid, &valid)?;
    let sampled = valid.generations.first().map_or(1, |g| g.n);
    let mut events = submit(st, plan, valid.generations)?;
    let mut out = RequestOutput::default();
    let mut done = false;
    while let Some(e) = events.next().await {
        tracker.on_event(&e);
        if let Event::Error(err) = &e {
            return match plan.on_error(err) {
                Some(why) => Ok(Err(why)),
                None => Err(ApiError::from(err)),
            };
        }
        done |= matches!(e, Event::Done(_));
        out.apply(e).map_err(|e| ApiError::from(&e))?;
    }
    if !done {
        return Err(ApiError::from(&EngineError::Lost));
    }
    let reroute = plan
        .on_answer(out.choices.iter().map(|c| c.finish_reason))
        .or_else(|| plan.judge(out.choices.iter().flat_map(|c| c.logprobs.iter().map(|l| l.logprob))));
    if let Some(why) = reroute {
        return Ok(Err(why));
    }
    tracker.done(&out, 200);
    if let Some(keep) = valid.shape.best_of {
        out = select_best(out, sampled, keep);
    }
    Ok(Ok(meta.body(&out)))
}

/// State of one SSE response.
struct Streaming {
    meta: Meta,
    events: RequestStream,
    tracker: Tracker,
    out: RequestOutput,
    pending: VecDeque<String>,
    include_usage: bool,
    /// `continuous_usage_stats`: prompt tokens and completion tokens so far, on every chunk.
    running_usage: Option<(usize, usize)>,
    text_offsets: Vec<usize>,
    /// `echo` with `logprobs`: each prompt's echo chunks wait for its scores.
    echo_on_scores: bool,
    /// Per choice, when the output is read as tool calls.
    tool_streams: Vec<ToolStream>,
    finished: bool,
    _admission: Admission,
}

impl Streaming {
    /// Queue one chunk, with the usage so far when the client asked for it on every chunk.
    fn push(&mut self, mut chunk: Value) {
        if let Some((prompt, completion)) = self.running_usage {
            chunk["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion});
        }
        self.pending.push_back(chunk.to_string());
    }

    /// Tool-call deltas for a choice's new text; the token's logprobs ride on the first.
    fn tool_chunks(&mut self, choice: usize, text: &str, lps: &[TokenLogprobs], end: Option<FinishReason>) {
        let s = &mut self.tool_streams[choice];
        let mut deltas: Vec<Value> = s.push(text).iter().map(tool_delta_json).collect();
        if end.is_some() {
            deltas.extend(s.finish().iter().map(tool_delta_json));
        }
        if deltas.is_empty() && !lps.is_empty() {
            deltas.push(json!({}));
        }
        for (k, d) in deltas.into_iter().enumerate() {
            let lp = if k == 0 { lps } else { &[] };
            let c = self.meta.delta_chunk(choice, d, lp, None);
            self.push(c);
        }
        if let Some(reason) = end {
            let finish = tool_finish(Some(reason), &self.tool_streams[choice].turn());
            let c = self.meta.delta_chunk(choice, json!({}), &[], finish);
            self.push(c);
        }
    }

    /// Translate one engine event into zero or more `data:` payloads.
    fn translate(&mut self, e: Event) {
        if let (Some((_, done)), Event::Token { .. }) = (&mut self.running_usage, &e) {
            *done += 1;
        }
        if !self.tool_streams.is_empty() {
            match &e {
                Event::Token {
                    choice, text, logprobs, ..
                } => {
                    let lps: Vec<TokenLogprobs> = logprobs.iter().cloned().collect();
                    self.tool_chunks(*choice, text, &lps, None);
                }
                Event::Finished { choice, reason, text } => self.tool_chunks(*choice, text, &[], Some(*reason)),
                _ => {}
            }
        }
        match &e {
            Event::Token { .. } | Event::Finished { .. } if !self.tool_streams.is_empty() => {}
            Event::Token {
                choice, text, logprobs, ..
            } if !text.is_empty() || logprobs.is_some() => {
                let lps: Vec<TokenLogprobs> = logprobs.iter().cloned().collect();
                let chunk = self.meta.delta(*choice, text, &lps, self.text_offsets[*choice], None);
                self.text_offsets[*choice] += text.len();
                self.push(chunk);
            }
            Event::Finished { choice, reason, text } => {
                if !text.is_empty() {
                    let chunk = self.meta.delta(*choice, text, &[], self.text_offsets[*choice], None);
                    self.push(chunk);
                }
                let end = self.meta.delta(*choice, "", &[], 0, Some(*reason));
                self.push(end);
            }
            Event::Done(usage) => {
                if self.include_usage {
                    let m = &self.meta;
                    let mut c = m.chunk(Value::Null);
                    c["choices"] = json!([]);
                    c["usage"] = usage_json(usage, &m.price);
                    self.pending.push_back(c.to_string());
                }
                self.pending.push_back("[DONE]".to_string());
            }
            Event::Error(err) => self.fail(ApiError::from(err)),
            Event::PromptLogprobs { prompt, logprobs } if self.echo_on_scores => {
                for i in self.meta.choices_of(*prompt) {
                    let c = self.meta.echo_chunk(i, logprobs);
                    self.push(c);
                }
            }
            _ => {}
        }
        self.tracker.on_event(&e);
        let done = matches!(e, Event::Done(_));
        let _ = self.out.apply(e);
        if done {
            self.tracker.done(&self.out, 200);
            self.finished = true;
        }
    }

    /// End the stream with an error event (OpenAI's SDK raises on it).
    fn fail(&mut self, err: ApiError) {
        count_failure(&self.tracker.st, &err);
        self.tracker.settle();
        self.pending.push_back(err.body().to_string());
        self.finished = true;
    }
}

impl Payloads for Streaming {
    fn queue(&mut self) -> &mut VecDeque<String> {
        &mut self.pending
    }

    fn finished(&self) -> bool {
        self.finished
    }

    async fn refill(&mut self) {
        match self.events.next().await {
            Some(e) => self.translate(e),
            None => self.fail(ApiError::from(&EngineError::Lost)),
        }
    }

    fn abort(&mut self, err: ApiError) {
        self.fail(err);
    }
}

/// A stream's SSE payloads: queued by a source that adds more on demand until it is finished.
pub(super) trait Payloads: Send + 'static {
    fn queue(&mut self) -> &mut VecDeque<String>;
    fn finished(&self) -> bool;
    /// Queue the next payloads (or mark the stream finished).
    fn refill(&mut self) -> impl std::future::Future<Output = ()> + Send;
    /// End the stream with this error as its last event (counted as a failure).
    fn abort(&mut self, err: ApiError);
}

/// Each queued payload as one SSE event, refilling the queue until the source is finished;
/// when `cut` turns true (the shutdown deadline), the stream ends with an error event.
pub(super) fn sse_stream<P: Payloads>(
    p: P,
    cut: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold((p, cut), |(mut p, mut cut)| async move {
        loop {
            if let Some(payload) = p.queue().pop_front() {
                return Some((Ok(SseEvent::default().data(payload)), (p, cut)));
            }
            if p.finished() {
                return None;
            }
            if *cut.borrow() {
                p.abort(super::errors::ApiError::new(
                    super::errors::ApiErrorKind::ShuttingDown,
                    "the server is shutting down: this stream was cut at the shutdown deadline",
                ));
                continue;
            }
            tokio::select! {
                _ = p.refill() => {}
                // The sender lives as long as the server state this stream holds.
                _ = cut.changed() => {}
            }
        }
    })
}

/// Hold the start of a local stream back as long as the plan may still give up: the
/// cascade judges the first N tokens; a reroutable request waits for its first token so a
/// failure or deadline before it can still go remote. Nothing has been sent while this runs.
async fn hold_start(s: &mut Streaming, plan: &LocalPlan) -> Result<(), Reroute> {
    let need = plan.hold_tokens();
    if need == 0 {
        return Ok(());
    }
    let (mut held, mut lps, mut tokens) = (Vec::new(), Vec::new(), 0);
    while let Some(e) = s.events.next().await {
        let why = match &e {
            Event::Token {
                choice: 0, logprobs, ..
            } => {
                tokens += 1;
                lps.extend(logprobs.as_ref().map(|l| l.logprob));
                None
            }
            Event::Finished { reason, .. } => plan.on_finish(*reason, tokens),
            Event::Error(err) => plan.on_error(err),
            _ => None,
        };
        if let Some(why) = why {
            return Err(why);
        }
        let end = matches!(e, Event::Done(_) | Event::Error(_));
        held.push(e);
        if end || tokens >= need {
            break;
        }
    }
    if let Some(why) = plan.judge(lps.into_iter()) {
        return Err(why);
    }
    for e in held {
        s.translate(e);
    }
    Ok(())
}

/// The stream's state with the role deltas queued (chat).
fn open_stream(
    st: &AppState,
    rid: &str,
    valid: ValidRequest,
    plan: &LocalPlan,
    admission: Admission,
    t0: Instant,
) -> Result<Streaming, ApiError> {
    let meta = Meta::new(st, rid, &valid)?;
    let n = valid.generations.iter().map(|g| g.n).sum();
    let prompt_tokens = valid.generations.iter().map(|g| g.prompt.len()).sum();
    let echo = valid.shape.echo;
    let text_offsets = (0..n).map(|i| meta.echo_text(i).len()).collect();
    let events = submit(st, plan, valid.generations)?;
    let tool_streams = match (meta.kind, meta.tools) {
        (Endpoint::Chat, Some(f)) => (0..n).map(|_| ToolStream::new(f)).collect(),
        _ => Vec::new(),
    };
    let mut s = Streaming {
        meta,
        events,
        tracker: Tracker::new(st, rid, t0),
        out: RequestOutput::default(),
        pending: VecDeque::new(),
        include_usage: valid.shape.include_usage,
        running_usage: valid.shape.continuous_usage.then_some((prompt_tokens, 0)),
        text_offsets,
        echo_on_scores: echo && valid.shape.logprobs,
        tool_streams,
        finished: false,
        _admission: admission,
    };
    if s.meta.kind == Endpoint::Chat {
        for i in 0..n {
            let role = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            let c = s.meta.chunk(role);
            s.push(c);
        }
    }
    if echo && !s.echo_on_scores {
        for i in 0..n {
            let c = s.meta.echo_chunk(i, &[]);
            s.push(c);
        }
    }
    Ok(s)
}

/// Answer with an SSE stream. Dropping the stream (client gone) cancels the request.
async fn stream(st: AppState, rid: String, local: Local, t0: Instant) -> Result<Response, Reroute> {
    let Local { valid, plan, admission } = local;
    let mut s = match open_stream(&st, &rid, valid, &plan, admission, t0) {
        Ok(s) => s,
        Err(e) => {
            count_failure(&st, &e);
            return Ok(e.into_response());
        }
    };
    if let Err(why) = hold_start(&mut s, &plan).await {
        s.tracker.settle(); // the remote counts it
        return Err(why);
    }
    let cut = st.stream_cut();
    Ok(Sse::new(sse_stream(s, cut)).into_response())
}
