//! The native CPU backend against the candle reference forward pass (`--device
//! cpu-reference`) with 16-token blocks (the vector attention path): several sequences of
//! different lengths in one step, spanning many blocks, sliding windows (mistral's is 8),
//! then greedy decode steps — logits within 1e-4 in f32 and identical greedy tokens.

use crate::common;

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::runtime::LoadedModel;
use common::*;

#[test]
fn native_backend_matches_the_reference_forward_pass() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let vocab = model.config.vocab_size;
        let (want_rows, want_tokens) =
            two_sequence_trace(trace_executor(&model, DeviceSpec::CpuReference, 0).as_mut(), vocab);
        for threads in [1, 2, 3] {
            let (rows, tokens) = two_sequence_trace(trace_executor(&model, DeviceSpec::Cpu, threads).as_mut(), vocab);
            assert_eq!(tokens, want_tokens, "{name} ({threads} threads): greedy tokens");
            let worst = rows
                .iter()
                .zip(&want_rows)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0f32, f32::max);
            assert!(worst <= 1e-4, "{name} ({threads} threads): logits differ by {worst}");
        }
    }
}

#[test]
fn quantize_is_rejected_on_the_reference_device() {
    let model = LoadedModel::load_dir(&fixture("llama")).expect("fixture");
    let opts = ExecutorOptions {
        device: DeviceSpec::CpuReference,
        quantize: Some(aisle::backend::Quantize::Q8_0),
        ..Default::default()
    };
    let err = model.executor(&opts).err().expect("must fail").to_string();
    assert!(err.contains("--quantize") && err.contains("--device cpu"), "{err}");
}
