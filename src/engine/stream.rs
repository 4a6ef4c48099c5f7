//! `RequestStream`: the client's end of one submission (a request, or several submitted
//! together by `EngineHandle::submit_many`), a stream of `Event`s that always ends with `Done`
//! or `Error`; dropping it before that cancels whatever is still running.
//!
//! Owns: merging the events of several requests into one numbering (choices prompt-major, `n`
//! per prompt, as OpenAI numbers a prompt list; prompt scores by prompt; one `Started`; usage
//! summed into one `Done`), and turning a channel that closes early into one error.
//! Must not: touch engine state (it only sends `Abort` commands).

use std::future::Future;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::mpsc::UnboundedReceiver;

use super::error::EngineError;
use super::request::{Event, RequestId, RequestOutput, Usage};
use super::thread::Command;

/// One request of a submission.
pub(super) struct Part {
    pub id: RequestId,
    pub rx: UnboundedReceiver<Event>,
    pub done: bool,
}

/// The client's end of one submission. Dropping it before `Done` cancels it.
pub struct RequestStream {
    parts: Vec<Part>,
    /// Choices per request (the same for every request of a submission).
    n: usize,
    tx: Sender<Command>,
    death: Arc<OnceLock<String>>,
    started: bool,
    usage: Usage,
    ended: bool,
    /// Where the next poll starts, so no request's events wait behind another's.
    next_poll: usize,
}

impl RequestStream {
    pub(super) fn new(parts: Vec<Part>, n: usize, tx: Sender<Command>, death: Arc<OnceLock<String>>) -> Self {
        RequestStream {
            parts,
            n,
            tx,
            death,
            started: false,
            usage: Usage::default(),
            ended: false,
            next_poll: 0,
        }
    }

    /// The engine's id of the first (usually only) request.
    pub fn id(&self) -> RequestId {
        self.parts.first().map_or(0, |p| p.id)
    }

    /// Next event (async); `None` once the submission is over.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Next event, blocking the calling thread (which must not be driving an async runtime).
    pub fn blocking_next(&mut self) -> Option<Event> {
        block_on(self.next())
    }

    /// Wait for the whole result (blocking).
    pub fn collect_blocking(mut self) -> Result<RequestOutput, EngineError> {
        let mut out = RequestOutput::default();
        while let Some(e) = self.blocking_next() {
            out.apply(e)?;
        }
        Ok(out)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let k = self.parts.len();
            let ready = (0..k).map(|step| (self.next_poll + step) % k).find_map(|i| {
                let part = &mut self.parts[i];
                match part.done {
                    true => None,
                    false => match part.rx.poll_recv(cx) {
                        Poll::Ready(e) => Some((i, e)),
                        Poll::Pending => None,
                    },
                }
            });
            let Some((i, e)) = ready else { return Poll::Pending };
            self.next_poll = (i + 1) % k;
            if let Some(out) = self.merge(i, e) {
                return Poll::Ready(Some(out));
            }
        }
    }

    /// Renumber request `i`'s event for the whole submission; `None` when it is absorbed (a
    /// second `Started`, a `Done` before the last).
    fn merge(&mut self, i: usize, e: Option<Event>) -> Option<Event> {
        let offset = i * self.n;
        match e {
            None => {
                self.parts[i].done = true;
                self.ended = true;
                Some(Event::Error(match self.death.get() {
                    Some(why) => EngineError::Stopped(why.clone()),
                    None => EngineError::Lost,
                }))
            }
            Some(Event::Started) if self.started => None,
            Some(Event::Started) => {
                self.started = true;
                Some(Event::Started)
            }
            Some(Event::Token {
                choice,
                token,
                text,
                logprobs,
            }) => Some(Event::Token {
                choice: choice + offset,
                token,
                text,
                logprobs,
            }),
            Some(Event::Finished { choice, reason, text }) => Some(Event::Finished {
                choice: choice + offset,
                reason,
                text,
            }),
            Some(Event::PromptLogprobs { logprobs, .. }) => Some(Event::PromptLogprobs { prompt: i, logprobs }),
            Some(Event::Done(u)) => {
                self.parts[i].done = true;
                self.usage.prompt_tokens += u.prompt_tokens;
                self.usage.completion_tokens += u.completion_tokens;
                self.usage.cached_tokens += u.cached_tokens;
                self.ended = self.parts.iter().all(|p| p.done);
                self.ended.then_some(Event::Done(self.usage))
            }
            Some(Event::Error(err)) => {
                self.parts[i].done = true;
                self.ended = true;
                Some(Event::Error(err))
            }
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        for p in self.parts.iter().filter(|p| !p.done) {
            let _ = self.tx.send(Command::Abort(p.id));
        }
    }
}

/// Run a future to completion on this thread, parking it while the future waits.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
