//! Forward-pass throughput through the executor seam: prefill (one prompt) and decode steps
//! at several batch sizes, on a committed fixture model. The SmolLM2-135M-shaped benchmark
//! suite (prefill 128/512, decode at 1/8/32 sequences, per dtype) builds on this harness.
//!
//! Run: `cargo bench --bench forward` (set AISLE_BENCH_MODEL=DIR to use another model).

use std::path::PathBuf;

use aisle::backend::{DeviceSpec, Executor, ExecutorOptions};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use candle_core::DType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BLOCK: usize = 16;
const CTX: usize = 128;

fn model_dir() -> PathBuf {
    std::env::var_os("AISLE_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama3"))
}

fn executor(model: &LoadedModel, dtype: DType, seqs: usize) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype,
        block_size: BLOCK,
        num_blocks: seqs * CTX.div_ceil(BLOCK) + 1,
    };
    model.executor(&opts).expect("executor")
}

fn table(seq: usize) -> Vec<u32> {
    let per = CTX.div_ceil(BLOCK);
    (0..per).map(|k| (seq * per + k) as u32).collect()
}

fn bench_prefill(c: &mut Criterion, model: &LoadedModel) {
    let mut g = c.benchmark_group("prefill");
    let len = CTX.min(model.config.max_position_embeddings) - 1;
    let prompt: Vec<u32> = (0..len).map(|i| (i * 7 % model.config.vocab_size) as u32).collect();
    for (name, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        let mut exec = executor(model, dtype, 1);
        let mut batch = Batch::default();
        batch.push(&prompt, 0, table(0), LogitsWanted::Last);
        g.throughput(Throughput::Elements(len as u64));
        g.bench_function(BenchmarkId::new(name, len), |b| {
            b.iter(|| exec.execute(&batch).expect("prefill"))
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion, model: &LoadedModel) {
    let mut g = c.benchmark_group("decode");
    for (name, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        for seqs in [1usize, 8, 32] {
            let mut exec = executor(model, dtype, seqs);
            // One decode token per sequence at position CTX - 1 (a 128-token context).
            let mut batch = Batch::default();
            for s in 0..seqs {
                batch.push(&[(s % 100) as u32 + 1], CTX - 1, table(s), LogitsWanted::Last);
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
    let model = LoadedModel::load_dir(&model_dir()).expect("bench model");
    bench_prefill(c, &model);
    bench_decode(c, &model);
}

criterion_group! {
    name = forward;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(forward);
