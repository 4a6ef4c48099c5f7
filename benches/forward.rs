//! The model benchmark suite through the executor seam, per weight format (a GGUF file's own
//! formats, f32, bf16, q8_0, q4_k): `prefill` (one 128- or 512-token prompt, tokens/s) and
//! `decode` (one token for each of 1, 8 or 32 sequences at a 128-token context, aggregate
//! tokens/s).
//!
//! Model: see `common::model_path` (the real SmolLM2-135M-Instruct GGUF when fetched).
//! `AISLE_BENCH_FORMATS=f32,q8_0` limits the formats, `AISLE_BENCH_GROUPS=decode` the groups. Run: `cargo bench --bench forward`.

use std::time::Duration;

use aisle::backend::{DeviceSpec, Executor, ExecutorOptions, Quantize};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use candle_core::DType;
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BLOCK: usize = 16;
const CTX: usize = 128;
const ALL: [&str; 5] = ["as-stored", "f32", "bf16", "q8_0", "q4_k"];

/// An executor with room for `seqs` sequences of `ctx` tokens.
fn executor(
    model: &LoadedModel,
    dtype: DType,
    quantize: Option<Quantize>,
    seqs: usize,
    ctx: usize,
) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype,
        block_size: BLOCK,
        num_blocks: seqs * ctx.div_ceil(BLOCK) + 1,
        quantize,
        ..Default::default()
    };
    model.executor(&opts).expect("executor")
}

fn table(seq: usize, ctx: usize) -> Vec<u32> {
    let per = ctx.div_ceil(BLOCK);
    (0..per).map(|k| (seq * per + k) as u32).collect()
}

fn bench_prefill(c: &mut Criterion, model: &LoadedModel) {
    let mut g = c.benchmark_group("prefill");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(4));
    for (name, dtype, quantize) in common::formats(model, &ALL) {
        for len in [128usize, 512] {
            let len = len.min(model.config.max_position_embeddings);
            let mut exec = executor(model, dtype, quantize, 1, len);
            let prompt: Vec<u32> = (0..len).map(|i| (i * 7 % model.config.vocab_size) as u32).collect();
            let mut batch = Batch::default();
            batch.push(&prompt, 0, table(0, len), LogitsWanted::Last);
            g.throughput(Throughput::Elements(len as u64));
            g.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter(|| exec.execute(&batch).expect("prefill"))
            });
        }
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion, model: &LoadedModel) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (name, dtype, quantize) in common::formats(model, &ALL) {
        for seqs in [1usize, 8, 32] {
            let mut exec = executor(model, dtype, quantize, seqs, CTX);
            // Fill every sequence's cache with a real 127-token prefill, then time one decode
            // token per sequence at position 127 (a 128-token context).
            for s in 0..seqs {
                let prompt: Vec<u32> = (0..CTX - 1).map(|i| ((i * 31 + s * 7) % 300 + 4) as u32).collect();
                let mut batch = Batch::default();
                batch.push(&prompt, 0, table(s, CTX), LogitsWanted::Last);
                exec.execute(&batch).expect("prefill");
            }
            let mut batch = Batch::default();
            for s in 0..seqs {
                batch.push(&[(s % 100) as u32 + 1], CTX - 1, table(s, CTX), LogitsWanted::Last);
            }
            g.throughput(Throughput::Elements(seqs as u64));
            g.bench_function(BenchmarkId::new(name, seqs), |b| {
                b.iter(|| exec.execute(&batch).expect("decode"))
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let model = common::load_model();
    let groups = std::env::var("AISLE_BENCH_GROUPS").unwrap_or_default();
    let wanted = |g: &str| groups.is_empty() || groups.split(',').any(|w| w == g);
    if wanted("prefill") {
        bench_prefill(c, &model);
    }
    if wanted("decode") {
        bench_decode(c, &model);
    }
}

criterion_group!(forward, benches);
criterion_main!(forward);
