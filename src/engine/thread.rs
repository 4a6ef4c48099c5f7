//! The engine thread: owns the `EngineCore` and talks to clients only through channels.
//!
//! Owns: the command channel into the thread, request ids, and the thread's liveness (a panic
//! is recorded, later submits fail at once and open streams end with `EngineError::Stopped`).
//! The client's end of a submission is `stream::RequestStream`.
//! Must not: share the core behind a lock; all state lives on the engine thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;

use super::core::{EngineCore, EngineStats, EventSink};
use super::request::{FinishReason, GenerationRequest, RequestId};
use super::stream::{Part, RequestStream};

pub(super) enum Command {
    /// Requests submitted together (queued in the same step), with the client's submit
    /// time: deadlines count from there.
    Add(Vec<(RequestId, GenerationRequest, EventSink)>, std::time::Instant),
    Abort(RequestId),
    Stats(Sender<EngineStats>),
}

/// A cheap, cloneable way to submit requests to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    next_id: Arc<AtomicU64>,
    /// Set once, when the engine thread dies: why (the panic message).
    death: Arc<OnceLock<String>>,
}

/// The engine thread; dropping every handle (and this) stops it after in-flight work.
pub struct Engine {
    handle: EngineHandle,
    join: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the engine has shut down")]
pub struct EngineGone;

impl Engine {
    pub fn spawn(core: EngineCore) -> Engine {
        Engine::spawn_with_delay(core, Duration::ZERO)
    }

    /// Like `spawn`, sleeping `step_delay` after every step: simulates a slower device so
    /// drain and cancellation can be tested with tiny models.
    pub fn spawn_with_delay(core: EngineCore, step_delay: Duration) -> Engine {
        let (tx, rx) = channel::<Command>();
        let death = Arc::new(OnceLock::new());
        let dead = death.clone();
        let join = std::thread::Builder::new().name("aisle-engine".into()).spawn(move || {
            // A panic ends the thread: record why before the core (and with it every
            // request's event sink) is dropped, so clients see the reason, not a hang.
            let mut core = core;
            let panic = catch_unwind(AssertUnwindSafe(|| run(&mut core, rx, step_delay)));
            if let Err(p) = panic {
                let why = panic_message(p.as_ref());
                tracing::error!("the engine thread panicked: {why}");
                let _ = dead.set(format!("the engine thread panicked: {why}"));
            }
            drop(core);
        });
        let join = match join {
            Ok(j) => Some(j),
            Err(e) => {
                let _ = death.set(format!("the engine thread could not start: {e}"));
                None
            }
        };
        Engine {
            handle: EngineHandle {
                tx,
                next_id: Arc::new(AtomicU64::new(0)),
                death,
            },
            join,
        }
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stop accepting commands from this handle and wait for the thread to drain and exit.
    pub fn shutdown(mut self) {
        let Engine { handle, join } = &mut self;
        drop(std::mem::replace(handle, dead_handle()));
        if let Some(j) = join.take() {
            let _ = j.join();
        }
    }
}

fn dead_handle() -> EngineHandle {
    let (tx, _) = channel();
    EngineHandle {
        tx,
        next_id: Arc::new(AtomicU64::new(0)),
        death: Arc::new(OnceLock::new()),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn apply(core: &mut EngineCore, cmd: Command) {
    match cmd {
        Command::Add(reqs, arrival) => {
            for (id, req, sink) in reqs {
                core.add_at(id, req, sink, arrival);
            }
        }
        Command::Abort(id) => core.abort(id, FinishReason::Cancelled),
        Command::Stats(reply) => {
            let _ = reply.send(core.stats());
        }
    }
}

/// The loop: take commands, step while there is work, sleep on the channel when idle.
fn run(core: &mut EngineCore, rx: std::sync::mpsc::Receiver<Command>, step_delay: Duration) {
    loop {
        if !core.has_work() {
            match rx.recv() {
                Ok(cmd) => apply(core, cmd),
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            apply(core, cmd);
        }
        let stepped = core.step().is_some();
        if stepped && !step_delay.is_zero() {
            std::thread::sleep(step_delay);
        }
        if !stepped && core.has_work() {
            // Work exists but none can run this instant (e.g. all deadlines pending).
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(cmd) => apply(core, cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if !core.has_work() => return,
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}

impl EngineHandle {
    /// Submit a request; its events arrive on the returned stream.
    pub fn submit(&self, req: GenerationRequest) -> Result<RequestStream, EngineGone> {
        self.submit_many(vec![req])
    }

    /// Submit several requests with the same `n` at once (a completions prompt list): they
    /// are queued in the same step, so they run in the same batches, and their events come
    /// merged on one stream (`stream` says how they are numbered).
    pub fn submit_many(&self, reqs: Vec<GenerationRequest>) -> Result<RequestStream, EngineGone> {
        if self.death.get().is_some() {
            return Err(EngineGone);
        }
        let n = reqs.first().map_or(1, |r| r.n);
        let mut parts = Vec::with_capacity(reqs.len());
        let mut adds = Vec::with_capacity(reqs.len());
        for req in reqs {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (sink, rx) = unbounded_channel();
            adds.push((id, req, sink));
            parts.push(Part { id, rx, done: false });
        }
        self.tx
            .send(Command::Add(adds, std::time::Instant::now()))
            .map_err(|_| EngineGone)?;
        Ok(RequestStream::new(parts, n, self.tx.clone(), self.death.clone()))
    }

    /// Why the engine thread died, if it did (a panic; it never ends otherwise while a
    /// handle exists).
    pub fn failure(&self) -> Option<&str> {
        self.death.get().map(String::as_str)
    }
}

impl EngineHandle {
    /// Occupancy and counters, as of the engine's current step.
    pub fn stats(&self) -> Result<EngineStats, EngineGone> {
        let (tx, rx) = channel();
        self.tx.send(Command::Stats(tx)).map_err(|_| EngineGone)?;
        rx.recv().map_err(|_| EngineGone)
    }
}
