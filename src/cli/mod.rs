//! The `aisle` binary's subcommands, one file each, plus the flags they share.
//!
//! Reading order: `args` (model, device, engine sizing, logging) → `generate` → `serve` →
//! `inspect` → `eval` → `bench_serve` → `catalog` → `neuron_manifest`.
//! Owns: argument structs and drivers. Must not: hold library logic (that lives in the
//! `aisle` crate's modules).

pub mod args;
pub mod bench_serve;
pub mod catalog;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod neuron_manifest;
pub mod serve;
