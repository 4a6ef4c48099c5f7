//! Packed weight matrices and `y = x Wᵀ` over them for the CPU backend.
//!
//! Owns: the packed layouts (f32, bf16, q8_0 panels of 16 output columns; q4_k through
//! candle's k-quant matmul), packing and quantising HF `(out, in)` matrices at load time, the
//! driver that splits output panels across the thread team and walks register tiles, the
//! portable scalar kernels, and row lookup (embeddings share the packed lm_head).
//! Must not: allocate per call beyond the caller's `Scratch` growing, or know about layers.

use super::buffer::WeightBuf;
use super::isa::Isa;
use super::kernels::Out;
use super::pool::{share, Pool, SyncPtr};
use super::quant::{self, Q8_BLOCK};
use super::quant4::{self, Q4_BLOCK};
use super::CpuError;

/// How weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    F32,
    Bf16,
    Q8_0,
    Q4K,
}

enum Data {
    F32(WeightBuf<f32>),  // (panels, cols, 16)
    Bf16(WeightBuf<u16>), // (panels, cols/2, 16, 2)
    Q8(WeightBuf<u8>),    // (panels, cols/32, Q8_BLOCK)
    Q4(WeightBuf<u8>),    // (panels, cols/32, Q4_BLOCK)
}

/// A weight matrix of `rows` outputs × `cols` inputs, packed for the kernels.
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    panels: usize,
    data: Data,
}

/// What a packing source wrote for one row.
pub enum SourceRow {
    /// The f32 values are in the row buffer.
    F32,
    /// q8_0 blocks (for a `Q8_0` matrix).
    Q8(quant::Q8Row),
    /// q4_k sub-blocks (for a `Q4K` matrix).
    Q4(quant4::Q4Row),
}

/// A q8_0 panel from its lanes: f32 rows quantised, q8 blocks copied.
fn pack_q8_lanes(panel: &[f32], cols: usize, lanes: &[SourceRow], out: &mut [u8]) -> Result<(), CpuError> {
    for (lane, (src, row)) in lanes.iter().zip(panel.chunks(cols)).enumerate() {
        match src {
            SourceRow::F32 => quant::write_q8_lane(out, lane, &quant::quantize_row(row, cols)),
            SourceRow::Q8(b) => quant::write_q8_lane(out, lane, b),
            SourceRow::Q4(_) => return Err(CpuError::Unsupported("q4_k blocks for a q8_0 matrix".into())),
        }
    }
    Ok(())
}

/// A q4_k panel from its lanes: f32 lanes quantised together (ggml's Q4_K), sub-blocks copied.
fn pack_q4_lanes(panel: &[f32], cols: usize, lanes: &[SourceRow], out: &mut [u8]) -> Result<(), CpuError> {
    if lanes.iter().any(|l| matches!(l, SourceRow::F32)) {
        quant4::pack_q4k_panel(panel, cols, out)?;
    }
    for (lane, src) in lanes.iter().enumerate() {
        match src {
            SourceRow::F32 => {}
            SourceRow::Q4(b) => quant4::write_q4_lane(out, lane, b),
            SourceRow::Q8(_) => return Err(CpuError::Unsupported("q8_0 blocks for a q4_k matrix".into())),
        }
    }
    Ok(())
}

/// Per-call conversions of the activations, kept between calls so they only ever grow.
#[derive(Default)]
pub struct Scratch {
    bf16: Vec<u32>, // (m, cols/2) bf16 pairs
    q8: quant::Q8Acts,
}

impl Format {
    /// Bytes a `(rows, cols)` matrix occupies packed in this format: rows padded to whole
    /// 16-row panels; bf16 pairs, q8_0 and q4_k blocks padded to whole pairs / 32 columns.
    /// (q8_0 packs 32 weights in 36 bytes, 9.0 bits each; q4_k 32 in 20 bytes, 5.0 bits.)
    pub fn packed_bytes(self, rows: usize, cols: usize) -> usize {
        let panels = rows.div_ceil(16);
        match self {
            Format::F32 => panels * cols * 16 * 4,
            Format::Bf16 => panels * cols.div_ceil(2) * 32 * 2,
            Format::Q8_0 => panels * cols.div_ceil(32) * Q8_BLOCK,
            Format::Q4K => panels * cols.div_ceil(32) * Q4_BLOCK,
        }
    }
}

