//! Micro-benchmarks of the CPU backend's hot kernels on SmolLM2-135M shapes, through the same
//! thread team the model uses: the packed matmul per weight format at 1, 32 and 512 activation
//! rows (throughput in FLOP/s: 2 × m × rows × cols per call), and paged decode attention.
//!
//! Run: `cargo bench --bench kernels` (`AISLE_BENCH_FORMATS=f32,q8_0` limits the formats).

use std::time::Duration;

use aisle::backend::cpu::{default_threads, Format, PackedMatrix, Pool, Scratch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// (name, out, in): the fused QKV, O, fused gate/up, down and lm_head shapes.
const SHAPES: [(&str, usize, usize); 5] = [
    ("qkv", 960, 576),
    ("o", 576, 576),
    ("gate_up", 3072, 576),
    ("down", 576, 1536),
    ("lm_head", 49152, 576),
];

fn formats() -> Vec<(&'static str, Format)> {
    let wanted = std::env::var("AISLE_BENCH_FORMATS").unwrap_or_default();
    [
        ("f32", Format::F32),
        ("bf16", Format::Bf16),
        ("q8_0", Format::Q8_0),
        ("q4_k", Format::Q4K),
    ]
    .into_iter()
    .filter(|(name, _)| wanted.is_empty() || wanted.split(',').any(|w| w == *name))
    .collect()
}

/// Deterministic pseudo-random values in [-0.05, 0.05).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench_matmul(c: &mut Criterion) {
    let pool = Pool::new(default_threads());
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10).warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for (fname, format) in formats() {
        for (sname, rows, cols) in SHAPES {
            let w = PackedMatrix::pack(&values(rows * cols, 1), rows, cols, format).expect("pack");
            for m in [1usize, 32, 512] {
                if sname == "lm_head" && m > 32 {
                    continue; // prefill only needs the last rows' logits
                }
                let x = values(m * cols, 2);
                let mut y = vec![0f32; m * rows];
                let mut scratch = Scratch::default();
                g.throughput(Throughput::Elements((2 * m * rows * cols) as u64));
                g.bench_function(BenchmarkId::new(format!("{fname}/{sname}"), m), |b| {
                    b.iter(|| w.matmul(&x, m, &mut y, false, &pool, &mut scratch))
                });
            }
        }
    }
    g.finish();
}

/// The cost of one fork-join hand-off to the team (a decode step makes ~150 of them).
fn bench_pool(c: &mut Criterion) {
    let pool = Pool::new(default_threads());
    let hits = std::sync::atomic::AtomicUsize::new(0);
    c.bench_function("pool/run_empty", |b| {
        b.iter(|| {
            pool.run(|tid, _| {
                hits.fetch_add(tid, std::sync::atomic::Ordering::Relaxed);
            })
        })
    });
}

criterion_group!(kernels, bench_matmul, bench_pool);
criterion_main!(kernels);
