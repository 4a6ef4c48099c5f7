//! Which vector instructions the CPU kernels may use, detected once at start-up.
//!
//! Owns: feature detection (`AISLE_CPU_ISA=scalar` forces the portable kernels) and the small
//! vector helpers (dot, axpy, bf16 conversion) that pick a kernel by it.
//! Must not: hold state beyond the detected flags.

use std::sync::OnceLock;

/// Detected instruction sets. The fields are private and only `detect` sets them from
/// `is_x86_feature_detected!`, so holding an `Isa` that says `avx512` proves the CPU has it:
/// the safe helpers below and the kernels' callers rely on that to call
/// `#[target_feature]` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa {
    avx512: bool,
    avx512_bf16: bool,
    avx512_vnni: bool,
}

impl Isa {
    /// The instructions this CPU has (cached).
    pub fn get() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| match std::env::var("AISLE_CPU_ISA").as_deref() {
            Ok("scalar") => Isa::scalar(),
            _ => Isa::detect(),
        })
    }

    /// Portable kernels only.
    pub fn scalar() -> Isa {
        Isa {
            avx512: false,
            avx512_bf16: false,
            avx512_vnni: false,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Isa {
        let avx512 = is_x86_feature_detected!("avx512f");
        Isa {
            avx512,
            avx512_bf16: avx512 && is_x86_feature_detected!("avx512bf16"),
            avx512_vnni: avx512 && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Isa {
        Isa::scalar()
    }

    /// AVX-512 Foundation (f32 kernels, attention, softmax).
    pub fn avx512(&self) -> bool {
        self.avx512
    }

    /// AVX-512 BF16 (`vdpbf16ps`, `vcvtneps2bf16`).
    pub fn avx512_bf16(&self) -> bool {
        self.avx512_bf16
    }

    /// AVX-512 BW + VNNI (`vpdpbusd`, the int8 kernels).
    pub fn avx512_vnni(&self) -> bool {
        self.avx512_vnni
    }

    /// A short description for logs and `inspect`.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if self.avx512 {
            parts.push("avx512f");
        }
        if self.avx512_bf16 {
            parts.push("avx512bf16");
        }
        if self.avx512_vnni {
            parts.push("avx512vnni");
        }
        match parts.is_empty() {
            true => "portable scalar kernels".into(),
            false => parts.join("+"),
        }
    }

    /// f32 → bf16 pairs (round to nearest even); `dst` holds `src.len().div_ceil(2)` u32s.
    pub fn to_bf16_pairs(&self, src: &[f32], dst: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512_bf16 {
            // The kernel writes `src.len().div_ceil(2)` u32s through a raw pointer: a short
            // `dst` must stop here, in release builds too.
            assert!(
                dst.len() >= src.len().div_ceil(2),
                "to_bf16_pairs: {} u32s cannot hold {} values",
                dst.len(),
                src.len()
            );
            // SAFETY: `avx512_bf16` is only set when the CPU has AVX-512 F and BF16 (see
            // `detect`), and `dst` has room for every pair (checked above).
            return unsafe { super::kernels::x86::to_bf16_pairs(src, dst) };
        }
        for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
            let lo = half::bf16::from_f32(pair[0]).to_bits() as u32;
            let hi = pair.get(1).map_or(0, |&v| half::bf16::from_f32(v).to_bits() as u32);
            *d = lo | (hi << 16);
        }
    }

    /// Σ a·b
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: the CPU has AVX-512 F (`detect`); the kernel reads min(len) of each.
            return unsafe { super::kernels::x86::dot(a, b) };
        }
        let mut lanes = [0f32; 16];
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..16 {
                lanes[l] += x[l] * y[l];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    /// out = silu(g) · u
    pub fn swiglu(&self, g: &[f32], u: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: the CPU has AVX-512 F (`detect`); the kernel stays within the shortest
            // of the three slices.
            return unsafe { super::kernels::x86_attn::swiglu(g, u, out) };
        }
        for ((o, &a), &b) in out.iter_mut().zip(g).zip(u) {
            *o = a / (1.0 + (-a).exp()) * b;
        }
    }

    /// y += a · x
    pub fn axpy(&self, a: f32, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            // SAFETY: the CPU has AVX-512 F (`detect`); the kernel stays within min(len).
            return unsafe { super::kernels::x86::axpy(a, x, y) };
        }
        for (o, v) in y.iter_mut().zip(x) {
            *o += a * v;
        }
    }
}
