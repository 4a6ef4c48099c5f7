//! The native CPU backend against the candle reference forward pass (`--device
//! cpu-reference`) with 16-token blocks (the vector attention path): several sequences of
//! different lengths in one step, spanning many blocks, sliding windows (mistral's is 8),
//! then greedy decode steps — logits within 1e-4 in f32 and identical greedy tokens.

mod common;

use aisle::backend::{DeviceSpec, Executor, ExecutorOptions};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use aisle::sampling::argmax;
use candle_core::DType;
use common::*;

fn exec(model: &LoadedModel, device: DeviceSpec, threads: usize) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device,
        dtype: DType::F32,
        block_size: 16,
        num_blocks: 32,
        threads,
        ..Default::default()
    };
    model.executor(&opts).expect("executor")
}

/// Prompts of 40 and 23 tokens in scattered blocks, all logits; then 8 greedy steps of both
/// sequences together. Returns every logits row in order.
fn run(exec: &mut dyn Executor, vocab: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
    let prompts: Vec<Vec<u32>> = [40usize, 23]
        .iter()
        .enumerate()
        .map(|(s, &n)| (0..n).map(|i| ((i * 7 + s * 13 + 3) % vocab) as u32).collect())
        .collect();
    let tables = [vec![9u32, 2, 30, 4], vec![7u32, 0, 15]];
    let mut batch = Batch::default();
    for (p, t) in prompts.iter().zip(&tables) {
        batch.push(p, 0, t.clone(), LogitsWanted::All);
    }
    let out = exec.execute(&batch).expect("prefill");
    let mut rows: Vec<Vec<f32>> = (0..out.rows()).map(|r| out.row(r).to_vec()).collect();
    let mut last = [argmax(&rows[39]), argmax(&rows[62])];
    let mut tokens = Vec::new();
    for step in 0..8 {
        let mut b = Batch::default();
        for s in 0..2 {
            b.push(
                &[last[s]],
                prompts[s].len() + step,
                tables[s].clone(),
                LogitsWanted::Last,
            );
        }
        let out = exec.execute(&b).expect("decode");
        for (s, l) in last.iter_mut().enumerate() {
            rows.push(out.row(s).to_vec());
            *l = argmax(out.row(s));
            tokens.push(*l);
        }
    }
    (rows, tokens)
}

#[test]
fn native_backend_matches_the_reference_forward_pass() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let vocab = model.config.vocab_size;
        let (want_rows, want_tokens) = run(exec(&model, DeviceSpec::CpuReference, 0).as_mut(), vocab);
        for threads in [1, 2, 3] {
            let (rows, tokens) = run(exec(&model, DeviceSpec::Cpu, threads).as_mut(), vocab);
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