impl PackedMatrix {
    /// Pack a row-major `(rows, cols)` f32 matrix in `format`.
    pub fn pack(w: &[f32], rows: usize, cols: usize, format: Format) -> Result<PackedMatrix, CpuError> {
        debug_assert_eq!(w.len(), rows * cols);
        PackedMatrix::pack_rows(rows, cols, format, |r, out| {
            out.copy_from_slice(&w[r * cols..(r + 1) * cols]);
            Ok(())
        })
    }

    /// Pack a `(rows, cols)` matrix whose rows `row(r, out)` supplies, one 16-row panel at a
    /// time (so loading never holds a full f32 copy of a tensor).
    pub fn pack_rows(
        rows: usize,
        cols: usize,
        format: Format,
        mut row: impl FnMut(usize, &mut [f32]) -> Result<(), CpuError>,
    ) -> Result<PackedMatrix, CpuError> {
        PackedMatrix::pack_source(rows, cols, format, |r, out| row(r, out).map(|()| SourceRow::F32))
    }

    /// `pack_rows` where a row may instead come as blocks already in `format`'s terms (GGUF
    /// blocks repacked without requantizing); blocks of the other quantized format are an error.
    pub fn pack_source(
        rows: usize,
        cols: usize,
        format: Format,
        mut row: impl FnMut(usize, &mut [f32]) -> Result<SourceRow, CpuError>,
    ) -> Result<PackedMatrix, CpuError> {
        let panels = rows.div_ceil(16);
        let (k2, nb) = (cols.div_ceil(2), cols.div_ceil(32));
        let bytes = format.packed_bytes(rows, cols);
        let mut data = match format {
            Format::F32 => Data::F32(WeightBuf::zeroed(bytes / 4)?),
            Format::Bf16 => Data::Bf16(WeightBuf::zeroed(bytes / 2)?),
            Format::Q8_0 => Data::Q8(WeightBuf::zeroed(bytes)?),
            Format::Q4K => Data::Q4(WeightBuf::zeroed(bytes)?),
        };
        let mut panel = vec![0f32; 16 * cols]; // (16, cols)
        let mut lanes: Vec<SourceRow> = Vec::with_capacity(16);
        for p in 0..panels {
            lanes.clear();
            for (lane, dst) in panel.chunks_mut(cols).enumerate() {
                dst.fill(0.0);
                lanes.push(match p * 16 + lane < rows {
                    true => row(p * 16 + lane, dst)?,
                    false => SourceRow::F32,
                });
            }
            match &mut data {
                Data::F32(d) => pack_f32_panel(&panel, cols, &mut d[p * cols * 16..(p + 1) * cols * 16]),
                Data::Bf16(d) => pack_bf16_panel(&panel, cols, &mut d[p * k2 * 32..(p + 1) * k2 * 32]),
                Data::Q8(d) => pack_q8_lanes(&panel, cols, &lanes, &mut d[p * nb * Q8_BLOCK..(p + 1) * nb * Q8_BLOCK])?,
                Data::Q4(d) => pack_q4_lanes(&panel, cols, &lanes, &mut d[p * nb * Q4_BLOCK..(p + 1) * nb * Q4_BLOCK])?,
            }
            if !matches!(data, Data::Q8(_) | Data::Q4(_)) && lanes.iter().any(|l| !matches!(l, SourceRow::F32)) {
                return Err(CpuError::Unsupported(format!(
                    "quantized blocks for a {format:?} matrix"
                )));
            }
        }
        Ok(PackedMatrix {
            rows,
            cols,
            panels,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the packed weights occupy.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(d) => d.len() * 4,
            Data::Bf16(d) => d.len() * 2,
            Data::Q8(d) => d.len(),
            Data::Q4(d) => d.len(),
        }
    }

    /// Row `r` of the matrix as f32 (embedding lookup on a tied lm_head).
    pub fn row(&self, r: usize, out: &mut [f32]) -> Result<(), CpuError> {
        let (p, lane, k) = (r / 16, r % 16, self.cols);
        match &self.data {
            Data::F32(d) => out
                .iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = d[(p * k + i) * 16 + lane]),
            Data::Bf16(d) => {
                let k2 = k.div_ceil(2);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = half::bf16::from_bits(d[((p * k2 + i / 2) * 16 + lane) * 2 + i % 2]).to_f32();
                }
            }
            Data::Q8(d) => quant::q8_row(d, k, p, lane, out),
            Data::Q4(d) => quant4::q4k_row(d, k, p, lane, out),
        }
        Ok(())
    }

    /// y = x Wᵀ (or y += x Wᵀ when `accumulate`). x: (m, cols) → y: (m, rows)
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, pool: &Pool, s: &mut Scratch) {
        self.matmul_with(Isa::get(), x, m, y, accumulate, pool, s)
    }

    /// `matmul` with the kernels `isa` allows (tests compare the portable and vector kernels).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_with(
        &self,
        isa: Isa,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        accumulate: bool,
        pool: &Pool,
        s: &mut Scratch,
    ) {
        assert!(
            x.len() >= m * self.cols && y.len() >= m * self.rows,
            "matmul buffers too small"
        );
        let out = SyncPtr::new(y); // members write disjoint columns
        match &self.data {
            Data::F32(w) => {
                // SAFETY: `drive` hands out tiles inside (m, rows) (this and the arms below);
                // `x` and `y` hold m rows (asserted above) and the packed `w` every panel; tiles
                // are disjoint, so team members never write the same output element.
                self.drive(pool, m, 6, 4, |t| unsafe {
                    t.f32(isa, x, w, self.cols, out, accumulate)
                })
            }
            Data::Bf16(w) => {
                let k2 = self.cols.div_ceil(2);
                s.bf16.resize(m * k2, 0);
                for (src, dst) in x.chunks(self.cols).zip(s.bf16.chunks_mut(k2)).take(m) {
                    isa.to_bf16_pairs(src, dst);
                }
                let xb = &s.bf16;
                // SAFETY: as above; `xb` holds m rows of k2 pairs (resized above).
                self.drive(pool, m, 6, 4, |t| unsafe { t.bf16(isa, xb, w, k2, out, accumulate) })
            }
            Data::Q8(w) => {
                s.q8.quantize(x, m, self.cols);
                let a = &s.q8;
                // SAFETY: as above; `a` holds the m quantised rows.
                self.drive(pool, m, 4, if m == 1 { 4 } else { 2 }, |t| unsafe {
                    t.q8(isa, a, w, out, accumulate)
                })
            }
            Data::Q4(w) => {
                s.q8.quantize(x, m, self.cols);
                let a = &s.q8;
                // SAFETY: as above; `a` holds the m quantised rows.
                self.drive(pool, m, 4, if m == 1 { 4 } else { 2 }, |t| unsafe {
                    t.q4(isa, a, w, out, accumulate)
                })
            }
        }
    }

    /// Split output panels across the team and walk `mr × nr` tiles over each share.
    fn drive(&self, pool: &Pool, m: usize, mr: usize, nr: usize, tile: impl Fn(Tile) + Sync) {
        const MC: usize = 48; // activation rows per pass over a panel group (kept in L2)
        let (rows, panels) = (self.rows, self.panels);
        pool.run(|tid, n| {
            // Whole panels per member, not whole groups of `nr`: 36 panels split 18/18, where
            // groups of 4 would split 16/20. A share's last tile may be narrower.
            let (p_lo, p_hi) = share(panels, tid, n);
            for mc in (0..m).step_by(MC) {
                let m_hi = (mc + MC).min(m);
                for p in (p_lo..p_hi).step_by(nr) {
                    let np = nr.min(p_hi - p);
                    let valid = (rows - (p + np - 1) * 16).min(16);
                    let last_mask = if valid == 16 {
                        0xFFFF
                    } else {
                        ((1u32 << valid) - 1) as u16
                    };
                    for i in (mc..m_hi).step_by(mr) {
                        tile(Tile {
                            i,
                            mr: mr.min(m_hi - i),
                            p,
                            np,
                            ldy: rows,
                            last_mask,
                        });
                    }
                }
            }
        })
    }
}

