//! AVX-512 micro-kernels for the packed matmul: one register tile of `MR` activation rows ×
//! `NR` weight panels (16 output columns each) per call, for f32 (FMA), bf16 (`vdpbf16ps`)
//! and q8_0 (`vpdpbusd`, VNNI) weights. Each has a portable scalar twin in `matmul.rs`.
//!
//! Owns: the inner loops only. Must not: allocate, branch on data, or know about layers.
//! Every function here is `unsafe`: callers check the CPU features once (`Isa::detect`) and
//! pass pointers that cover the tile (`matmul.rs` computes them from the packed layouts).

/// Where a tile's results go: `y[i * ldy + j * 16 + lane]`, lanes of the last panel
/// limited by `last_mask`; `accumulate` adds to what `y` holds instead of overwriting.
#[derive(Clone, Copy)]
pub struct Out {
    pub y: *mut f32,
    pub ldy: usize,
    pub last_mask: u16,
    pub accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops mirror the register tiles
pub mod x86 {
    use std::arch::x86_64::*;

    use super::super::quant::{Q8Act, Q8_BLOCK};
    use super::super::quant4::Q4_BLOCK;
    use super::Out;

    #[inline(always)]
    unsafe fn store<const MR: usize, const NR: usize>(acc: &[[__m512; NR]; MR], o: Out) {
        // SAFETY: every caller is a tile kernel with AVX-512 F enabled whose `Out` covers the MR x (NR x 16) tile it stores (masked in the last panel).
        unsafe {
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
        // SAFETY: the caller checked the CPU features (`Isa`) and passes `x`, `w` and `o` covering MR rows x k, NR panels of (k, 16) and the output tile (module doc).
        unsafe {
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
        // SAFETY: the caller checked the CPU features (`Isa`) and passes `x`, `w` and `o` covering MR rows x k2 pairs, NR panels of (k2, 16, 2) and the output tile (module doc).
        unsafe {
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
    }

    /// How far ahead (in blocks) the batch-1 quantized kernels prefetch.
    const PREFETCH_BLOCKS: usize = 24;

    /// q8_0 weights: panels of `nb` blocks of `Q8_BLOCK` bytes. Integer dot products of
    /// unsigned (w + 128) by signed x per 32-block, then `Σ d_w d_x (dot - 128 Σx)` in f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile_q8<const MR: usize, const NR: usize>(x: Q8Act, w: *const u8, nb: usize, o: Out) {
        // SAFETY: the caller checked the CPU features (`Isa`) and passes activations for MR rows of `nb` blocks, NR panels of `nb` Q8_BLOCKs and an output tile that cover every access (module doc).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NR]; MR];
            for b in 0..nb {
                if MR == 1 {
                    // Batch-1 decode streams weights from DRAM: ask for blocks ahead explicitly.
                    for j in 0..NR {
                        let ahead = w.wrapping_add((j * nb + b + PREFETCH_BLOCKS) * Q8_BLOCK) as *const i8; // may pass the end: prefetches never fault
                        for line in 0..Q8_BLOCK / 64 {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64));
                        }
                    }
                }
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
    }

    /// q4_k weights: panels of `nb` blocks of `Q4_BLOCK` bytes. Integer dot products of the
    /// unsigned nibbles by signed x per 32-block, then `Σ d_x (scale · dot − min · Σx)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile_q4k<const MR: usize, const NR: usize>(x: Q8Act, w: *const u8, nb: usize, o: Out) {
        // SAFETY: the caller checked the CPU features (`Isa`) and passes activations for MR rows of `nb` blocks, NR panels of `nb` Q4_BLOCKs and an output tile that cover every access (module doc).
        unsafe {
            let low = _mm512_set1_epi8(0x0F);
            let mut acc = [[_mm512_setzero_ps(); NR]; MR];
            for b in 0..nb {
                if MR == 1 {
                    for j in 0..NR {
                        let ahead = w.wrapping_add((j * nb + b + PREFETCH_BLOCKS) * Q4_BLOCK) as *const i8; // never faults
                        for line in 0..Q4_BLOCK / 64 {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line * 64));
                        }
                    }
                }
                let mut iacc = [[_mm512_setzero_si512(); NR]; MR];
                for g in 0..4 {
                    let mut lo = [_mm512_setzero_si512(); NR];
                    let mut hi = [_mm512_setzero_si512(); NR];
                    for j in 0..NR {
                        let v = _mm512_loadu_si512(w.add((j * nb + b) * Q4_BLOCK + g * 64) as *const __m512i);
                        lo[j] = _mm512_and_si512(v, low);
                        hi[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                    }
                    for (i, row) in iacc.iter_mut().enumerate() {
                        let xp = x.q.add(i * x.ldx + b * 32 + g * 4);
                        let xl = _mm512_set1_epi32((xp as *const i32).read_unaligned());
                        let xh = _mm512_set1_epi32((xp.add(16) as *const i32).read_unaligned());
                        for j in 0..NR {
                            row[j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(row[j], lo[j], xl), hi[j], xh);
                        }
                    }
                }
                let mut sc = [_mm512_setzero_ps(); NR];
                let mut mn = [_mm512_setzero_ps(); NR];
                for j in 0..NR {
                    let blk = w.add((j * nb + b) * Q4_BLOCK);
                    sc[j] = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(256) as *const __m256i));
                    mn[j] = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(288) as *const __m256i));
                }
                for i in 0..MR {
                    let d = _mm512_set1_ps(*x.d.add(i * x.lds + b));
                    let sum = _mm512_set1_ps(*x.c.add(i * x.lds + b) / 128.0);
                    for j in 0..NR {
                        let f = _mm512_fmsub_ps(_mm512_cvtepi32_ps(iacc[i][j]), sc[j], _mm512_mul_ps(mn[j], sum));
                        acc[i][j] = _mm512_fmadd_ps(f, d, acc[i][j]);
                    }
                }
            }
            store(&acc, o)
        }
    }

    /// f32 → bf16 (round to nearest even) of `n` values, written as pairs in u32s; an odd
    /// tail is padded with zero.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) {
        // SAFETY: the caller checked AVX-512 BF16 and that `dst` holds `src.len().div_ceil(2)` u32s; every read is below `src.len()` and every write below `2 * dst.len()` u16s.
        unsafe {
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
    }

    /// Σ a·b over two f32 slices of equal length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller checked AVX-512 F; every load is below `n`, the shorter slice's length.
        unsafe {
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
    }

    /// y += a · x over f32 slices of equal length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: the caller checked AVX-512 F; every load and store is below `n`, the shorter slice's length.
        unsafe {
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
}

