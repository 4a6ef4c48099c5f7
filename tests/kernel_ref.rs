//! The CPU references of our CUDA kernels (`aisle::backend::kernel_ref`) against the CPU
//! paged KV cache (itself checked against transformers by the golden tests): the same KV
//! writes and attention outputs for prefill and decode tokens of several sequences with
//! scattered block tables, grouped-query heads, with and without a sliding window.

use aisle::backend::kernel_ref::{paged_attention, write_kv, PagedDims, PagedStep};
use aisle::backend::{CpuPagedKv, KvGeometry};
use aisle::batch::{Batch, LogitsWanted};
use aisle::model::KvAttention;
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

#[test]
fn kernel_references_match_the_cpu_paged_cache() {
    let d = PagedDims {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        block_size: 4,
        max_blocks: 5,
    };
    let geo = KvGeometry {
        num_layers: 1,
        num_blocks: 16,
        block_size: d.block_size,
        num_kv_heads: d.kv_heads,
        head_dim: d.head_dim,
    };
    let tables: [Vec<u32>; 2] = [vec![9, 2, 14, 4, 0], vec![7, 1, 11, 3, 5]];
    let flat: Vec<u32> = tables.iter().flatten().copied().collect();
    for window in [0usize, 5] {
        let mut rng = StdRng::seed_from_u64(window as u64);
        let mut cpu = CpuPagedKv::<f32>::new(geo);
        let n = geo.layer_elems();
        let (mut kc, mut vc) = (vec![0f32; n], vec![0f32; n]);
        // Step 1: prompts of 13 and 6 tokens. Step 2: one decode each.
        let steps = [[(13usize, 0usize), (6, 0)], [(1, 13), (1, 6)]];
        for step in steps {
            let mut batch = Batch::default();
            for (s, &(len, start)) in step.iter().enumerate() {
                batch.push(&vec![1; len], start, tables[s].clone(), LogitsWanted::Last);
            }
            let t = batch.num_tokens();
            let (q, k, v) = (
                random(&mut rng, t * d.heads * d.head_dim),
                random(&mut rng, t * d.kv_heads * d.head_dim),
                random(&mut rng, t * d.kv_heads * d.head_dim),
            );
            // The CPU paged cache, through the model's attention seam.
            cpu.prepare(&batch).unwrap();
            let tensor = |x: &[f32], h: usize| Tensor::from_slice(x, (t, h, d.head_dim), &Device::Cpu).unwrap();
            let w = (window > 0).then_some(window);
            let got = cpu
                .attend(
                    0,
                    &tensor(&q, d.heads),
                    &tensor(&k, d.kv_heads),
                    &tensor(&v, d.kv_heads),
                    w,
                )
                .unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The kernel references.
            let (mut slots, mut seq) = (Vec::new(), Vec::new());
            batch.fill_slots(d.block_size, &mut slots, &mut seq);
            let slots: Vec<u32> = slots.iter().map(|&s| s as u32).collect();
            write_kv(&mut kc, &mut vc, &k, &v, &slots, d);
            let mut out = vec![0f32; q.len()];
            let step = PagedStep {
                block_tables: &flat,
                positions: &batch.positions,
                token_seq: &seq,
                window,
            };
            paged_attention(&mut out, &q, &kc, &vc, &step, d);
            let worst = out.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5, "window {window}: references differ by {worst}");
        }
    }
}