/// One register tile: activation rows `i..i+mr`, panels `p..p+np`.
struct Tile {
    i: usize,
    mr: usize,
    p: usize,
    np: usize,
    ldy: usize,
    last_mask: u16,
}

/// Call `$f::<MR, NR>$args` for the run-time tile size, from the listed sizes.
macro_rules! tiles {
    ($mr:expr, $np:expr, $f:ident, $args:tt, [$($m:literal),*], $ns:tt) => {
        match $mr { $( $m => tiles!(@cols $np, $f, $args, $m, $ns), )* _ => unreachable!("tile rows") }
    };
    (@cols $np:expr, $f:ident, $args:tt, $m:literal, [$($n:literal),*]) => {
        match $np { $( $n => $f::<$m, $n> $args, )* _ => unreachable!("tile panels") }
    };
}

impl Tile {
    fn out(&self, y: SyncPtr, accumulate: bool) -> Out {
        Out {
            y: y.get().wrapping_add(self.i * self.ldy + self.p * 16),
            ldy: self.ldy,
            last_mask: self.last_mask,
            accumulate,
        }
    }

    unsafe fn f32(&self, isa: Isa, x: &[f32], w: &[f32], k: usize, y: SyncPtr, acc: bool) {
        // SAFETY: the caller (`drive`) passes a tile inside the packed matrix and the activations, and `y` covering the output tile; the kernel branch runs only when `Isa` detected its features.
        unsafe {
            let xp = x.as_ptr().add(self.i * k);
            let wp = w.as_ptr().add(self.p * k * 16);
            #[cfg(target_arch = "x86_64")]
            if isa.avx512() {
                use super::kernels::x86::tile_f32;
                let o = self.out(y, acc);
                return tiles!(
                    self.mr,
                    self.np,
                    tile_f32,
                    (xp, k, wp, k, o),
                    [1, 2, 3, 4, 5, 6],
                    [1, 2, 3, 4]
                );
            }
            let _ = isa;
            scalar_tile(self.mr, self.np, self.out(y, acc), |i, j, lane| {
                (0..k)
                    .map(|kk| *xp.add(i * k + kk) * *wp.add((j * k + kk) * 16 + lane))
                    .sum()
            })
        }
    }

