//! q8_0 for the CPU backend: quantising weights into the packed panel layout at load time and
//! activations per call, plus the scalar reference dot product.
//!
//! q8_0 is ggml's format: blocks of 32 consecutive inputs share one f32 scale
//! `d = max|w| / 127` and store `round(w / d)` as int8 (ties to even here, away from zero in
//! ggml: they differ only on exact halves). Here each block of a 16-output panel is
//! `Q8_BLOCK` bytes: 8 groups × 16 lanes × 4 inputs as `u8 = q + 128` (so VNNI's unsigned ×
//! signed dot applies), then the 16 lanes' scales. Activations are quantised the same way per
//! row and block, with `128 × Σ q_x` kept to undo the +128 offset.
//! Must not: know about layers or threads.

/// Bytes of one panel block: 512 weight bytes then 16 f32 scales.
pub const Q8_BLOCK: usize = 512 + 64;

/// Quantise one block of up to 32 values: returns the scale, writes the int8 values
/// (zero-padded to 32).
fn quantize_block(v: &[f32], q: &mut [i8]) -> f32 {
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    // Round half to even by the 1.5·2^23 trick (|x·inv| ≤ 127): plain arithmetic that the
    // compiler vectorises, where `f32::round` is a libm call per value.
    const MAGIC: f32 = 12_582_912.0;
    for (i, dst) in q.iter_mut().enumerate().take(32) {
        *dst = v.get(i).map_or(0, |x| ((x * inv + MAGIC) - MAGIC) as i8);
    }
    d
}

/// One output row as q8_0 blocks: a scale and 32 int8 values each (the last zero-padded).
pub type Q8Row = Vec<(f32, [i8; 32])>;

/// Quantise one row of `cols` values into its `cols/32` blocks.
pub fn quantize_row(row: &[f32], cols: usize) -> Q8Row {
    (0..cols.div_ceil(32))
        .map(|b| {
            let mut q = [0i8; 32];
            let d = quantize_block(&row[b * 32..cols.min(b * 32 + 32)], &mut q);
            (d, q)
        })
        .collect()
}

/// Write one lane's blocks into a panel's `cols/32` blocks of `Q8_BLOCK` bytes.
pub fn write_q8_lane(out: &mut [u8], lane: usize, blocks: &[(f32, [i8; 32])]) {
    for (blk, (d, q)) in out.chunks_mut(Q8_BLOCK).zip(blocks) {
        for (k, &qv) in q.iter().enumerate() {
            blk[(k / 4) * 64 + lane * 4 + k % 4] = (qv as i16 + 128) as u8;
        }
        blk[512 + lane * 4..512 + lane * 4 + 4].copy_from_slice(&d.to_le_bytes());
    }
}

/// Dequantise row `16 p + lane` of a packed q8_0 matrix with `cols` inputs.
pub fn q8_row(d: &[u8], cols: usize, p: usize, lane: usize, out: &mut [f32]) {
    let nb = cols.div_ceil(32);
    for (k, o) in out.iter_mut().enumerate().take(cols) {
        let blk = &d[(p * nb + k / 32) * Q8_BLOCK..][..Q8_BLOCK];
        let kk = k % 32;
        let q = blk[(kk / 4) * 64 + lane * 4 + kk % 4] as i32 - 128;
        *o = q as f32 * scale(blk, lane);
    }
}

fn scale(blk: &[u8], lane: usize) -> f32 {
    let s = &blk[512 + lane * 4..512 + lane * 4 + 4];
    f32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

/// Quantised activations of one tile, as the kernels read them.
#[derive(Clone, Copy)]
pub struct Q8Act {
    pub q: *const i8,  // (rows, nb * 32)
    pub ldx: usize,    // nb * 32
    pub d: *const f32, // (rows, nb) scales
    pub c: *const f32, // (rows, nb) 128 × Σ q
    pub lds: usize,    // nb
}

/// Activations quantised per call; the buffers only grow.
#[derive(Default)]
pub struct Q8Acts {
    q: Vec<i8>,
    d: Vec<f32>,
    c: Vec<f32>,
    nb: usize,
}

impl Q8Acts {
    /// Quantise x: (m, cols) in blocks of 32 along each row.
    pub fn quantize(&mut self, x: &[f32], m: usize, cols: usize) {
        let nb = cols.div_ceil(32);
        self.nb = nb;
        self.q.resize(m * nb * 32, 0);
        self.d.resize(m * nb, 0.0);
        self.c.resize(m * nb, 0.0);
        for i in 0..m {
            let row = &x[i * cols..(i + 1) * cols];
            for b in 0..nb {
                let q = &mut self.q[(i * nb + b) * 32..][..32];
                self.d[i * nb + b] = quantize_block(&row[b * 32..cols.min(b * 32 + 32)], q);
                self.c[i * nb + b] = 128.0 * q.iter().map(|&v| v as i32).sum::<i32>() as f32;
            }
        }
    }

    pub fn blocks(&self) -> usize {
        self.nb
    }

    /// The tile view starting at activation row `i`.
    pub fn at(&self, i: usize) -> Q8Act {
        let nb = self.nb;
        Q8Act {
            q: self.q[i * nb * 32..].as_ptr(),
            ldx: nb * 32,
            d: self.d[i * nb..].as_ptr(),
            c: self.c[i * nb..].as_ptr(),
            lds: nb,
        }
    }
}

/// Scalar twin of the VNNI kernel: output `lane` of the panel at `w` for activation row `i`.
///
/// # Safety
/// `a` must cover row `i` and `w` one panel of `nb` blocks.
pub unsafe fn q8_dot_scalar(a: Q8Act, i: usize, w: *const u8, nb: usize, lane: usize) -> f32 {
    // SAFETY: the caller guarantees `a` covers row `i` and `w` one panel of `nb` blocks (see `# Safety`), which bounds every access.
    unsafe {
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = std::slice::from_raw_parts(w.add(b * Q8_BLOCK), Q8_BLOCK);
            let mut dot = 0i32;
            for k in 0..32 {
                let wq = blk[(k / 4) * 64 + lane * 4 + k % 4] as i32;
                dot += wq * *a.q.add(i * a.ldx + b * 32 + k) as i32;
            }
            let f = dot as f32 - *a.c.add(i * a.lds + b);
            acc += f * (scale(blk, lane) * *a.d.add(i * a.lds + b));
        }
        acc
    }
}
