//! One test binary for the integration tests that share a process safely (each file is a
//! module, kept at `tests/NAME.rs`; run one with `cargo test --release --test suite NAME::`).
//! One binary instead of one per file links the crate once, not once per file. Tests that change process-wide state have their
//! own binaries: `hf_cache` (environment variables), `fuzz_replay` (a counting global
//! allocator and an aborting watchdog), and the feature-gated `neuron` and `cuda`.

mod common;

#[path = "batching.rs"]
mod batching;
#[path = "bench_serve.rs"]
mod bench_serve;
#[path = "cli.rs"]
mod cli;
#[path = "completions.rs"]
mod completions;
#[path = "connections.rs"]
mod connections;
#[path = "cpu_backend.rs"]
mod cpu_backend;
#[path = "engine.rs"]
mod engine;
#[path = "errors.rs"]
mod errors;
#[path = "gguf_errors.rs"]
mod gguf_errors;
#[path = "gguf_kquants.rs"]
mod gguf_kquants;
#[path = "gguf_tokenizer.rs"]
mod gguf_tokenizer;
#[path = "golden.rs"]
mod golden;
#[path = "grounded.rs"]
mod grounded;
#[path = "hub.rs"]
mod hub;
#[path = "info.rs"]
mod info;
#[path = "kernel_ref.rs"]
mod kernel_ref;
#[path = "liveness.rs"]
mod liveness;
#[path = "quantization.rs"]
mod quantization;
#[path = "real_model.rs"]
mod real_model;
#[path = "remote.rs"]
mod remote;
#[path = "routing.rs"]
mod routing;
#[path = "scoring.rs"]
mod scoring;
#[path = "server.rs"]
mod server;
#[path = "shop.rs"]
mod shop;
#[path = "speculative.rs"]
mod speculative;
#[path = "static_shape.rs"]
mod static_shape;
#[path = "structured.rs"]
mod structured;
#[path = "tools.rs"]
mod tools;
