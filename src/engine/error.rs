//! Why a request failed in the engine, as a type the server maps to HTTP statuses by kind.
//!
//! Owns: `RequestError` (a request that cannot run on this model and cache) and `EngineError`
//! (everything an `Event::Error` can carry). Must not: know about HTTP; `server/errors.rs`
//! holds the one table from these kinds to statuses.
//!
//! A deadline or a cancellation is not an error here: it ends a choice with
//! `FinishReason::Timeout` / `Cancelled` (tokens already streamed stay valid), and the
//! routing policy reads that finish reason.

/// A request that cannot run, with a message the client can act on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("this model's maximum context length is {context} tokens, but the prompt has {prompt} tokens")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("n must be at least 1")]
    ZeroChoices,
}

/// What ended a request with `Event::Error`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The request is invalid for this model (checked against the model's context).
    #[error(transparent)]
    Invalid(#[from] RequestError),
    /// The request can never fit the KV cache, even running alone.
    #[error("the request needs {needed} KV cache blocks but the cache has only {available}; lower max_tokens or n")]
    Capacity { needed: usize, available: usize },
    /// The executor failed a step this request was in.
    #[error("inference failed: {0}")]
    Executor(String),
    /// The engine thread is gone (it panicked).
    #[error("the engine has stopped: {0}")]
    Stopped(String),
    /// The request's events ended without `Done` while the engine still runs (a bug).
    #[error("the engine ended the request without an answer")]
    Lost,
}
