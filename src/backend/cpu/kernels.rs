//! AVX-512 micro-kernels for the packed matmul: one register tile of `MR` activation rows ×
//! `NR` weight panels (16 output columns each) per call, for f32 (FMA), bf16 (`vdpbf16ps`)
//! and q8_0 (`vpdpbusd`, VNNI) weights. Each has a portable scalar twin in `matmul.rs`.
//!
//! Owns: the inner loops only. Must not: allocate, branch on data, or know about layers.
//! Every function here is `unsafe`: callers check the CPU features once (`Isa::detect`) and
//! pass pointers that cover the tile (`matmul.rs` computes them from the packed layouts).

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops mirror the register tiles
pub mod x86 {
    use std::arch::x86_64::*;

    use super::super::quant::{Q8Act, Q8_BLOCK};

    /// Where a tile's results go: `y[i * ldy + j * 16 + lane]`, lanes of the last panel
    /// limited by `last_mask`; `accumulate` adds to what `y` holds instead of overwriting.
    #[derive(Clone, Copy)]
    pub struct Out {
        pub y: *mut f32,
        pub ldy: usize,
        pub last_mask: u16,
        pub accumulate: bool,
    }

    #[inline(always)]
    unsafe fn store<const MR: usize, const NR: usize>(acc: &[[__m512; NR]; MR], o: Out) {
        for (i, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let dst = o.y.add(i * o.ldy + j * 16);
                let mask = if j + 1 == NR { o.last_mask } else { 0xFFFF };
                let v = match o.accumulate {
                    true => _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst)),
                    false => v,
                };
                _mm512_mask_storeu_ps(dst, mask, v);
            }
        }
    }

    /// f32 weights, panels `(k, 16)` laid one after another (`panel_stride` floats apart).
    /// x: (MR, k) rows `ldx` apart.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_f32<const MR: usize, const NR: usize>(
        x: *const f32,
        ldx: usize,
        w: *const f32,
        k: usize,
        o: Out,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        for kk in 0..k {
            let mut wv = [_mm512_setzero_ps(); NR];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add((j * k + kk) * 16));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*x.add(i * ldx + kk));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xb, v, *a);
                }
            }
        }
        store(&acc, o)
    }

    /// bf16 weights, panels `(k2, 16, 2)` (pairs of consecutive k per lane); x as bf16 pairs
    /// packed in u32: (MR, k2) rows `ldx` apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile_bf16<const MR: usize, const NR: usize>(
        x: *const u32,
        ldx: usize,
        w: *const u16,
        k2: usize,
        o: Out,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        for kk in 0..k2 {
            let mut wv = [_mm512_setzero_si512(); NR];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.add((j * k2 + kk) * 32) as *const __m512i);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let xb: __m512bh = std::mem::transmute(_mm512_set1_epi32(*x.add(i * ldx + kk) as i32));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_dpbf16_ps(*a, xb, std::mem::transmute::<__m512i, __m512bh>(v));
                }
            }
        }
        store(&acc, o)
    }

    /// q8_0 weights: panels of `nb` blocks of `Q8_BLOCK` bytes. Integer dot products of
    /// unsigned (w + 128) by signed x per 32-block, then `Σ d_w d_x (dot - 128 Σx)` in f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile_q8<const MR: usize, const NR: usize>(x: Q8Act, w: *const u8, nb: usize, o: Out) {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        for b in 0..nb {
            let mut iacc = [[_mm512_setzero_si512(); NR]; MR];
            for g in 0..8 {
                let mut wv = [_mm512_setzero_si512(); NR];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(w.add((j * nb + b) * Q8_BLOCK + g * 64) as *const __m512i);
                }
                for (i, row) in iacc.iter_mut().enumerate() {
                    let xp = x.q.add(i * x.ldx + b * 32 + g * 4) as *const i32;
                    let xb = _mm512_set1_epi32(xp.read_unaligned());
                    for (a, &v) in row.iter_mut().zip(&wv) {
                        *a = _mm512_dpbusd_epi32(*a, v, xb);
                    }
                }
            }
            let mut dw = [_mm512_setzero_ps(); NR];
            for (j, v) in dw.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add((j * nb + b) * Q8_BLOCK + 512) as *const f32);
            }
            for i in 0..MR {
                let d = _mm512_set1_ps(*x.d.add(i * x.lds + b));
                let c = _mm512_set1_ps(*x.c.add(i * x.lds + b));
                for j in 0..NR {
                    let f = _mm512_sub_ps(_mm512_cvtepi32_ps(iacc[i][j]), c);
                    acc[i][j] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw[j], d), acc[i][j]);
                }
            }
        }
        store(&acc, o)
    }

    /// f32 → bf16 (round to nearest even) of `n` values, written as pairs in u32s; an odd
    /// tail is padded with zero.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
        let n = src.len();
        let d16 = dst.as_mut_ptr() as *mut u16;
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
            _mm256_storeu_si256(d16.add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
            i += 16;
        }
        for j in i..n {
            *d16.add(j) = half::bf16::from_f32(src[j]).to_bits();
        }
        if n % 2 == 1 {
            *d16.add(n) = 0;
        }
    }

    /// Σ a·b over two f32 slices of equal length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                s0,
            );
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i + 16)),
                _mm512_loadu_ps(b.as_ptr().add(i + 16)),
                s1,
            );
            i += 32;
        }
        if i + 16 <= n {
            s0 = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                s0,
            );
            i += 16;
        }
        let mut s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }

    /// y += a · x over f32 slices of equal length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm512_set1_ps(a);
        let mut i = 0;
        while i + 16 <= n {
            let p = y.as_mut_ptr().add(i);
            _mm512_storeu_ps(
                p,
                _mm512_fmadd_ps(av, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(p)),
            );
            i += 16;
        }
        for j in i..n {
            y[j] += a * x[j];
        }
    }
}