/// Vector exp, softmax, SwiGLU and the paged attention inner loops.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
pub mod x86_attn {
    use std::arch::x86_64::*;

    /// e^x for 16 lanes: 2^(x log2 e) split into 2^n · 2^f, |f| ≤ 0.5, 2^f by its degree-7
    /// Taylor polynomial (relative error ≈ 1e-7, about one f32 ulp).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7)), _mm512_set1_ps(-87.3));
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, n);
        const C: [f32; 7] = [
            1.525_273_4e-5,
            1.540_353_1e-4,
            1.333_355_8e-3,
            9.618_129e-3,
            5.550_411e-2,
            2.402_265e-1,
            std::f32::consts::LN_2,
        ];
        let mut p = _mm512_set1_ps(C[0]);
        for &c in &C[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// s ← softmax(s) in place.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax(s: &mut [f32]) {
        // SAFETY: the caller checked AVX-512 F; the masked loads and stores touch only indices below `s.len()`.
        unsafe {
            let n = s.len();
            let p = s.as_mut_ptr();
            let mask = |i: usize| -> __mmask16 {
                let left = n - i;
                if left >= 16 {
                    0xFFFF
                } else {
                    ((1u32 << left) - 1) as __mmask16
                }
            };
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..n).step_by(16) {
                m = _mm512_max_ps(
                    m,
                    _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask(i), p.add(i)),
                );
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
            let mut sum = _mm512_setzero_ps();
            for i in (0..n).step_by(16) {
                let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask(i), p.add(i)), m));
                let e = _mm512_maskz_mov_ps(mask(i), e);
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(p.add(i), mask(i), e);
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            for i in (0..n).step_by(16) {
                _mm512_mask_storeu_ps(
                    p.add(i),
                    mask(i),
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(i), p.add(i)), inv),
                );
            }
        }
    }

    /// out = silu(g) · u = g / (1 + e^-g) · u
    #[target_feature(enable = "avx512f")]
    pub unsafe fn swiglu(g: &[f32], u: &[f32], out: &mut [f32]) {
        // SAFETY: the caller checked AVX-512 F; every load and store is below `n`, the shortest slice's length.
        unsafe {
            let n = out.len().min(g.len()).min(u.len());
            let mut i = 0;
            let one = _mm512_set1_ps(1.0);
            while i < n {
                let left = n - i;
                let k: __mmask16 = if left >= 16 {
                    0xFFFF
                } else {
                    ((1u32 << left) - 1) as __mmask16
                };
                let gv = _mm512_maskz_loadu_ps(k, g.as_ptr().add(i));
                let uv = _mm512_maskz_loadu_ps(k, u.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
                let s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), k, _mm512_mul_ps(s, uv));
                i += 16;
            }
        }
    }

    /// scores[g][c*16..] = Σ_d q[g][d] · K[d][c*16..] for the 16-key column chunks of one
    /// block whose keys are stored transposed: kt: (head_dim, block_size).
    /// q: (group, head_dim), already scaled; scores rows `ld` apart. Four partial sums per
    /// query (over d mod 4) keep four FMA chains in flight.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores_block(
        q: &[f32],
        group: usize,
        hd: usize,
        kt: *const f32,
        bs: usize,
        scores: *mut f32,
        ld: usize,
    ) {
        // SAFETY: the caller checked AVX-512 F and passes `kt`, `q` and `scores` covering the shapes above (`attention.rs` derives them from the paged cache's block layout).
        unsafe {
            for c in (0..bs).step_by(16) {
                for g in 0..group {
                    let qg = q.as_ptr().add(g * hd);
                    let mut acc = [_mm512_setzero_ps(); 4];
                    let mut d = 0;
                    while d + 4 <= hd {
                        for u in 0..4 {
                            let kv = _mm512_loadu_ps(kt.add((d + u) * bs + c));
                            acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(*qg.add(d + u)), kv, acc[u]);
                        }
                        d += 4;
                    }
                    for dd in d..hd {
                        let kv = _mm512_loadu_ps(kt.add(dd * bs + c));
                        acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(*qg.add(dd)), kv, acc[0]);
                    }
                    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                    _mm512_storeu_ps(scores.add(g * ld + c), sum);
                }
            }
        }
    }

    /// acc[g] += Σ_j p[g][j] · V[j] over `rows` consecutive value rows of one block.
    /// v: (rows, head_dim); p: rows `ld` apart starting at the first of these rows;
    /// acc: (group, head_dim). Each 64-wide slice of a head is four chains in registers.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn values_block(
        v: *const f32,
        rows: usize,
        hd: usize,
        p: *const f32,
        ld: usize,
        group: usize,
        acc: &mut [f32],
    ) {
        // SAFETY: the caller checked AVX-512 F and passes `v`, `p` and `acc` covering the shapes above (`attention.rs` derives them from the paged cache's block layout).
        unsafe {
            for g in 0..group {
                let pg = p.add(g * ld);
                let mut d0 = 0;
                while d0 < hd {
                    let width = (hd - d0).min(64) / 16; // 16-lane chunks in this slice
                    let a = acc.as_mut_ptr().add(g * hd + d0);
                    let mut r = [_mm512_setzero_ps(); 4];
                    for u in 0..width {
                        r[u] = _mm512_loadu_ps(a.add(16 * u));
                    }
                    for j in 0..rows {
                        let w = _mm512_set1_ps(*pg.add(j));
                        for u in 0..width {
                            r[u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v.add(j * hd + d0 + 16 * u)), r[u]);
                        }
                    }
                    for u in 0..width {
                        _mm512_storeu_ps(a.add(16 * u), r[u]);
                    }
                    d0 += 64;
                }
            }
        }
    }
}
