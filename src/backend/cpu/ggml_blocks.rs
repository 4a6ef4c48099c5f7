//! GGUF blocks repacked into the CPU backend's formats without requantizing: Q8_0 and Q5_0
//! become q8_0 blocks (scale `d`, integer values), Q4_0, Q4_1 and Q4_K become q4_k
//! sub-blocks (`scale · q − min`). Every value is the file's, exactly, except Q4_K, whose
//! `d·sc` and `dmin·m` are rounded to f16 as the q4_k panel stores them.
//!
//! Owns: reading those five block layouts (ggml's `block_q8_0`, `block_q5_0`, `block_q4_0`,
//! `block_q4_1`, `block_q4_K`). Must not: pack panels (`quant.rs`, `quant4.rs` do).

use candle_core::quantized::GgmlDType;
use half::f16;

use super::quant::Q8Row;
use super::quant4::{self, Q4Row};

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The row as q8_0 blocks, when `t` maps onto them exactly.
pub fn q8_row(t: GgmlDType, bytes: &[u8]) -> Option<Q8Row> {
    match t {
        GgmlDType::Q8_0 => Some(
            bytes
                .chunks_exact(34)
                .map(|b| (half_at(b, 0), std::array::from_fn(|k| b[2 + k] as i8)))
                .collect(),
        ),
        GgmlDType::Q5_0 => Some(bytes.chunks_exact(22).map(q5_0_block).collect()),
        _ => None,
    }
}

/// ggml `block_q5_0`: f16 d, 32 high bits, 16 bytes of low nibbles; value `d·(q − 16)`.
fn q5_0_block(b: &[u8]) -> (f32, [i8; 32]) {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let q = std::array::from_fn(|k| {
        let nib = if k < 16 { b[6 + k] & 0xF } else { b[6 + k - 16] >> 4 };
        let high = ((qh >> k) & 1) as u8;
        (nib | (high << 4)) as i8 - 16
    });
    (half_at(b, 0), q)
}

/// The row as q4_k sub-blocks, when `t` maps onto them (`cols` values).
pub fn q4_row(t: GgmlDType, bytes: &[u8], cols: usize) -> Option<Q4Row> {
    let nibbles =
        |qs: &[u8]| -> [u8; 32] { std::array::from_fn(|k| if k < 16 { qs[k] & 0xF } else { qs[k - 16] >> 4 }) };
    match t {
        // d·(q − 8) = d·q − 8d
        GgmlDType::Q4_0 => Some(
            bytes
                .chunks_exact(18)
                .map(|b| (half_at(b, 0), 8.0 * half_at(b, 0), nibbles(&b[2..18])))
                .collect(),
        ),
        // d·q + m
        GgmlDType::Q4_1 => Some(
            bytes
                .chunks_exact(20)
                .map(|b| (half_at(b, 0), -half_at(b, 2), nibbles(&b[4..20])))
                .collect(),
        ),
        GgmlDType::Q4K => Some(quant4::decode_row(bytes, cols.div_ceil(32))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// A q4_k sub-block's values as the panel stores them (f16 scale and min).
    fn q4_values(sub: &(f32, f32, [u8; 32])) -> [f32; 32] {
        let (s, m) = (f16::from_f32(sub.0).to_f32(), f16::from_f32(sub.1).to_f32());
        sub.2.map(|q| s * q as f32 - m)
    }

    /// Each repacked block gives back candle's dequantized values exactly (Q4_K up to the
    /// f16 rounding of its effective scales).
    #[test]
    fn repacked_blocks_hold_the_files_values() {
        let cols = 512;
        let w: Vec<f32> = (0..cols).map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0).collect();
        let t = Tensor::from_vec(w, (1, cols), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
        ] {
            let q = QTensor::quantize(&t, dt).unwrap();
            let bytes = q.data().unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got: Vec<f32> = match q8_row(dt, &bytes) {
                Some(b) => b.iter().flat_map(|(d, q)| q.map(|v| v as f32 * d)).collect(),
                None => q4_row(dt, &bytes, cols).unwrap().iter().flat_map(q4_values).collect(),
            };
            let tol = if dt == GgmlDType::Q4K { 2e-3 } else { 0.0 };
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= tol, "{dt:?}: off by {worst}");
        }
    }
}
