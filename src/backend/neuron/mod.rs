//! The Neuron backend (`--device neuron`): the static-shape executor with its graphs running
//! as ahead-of-time compiled NEFFs on NeuronCores through libnrt.
//!
//! Owns: the manifest format (always compiled, so any build can write one) and, under the
//! `neuron` feature, the libnrt binding (`nrt`) and the NEFF graphs (`graphs`).
//! Must not: pick buckets or slots (`static_shape` does).
//!
//! Not yet run on Neuron hardware: CI exercises the binding and graphs against a fake libnrt
//! (`tests/fake-nrt`) that implements the same C API.

#[cfg(feature = "neuron")]
mod graphs;
pub mod manifest;
#[cfg(feature = "neuron")]
pub mod nrt;

#[cfg(feature = "neuron")]
pub use graphs::{NeuronError, NeuronGraphs, NeuronOptions};
