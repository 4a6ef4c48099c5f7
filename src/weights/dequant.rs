//! One row of GGUF blocks to f32, through candle's block types (`GgmlType::to_float`, the
//! same arithmetic transformers' and llama.cpp's dequantizers use).
//!
//! Owns: reinterpreting mapped bytes as candle's `#[repr(C)]` block structs.
//! Must not: allocate more than one row of blocks or know tensor names.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::GgmlDType;

/// Dequantize `bytes` (whole blocks of type `t`) into `out` (`blocks × block_size` values).
/// Types without a dequantizer here (Q8_1, Q8_K, float types) leave `out` untouched and
/// return false; `Weights::locate` refuses those before this is reached.
pub fn row(t: GgmlDType, bytes: &[u8], out: &mut [f32]) -> bool {
    match t {
        GgmlDType::Q4_0 => blocks::<BlockQ4_0>(bytes, out),
        GgmlDType::Q4_1 => blocks::<BlockQ4_1>(bytes, out),
        GgmlDType::Q5_0 => blocks::<BlockQ5_0>(bytes, out),
        GgmlDType::Q5_1 => blocks::<BlockQ5_1>(bytes, out),
        GgmlDType::Q8_0 => blocks::<BlockQ8_0>(bytes, out),
        GgmlDType::Q2K => blocks::<BlockQ2K>(bytes, out),
        GgmlDType::Q3K => blocks::<BlockQ3K>(bytes, out),
        GgmlDType::Q4K => blocks::<BlockQ4K>(bytes, out),
        GgmlDType::Q5K => blocks::<BlockQ5K>(bytes, out),
        GgmlDType::Q6K => blocks::<BlockQ6K>(bytes, out),
        _ => return false,
    }
    true
}

/// Marker: block structs made only of integers and `f16`s, so any bytes are a valid value.
/// (Q8_K, whose struct holds an f32 and i16s, is plain too but has no `to_float` use here.)
trait PlainBlock: GgmlType {}
impl PlainBlock for BlockQ4_0 {}
impl PlainBlock for BlockQ4_1 {}
impl PlainBlock for BlockQ5_0 {}
impl PlainBlock for BlockQ5_1 {}
impl PlainBlock for BlockQ8_0 {}
impl PlainBlock for BlockQ2K {}
impl PlainBlock for BlockQ3K {}
impl PlainBlock for BlockQ4K {}
impl PlainBlock for BlockQ5K {}
impl PlainBlock for BlockQ6K {}

fn blocks<T: PlainBlock>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<T>();
    let n = bytes.len() / size;
    let mut typed: Vec<T> = vec![T::zeros(); n];
    // SAFETY: `typed` owns `n` initialised blocks, i.e. `n * size` writable bytes, and
    // `bytes` holds at least that many (n = len / size); the regions cannot overlap (one is
    // a fresh allocation). `T: PlainBlock` structs are `#[repr(C)]` integers and f16s only,
    // so any byte pattern written over them is a valid value.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), typed.as_mut_ptr() as *mut u8, n * size);
    }
    T::to_float(&typed, &mut out[..n * T::BLCK_SIZE]);
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Row-by-row dequantization equals candle's whole-tensor dequantization.
    #[test]
    fn rows_equal_candles_tensor_dequantization() {
        let (rows, cols) = (3, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&t, dt).unwrap();
            let data = q.data().unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let row_bytes = data.len() / rows;
            let mut got = vec![0f32; rows * cols];
            for r in 0..rows {
                assert!(super::row(
                    dt,
                    &data[r * row_bytes..(r + 1) * row_bytes],
                    &mut got[r * cols..(r + 1) * cols]
                ));
            }
            assert_eq!(got, want, "{dt:?}");
        }
    }
}
