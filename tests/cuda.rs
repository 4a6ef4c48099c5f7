//! The CUDA backend on a GPU (`cargo test --release --features cuda --test cuda`; needs a
//! GPU and the CUDA libraries): each of our kernels against its CPU reference
//! (`aisle::backend::kernel_ref`), and the whole model on `--device cuda` against the candle
//! CPU forward pass. The golden suites run on the GPU with `AISLE_TEST_DEVICE=cuda`.

mod common;

use aisle::backend::cuda::CudaKv;
use aisle::backend::kernel_ref::{paged_attention, write_kv, PagedDims, PagedStep};
use aisle::backend::{DeviceSpec, KvGeometry};
use aisle::batch::{Batch, LogitsWanted};
use aisle::model::KvAttention;
use aisle::runtime::LoadedModel;
use candle_core::{Device, Tensor};
use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// write_kv_f32 and paged_attention_f32 against their references: a 300-token prompt (three
/// 128-position tiles) beside a short one, then decodes; 16-token blocks in scattered order;
/// head_dim 64 and 160 (two dims per thread); with and without a sliding window.
#[test]
fn kernels_match_their_cpu_references() {
    let gpu = Device::new_cuda(0).expect("a CUDA GPU");
    for (head_dim, window) in [(64usize, 0usize), (64, 100), (160, 0)] {
        let d = PagedDims {
            heads: 6,
            kv_heads: 2,
            head_dim,
            block_size: 16,
            max_blocks: 20,
        };
        let geo = KvGeometry {
            num_layers: 1,
            num_blocks: 48,
            block_size: 16,
            num_kv_heads: 2,
            head_dim,
        };
        let tables: [Vec<u32>; 2] = [(0..20).map(|b| 47 - 2 * b).collect(), (0..20).map(|b| 2 * b).collect()];
        let flat: Vec<u32> = tables.iter().flatten().copied().collect();
        let mut rng = StdRng::seed_from_u64(head_dim as u64 + window as u64);
        let mut kv = CudaKv::new(&gpu, geo).unwrap();
        let n = geo.layer_elems();
        let (mut kc, mut vc) = (vec![0f32; n], vec![0f32; n]);
        for step in [[(300usize, 0usize), (7, 0)], [(1, 300), (1, 7)], [(1, 301), (1, 8)]] {
            let mut batch = Batch::default();
            for (s, &(len, start)) in step.iter().enumerate() {
                batch.push(&vec![1; len], start, tables[s].clone(), LogitsWanted::Last);
            }
            let t = batch.num_tokens();
            let q = random(&mut rng, t * d.heads * head_dim);
            let k = random(&mut rng, t * d.kv_heads * head_dim);
            let v = random(&mut rng, t * d.kv_heads * head_dim);
            let on_gpu = |x: &[f32], h: usize| Tensor::from_slice(x, (t, h, head_dim), &gpu).unwrap();
            kv.prepare(&batch).unwrap();
            let w = (window > 0).then_some(window);
            let got = kv.attend(0, &on_gpu(&q, 6), &on_gpu(&k, 2), &on_gpu(&v, 2), w).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (mut slots, mut seq) = (Vec::new(), Vec::new());
            batch.fill_slots(16, &mut slots, &mut seq);
            let slots: Vec<u32> = slots.iter().map(|&s| s as u32).collect();
            write_kv(&mut kc, &mut vc, &k, &v, &slots, d);
            let mut want = vec![0f32; q.len()];
            let refs = PagedStep {
                block_tables: &flat,
                positions: &batch.positions,
                token_seq: &seq,
                window,
            };
            paged_attention(&mut want, &q, &kc, &vc, &refs, d);
            let worst = max_abs_diff(&got, &want);
            assert!(worst <= 1e-4, "head_dim {head_dim} window {window}: differs by {worst}");
        }
    }
}

#[test]
fn cuda_matches_the_cpu_forward_pass() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let (want_rows, want_tokens) =
            two_sequence_trace(trace_executor(&model, DeviceSpec::CpuReference, 0).as_mut(), 384);
        let (rows, tokens) = two_sequence_trace(trace_executor(&model, DeviceSpec::Cuda(0), 0).as_mut(), 384);
        assert_eq!(tokens, want_tokens, "{name}: greedy tokens");
        let worst = rows
            .iter()
            .zip(&want_rows)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        assert!(worst <= 1e-3, "{name}: logits differ by {worst}");
    }
}

/// A step of prompt chunks that wants no logits (chunked prefill) runs on the GPU and returns
/// no rows, and the prompt's last chunk then gives the CPU reference's logits. (A zero-length
/// device tensor for the empty row list once failed the whole step with
/// CUDA_ERROR_INVALID_VALUE.)
#[test]
fn a_step_that_wants_no_logits_runs() {
    let model = LoadedModel::load_dir(&fixture("llama")).expect("fixture");
    let prompt: Vec<u32> = (1..=20).collect();
    let run = |device| {
        let mut exec = trace_executor(&model, device, 0);
        let mut first = Batch::default();
        first.push(&prompt[..12], 0, vec![3, 1], LogitsWanted::None);
        let out = exec.execute(&first).expect("a chunk-only step");
        assert!(out.logits.is_empty(), "a chunk-only step returned logits");
        let mut last = Batch::default();
        last.push(&prompt[12..], 12, vec![3, 1], LogitsWanted::Last);
        exec.execute(&last).expect("the last chunk").logits
    };
    let (got, want) = (run(DeviceSpec::Cuda(0)), run(DeviceSpec::CpuReference));
    let worst = max_abs_diff(&got, &want);
    assert!(worst <= 1e-3, "logits after a chunked prefill differ by {worst}");
}
