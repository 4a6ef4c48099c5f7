//! Aisle: a native inference engine for small Llama-family models.
//!
//! Reading order: `config` / `model_dir` / `gguf` → `weights` → `model` (one forward pass) → `batch`
//! (the step contract) → `backend` (executors and KV caches) → `tokenizer` /
//! `chat_template` → `sampling` → `runtime` (loading a model directory as a whole) → `engine`
//! (scheduler, steps, the engine thread) → `server` (the OpenAI API: validate → policy →
//! local or remote) with `fallback` (routing policy and remote clients) and `sse` → `eval` and
//! `loadtest` (the `aisle eval` and `aisle bench-serve` harnesses). The binary's
//! subcommands live in `src/cli/`.

pub mod backend;
pub mod batch;
pub mod catalog;
pub mod chat_template;
pub mod config;
pub mod engine;
pub mod eval;
pub mod fallback;
pub mod gguf;
pub mod grammar;
pub mod hub;
pub mod loadtest;
pub mod model;
pub mod model_dir;
pub mod pyjson;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod sse;
pub mod tokenizer;
pub mod toolbox;
pub mod tools;
pub mod weights;
