//! q4_k for the CPU backend: ggml's Q4_K quantisation (candle's quantiser: 256-weight
//! super-blocks, eight 32-weight sub-blocks with 6-bit scales and mins under f16 `d`/`dmin`),
//! repacked into 16-output panels for the VNNI kernel.
//!
//! A panel block covers 16 lanes × one 32-weight sub-block in `Q4_BLOCK` bytes: 256 bytes of
//! nibbles (byte `g * 64 + lane * 4 + b` holds weight `4g + b` low and `4(g + 4) + b` high,
//! g = 0..4), then the lanes' effective scales `d·sc` and mins `dmin·m` as f16. A weight is
//! `scale · q − min` with q in 0..15, exactly Q4_K's value up to the f16 rounding of `d·sc`
//! (5.0 bits per weight stored, against Q4_K's 4.5).
//! Must not: know about layers or threads.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;

use super::quant::Q8Act;

/// Bytes of one panel block: nibbles, then 16 f16 scales and 16 f16 mins.
pub const Q4_BLOCK: usize = 256 + 64;

const QK_K: usize = 256;
const BLOCK_BYTES: usize = 144; // ggml's block_q4_K: d, dmin (f16), 12 scale bytes, 128 nibble bytes

/// Scale and min indices of sub-block `j` (ggml's get_scale_min_k4).
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    match j < 4 {
        true => (q[j] & 63, q[j + 4] & 63),
        false => (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        ),
    }
}

/// One output row as 32-weight sub-blocks: (scale, min, 32 values in 0..16); a weight is
/// `scale · q − min`.
pub type Q4Row = Vec<(f32, f32, [u8; 32])>;

/// One row of ggml Q4_K blocks' sub-blocks as (scale, min, 32 quantised values).
pub fn decode_row(blocks: &[u8], n_sub: usize) -> Q4Row {
    let mut out = Vec::with_capacity(n_sub);
    for blk in blocks.chunks(BLOCK_BYTES) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let dmin = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
        let (scales, qs) = (&blk[4..16], &blk[16..144]);
        for pair in 0..4 {
            let q = &qs[pair * 32..pair * 32 + 32];
            for half in 0..2 {
                let (sc, m) = scale_min(2 * pair + half, scales);
                let mut v = [0u8; 32];
                for (i, b) in q.iter().enumerate() {
                    v[i] = if half == 0 { b & 0xF } else { b >> 4 };
                }
                out.push((d * sc as f32, dmin * m as f32, v));
            }
        }
    }
    out.truncate(n_sub);
    out
}

/// Quantise one panel (16, cols) to Q4_K (rows zero-padded to whole super-blocks) and pack
/// its `cols/32` blocks of `Q4_BLOCK` bytes.
pub fn pack_q4k_panel(panel: &[f32], cols: usize, out: &mut [u8]) -> Result<(), candle_core::Error> {
    let padded = cols.next_multiple_of(QK_K);
    let mut p = vec![0f32; 16 * padded];
    for (dst, src) in p.chunks_mut(padded).zip(panel.chunks(cols)) {
        dst[..cols].copy_from_slice(src);
    }
    let q = QTensor::quantize(&Tensor::from_vec(p, (16, padded), &Device::Cpu)?, GgmlDType::Q4K)?;
    let data = q.data()?;
    let row_bytes = padded / QK_K * BLOCK_BYTES;
    let nb = cols.div_ceil(32);
    for lane in 0..16 {
        write_q4_lane(
            out,
            lane,
            &decode_row(&data[lane * row_bytes..(lane + 1) * row_bytes], nb),
        );
    }
    Ok(())
}

/// Write one lane's sub-blocks into a panel's `cols/32` blocks of `Q4_BLOCK` bytes.
pub fn write_q4_lane(out: &mut [u8], lane: usize, subs: &[(f32, f32, [u8; 32])]) {
    for (blk, (scale, min, v)) in out.chunks_mut(Q4_BLOCK).zip(subs) {
        for k in 0..16 {
            blk[(k / 4) * 64 + lane * 4 + k % 4] = v[k] | (v[k + 16] << 4);
        }
        blk[256 + lane * 2..256 + lane * 2 + 2].copy_from_slice(&f16::from_f32(*scale).to_le_bytes());
        blk[288 + lane * 2..288 + lane * 2 + 2].copy_from_slice(&f16::from_f32(*min).to_le_bytes());
    }
}

/// Quantised value `k` (0..32) of `lane` in a panel block.
fn nibble(blk: &[u8], lane: usize, k: usize) -> u8 {
    let (g, byte) = ((k % 16) / 4, k % 4);
    let b = blk[g * 64 + lane * 4 + byte];
    if k < 16 {
        b & 0xF
    } else {
        b >> 4
    }
}

fn half_at(blk: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32()
}

/// Dequantise row `16 p + lane` of a packed matrix with `cols` inputs.
pub fn q4k_row(d: &[u8], cols: usize, p: usize, lane: usize, out: &mut [f32]) {
    let nb = cols.div_ceil(32);
    for (k, o) in out.iter_mut().enumerate().take(cols) {
        let blk = &d[(p * nb + k / 32) * Q4_BLOCK..][..Q4_BLOCK];
        let (scale, min) = (half_at(blk, 256 + lane * 2), half_at(blk, 288 + lane * 2));
        *o = scale * nibble(blk, lane, k % 32) as f32 - min;
    }
}

/// Scalar twin of the VNNI kernel: output `lane` of the panel at `w` for activation row `i`.
///
/// # Safety
/// `a` must cover row `i` and `w` one panel of `nb` blocks.
pub unsafe fn q4k_dot_scalar(a: Q8Act, i: usize, w: *const u8, nb: usize, lane: usize) -> f32 {
    // SAFETY: the caller guarantees `a` covers row `i` and `w` one panel of `nb` blocks (see `# Safety`), which bounds every access.
    unsafe {
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = std::slice::from_raw_parts(w.add(b * Q4_BLOCK), Q4_BLOCK);
            let mut dot = 0i32;
            for k in 0..32 {
                dot += nibble(blk, lane, k) as i32 * *a.q.add(i * a.ldx + b * 32 + k) as i32;
            }
            let (scale, min) = (half_at(blk, 256 + lane * 2), half_at(blk, 288 + lane * 2));
            let sum_q = *a.c.add(i * a.lds + b) / 128.0; // Σ q_x of this block
            acc += (dot as f32 * scale - min * sum_q) * *a.d.add(i * a.lds + b);
        }
        acc
    }
}
