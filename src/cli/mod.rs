//! Subcommands of the `aisle` binary that are large enough for their own file.
//!
//! Owns: argument structs and drivers for those subcommands. Must not: hold library logic
//! (that lives in the `aisle` crate's modules).

pub mod bench_serve;
pub mod eval;
pub mod neuron_manifest;