    unsafe fn bf16(&self, isa: Isa, x: &[u32], w: &[u16], k2: usize, y: SyncPtr, acc: bool) {
        // SAFETY: the caller (`drive`) passes a tile inside the packed matrix and the activations, and `y` covering the output tile; the kernel branch runs only when `Isa` detected its features.
        unsafe {
            let xp = x.as_ptr().add(self.i * k2);
            let wp = w.as_ptr().add(self.p * k2 * 32);
            #[cfg(target_arch = "x86_64")]
            if isa.avx512_bf16() {
                use super::kernels::x86::tile_bf16;
                let o = self.out(y, acc);
                return tiles!(
                    self.mr,
                    self.np,
                    tile_bf16,
                    (xp, k2, wp, k2, o),
                    [1, 2, 3, 4, 5, 6],
                    [1, 2, 3, 4]
                );
            }
            let _ = isa;
            let f = |b: u16| half::bf16::from_bits(b).to_f32();
            scalar_tile(self.mr, self.np, self.out(y, acc), |i, j, lane| {
                (0..k2)
                    .map(|kk| {
                        let xv = *xp.add(i * k2 + kk);
                        let wv = wp.add(((j * k2 + kk) * 16 + lane) * 2);
                        f(xv as u16) * f(*wv) + f((xv >> 16) as u16) * f(*wv.add(1))
                    })
                    .sum()
            })
        }
    }

