//! The serving engine: block manager, scheduler, and the loop that drives an executor.
//!
//! Reading order: `block_manager` (block ids, prefix cache) → `step_cost` (the step-time budget) →
//! `draft` (prompt-lookup guesses for
//! speculative decoding) → `scheduler` (what runs) →
//! `request` (what clients ask and receive) → `error` (why a request failed) → `core` (one step: schedule → execute →
//! sample → update → emit) → `thread` (the engine thread and its channels) → `stream` (the client's end).

pub mod block_manager;
pub mod core;
pub mod draft;
pub mod error;
pub mod request;
pub mod scheduler;
pub mod step_cost;
pub mod stream;
pub mod thread;

pub use self::core::{EngineCore, EngineStats, EventSink, ScheduledWork, StepSummary};
pub use draft::PromptLookup;
pub use error::{EngineError, RequestError};
pub use request::{ChoiceOutput, Event, FinishReason, GenerationRequest, RequestId, RequestOutput, Usage};
pub use scheduler::SchedulerConfig;
pub use stream::RequestStream;
pub use thread::{Engine, EngineGone, EngineHandle};
