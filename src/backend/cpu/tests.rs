//! Kernel tests: every vector kernel against its portable twin and against a plain f32
//! reference, on shapes that exercise partial panels, odd tile rows and accumulation.

use super::isa::Isa;
use super::matmul::{Format, PackedMatrix, Scratch};
use super::pool::Pool;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

/// y = x Wᵀ in f64, rounded to f32.
fn reference(x: &[f32], w: &[f32], m: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * rows];
    for i in 0..m {
        for r in 0..rows {
            let s: f64 = (0..cols).map(|k| x[i * cols + k] as f64 * w[r * cols + k] as f64).sum();
            y[i * rows + r] = s as f32;
        }
    }
    y
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

const SHAPES: [(usize, usize); 5] = [(37, 40), (64, 64), (16, 33), (130, 96), (200, 256)];

/// (format, tolerance vs the f32 reference relative to the largest output)
const FORMATS: [(Format, f32); 4] = [
    (Format::F32, 1e-5),
    (Format::Bf16, 1.5e-2),
    (Format::Q8_0, 2e-2),
    (Format::Q4K, 1.5e-1),
];

#[test]
fn matmul_matches_reference_and_portable_kernels() {
    let pool = Pool::new(2);
    let mut scratch = Scratch::default();
    for (format, tol) in FORMATS {
        for (rows, cols) in SHAPES {
            let w = values(rows * cols, (rows * cols) as u64);
            let packed = PackedMatrix::pack(&w, rows, cols, format).unwrap();
            for m in [1usize, 5, 7, 13, 50] {
                let x = values(m * cols, m as u64 + 7);
                let want = reference(&x, &w, m, rows, cols);
                let mut fast = vec![0f32; m * rows];
                packed.matmul_with(Isa::get(), &x, m, &mut fast, false, &pool, &mut scratch);
                let mut portable = vec![0f32; m * rows];
                packed.matmul_with(Isa::scalar(), &x, m, &mut portable, false, &pool, &mut scratch);
                let what = format!("{format:?} {rows}x{cols} m={m}");
                assert!(
                    max_rel(&fast, &want) <= tol,
                    "{what}: vs reference {}",
                    max_rel(&fast, &want)
                );
                assert!(
                    max_rel(&fast, &portable) <= 1e-5,
                    "{what}: vector vs portable {}",
                    max_rel(&fast, &portable)
                );
            }
        }
    }
}

#[test]
fn matmul_accumulates_into_the_output() {
    let pool = Pool::new(2);
    let mut scratch = Scratch::default();
    let (rows, cols, m) = (70, 64, 3);
    let w = values(rows * cols, 3);
    let x = values(m * cols, 4);
    for format in [Format::F32, Format::Bf16, Format::Q8_0, Format::Q4K] {
        let packed = PackedMatrix::pack(&w, rows, cols, format).unwrap();
        let mut plain = vec![0f32; m * rows];
        packed.matmul(&x, m, &mut plain, false, &pool, &mut scratch);
        let mut acc = vec![1.5f32; m * rows];
        packed.matmul(&x, m, &mut acc, true, &pool, &mut scratch);
        for (a, p) in acc.iter().zip(&plain) {
            assert!((a - (p + 1.5)).abs() < 1e-5, "{format:?}: {a} != {p} + 1.5");
        }
    }
}

#[test]
fn row_lookup_returns_the_stored_row() {
    let (rows, cols) = (40, 96);
    let w = values(rows * cols, 9);
    for (format, tol) in [
        (Format::F32, 0.0),
        (Format::Bf16, 4e-3),
        (Format::Q8_0, 4e-3),
        (Format::Q4K, 0.1),
    ] {
        let packed = PackedMatrix::pack(&w, rows, cols, format).unwrap();
        let mut out = vec![0f32; cols];
        for r in [0, 17, 39] {
            packed.row(r, &mut out).unwrap();
            let d = max_rel(&out, &w[r * cols..(r + 1) * cols]);
            assert!(d <= tol, "{format:?} row {r}: {d}");
        }
    }
}

#[test]
fn vector_helpers_match_portable_ones() {
    let (isa, port) = (Isa::get(), Isa::scalar());
    for n in [1usize, 15, 16, 33, 64, 100] {
        let (a, b) = (values(n, 1), values(n, 2));
        assert!((isa.dot(&a, &b) - port.dot(&a, &b)).abs() < 1e-5);
        let (mut y1, mut y2) = (b.clone(), b.clone());
        isa.axpy(0.7, &a, &mut y1);
        port.axpy(0.7, &a, &mut y2);
        assert!(max_rel(&y1, &y2) < 1e-6);
        let g: Vec<f32> = a.iter().map(|v| v * 12.0).collect(); // silu over ±12
        let (mut o1, mut o2) = (vec![0f32; n], vec![0f32; n]);
        isa.swiglu(&g, &b, &mut o1);
        port.swiglu(&g, &b, &mut o2);
        assert!(max_rel(&o1, &o2) < 1e-5, "swiglu n={n}");
        let (mut p1, mut p2) = (vec![0u32; n.div_ceil(2)], vec![0u32; n.div_ceil(2)]);
        isa.to_bf16_pairs(&a, &mut p1);
        port.to_bf16_pairs(&a, &mut p2);
        assert_eq!(p1, p2, "bf16 conversion n={n}");
    }
}

#[test]
fn q4k_packing_keeps_ggml_q4k_values() {
    use candle_core::quantized::{GgmlDType, QTensor};
    let (rows, cols) = (20, 512);
    let w = values(rows * cols, 11);
    let t = candle_core::Tensor::from_vec(w.clone(), (rows, cols), &candle_core::Device::Cpu).unwrap();
    let theirs = QTensor::quantize(&t, GgmlDType::Q4K)
        .unwrap()
        .dequantize(&candle_core::Device::Cpu)
        .unwrap();
    let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let packed = PackedMatrix::pack(&w, rows, cols, Format::Q4K).unwrap();
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        packed.row(r, &mut row).unwrap();
        // Equal up to the f16 rounding of each sub-block's scale and min.
        let d = max_rel(&row, &theirs[r * cols..(r + 1) * cols]);
        assert!(d < 2e-3, "row {r}: {d}");
    }
}