    unsafe fn q8(&self, isa: Isa, a: &quant::Q8Acts, w: &[u8], y: SyncPtr, acc: bool) {
        // SAFETY: the caller (`drive`) passes a tile inside the packed matrix and the activations, and `y` covering the output tile; the kernel branch runs only when `Isa` detected its features.
        unsafe {
            let nb = a.blocks();
            let wp = w.as_ptr().add(self.p * nb * Q8_BLOCK);
            let act = a.at(self.i);
            #[cfg(target_arch = "x86_64")]
            if isa.avx512_vnni() {
                use super::kernels::x86::tile_q8;
                let o = self.out(y, acc);
                return tiles!(self.mr, self.np, tile_q8, (act, wp, nb, o), [1, 2, 3, 4], [1, 2, 3, 4]);
            }
            let _ = isa;
            scalar_tile(self.mr, self.np, self.out(y, acc), |i, j, lane| {
                quant::q8_dot_scalar(act, i, wp.add(j * nb * Q8_BLOCK), nb, lane)
            })
        }
    }

    unsafe fn q4(&self, isa: Isa, a: &quant::Q8Acts, w: &[u8], y: SyncPtr, acc: bool) {
        // SAFETY: the caller (`drive`) passes a tile inside the packed matrix and the activations, and `y` covering the output tile; the kernel branch runs only when `Isa` detected its features.
        unsafe {
            let nb = a.blocks();
            let wp = w.as_ptr().add(self.p * nb * Q4_BLOCK);
            let act = a.at(self.i);
            #[cfg(target_arch = "x86_64")]
            if isa.avx512_vnni() {
                use super::kernels::x86::tile_q4k;
                let o = self.out(y, acc);
                return tiles!(self.mr, self.np, tile_q4k, (act, wp, nb, o), [1, 2, 3, 4], [1, 2, 3, 4]);
            }
            let _ = isa;
            scalar_tile(self.mr, self.np, self.out(y, acc), |i, j, lane| {
                quant4::q4k_dot_scalar(act, i, wp.add(j * nb * Q4_BLOCK), nb, lane)
            })
        }
    }
}

/// The portable tile loop: `f(i, j, lane)` computes one output element.
unsafe fn scalar_tile(mr: usize, np: usize, o: Out, f: impl Fn(usize, usize, usize) -> f32) {
    // SAFETY: the caller's `Out` covers `mr` rows of `np` panels (the last one `last_mask` lanes wide), which is every element written here.
    unsafe {
        for i in 0..mr {
            for j in 0..np {
                let lanes = if j + 1 == np {
                    o.last_mask.count_ones() as usize
                } else {
                    16
                };
                for lane in 0..lanes {
                    let dst = o.y.add(i * o.ldy + j * 16 + lane);
                    let v = f(i, j, lane);
                    *dst = if o.accumulate { *dst + v } else { v };
                }
            }
        }
    }
}

/// One panel (16, cols) → (cols, 16).
fn pack_f32_panel(panel: &[f32], cols: usize, out: &mut [f32]) {
    for (lane, row) in panel.chunks(cols).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            out[k * 16 + lane] = v;
        }
    }
}

/// One panel (16, cols) → (cols/2, 16, 2) bf16 bits, round to nearest even.
fn pack_bf16_panel(panel: &[f32], cols: usize, out: &mut [u16]) {
    for (lane, row) in panel.chunks(cols).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            out[((k / 2) * 16 + lane) * 2 + k % 2] = half::bf16::from_f32(v).to_bits();
        }
    }
}
