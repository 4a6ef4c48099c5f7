//! The native CPU backend: our own forward pass on packed weights (f32, bf16, q8_0, q4_k),
//! AVX-512 / AVX512-BF16 / VNNI micro-kernels with portable fallbacks, a paged KV cache read
//! in place, and a team of threads pinned one per core.
//!
//! Owns: `CpuExecutor` (the `Executor` for `--device cpu`) and its error type.
//! Must not: schedule, sample, or use candle tensors on the per-step path (candle is used to
//! read safetensors at load time and for the q4_k matmul only).

mod attention;
mod buffer;
mod forward;
mod ggml_blocks;
mod isa;
mod kernels;
mod matmul;
mod model;
mod pool;
mod profile;
mod quant;
mod quant4;

use candle_core::DType;

pub use isa::Isa;
pub use matmul::{Format, PackedMatrix, Scratch};
pub use pool::{default_threads, Pool};

use super::{BackendError, Executor, ExecutorOptions, KvGeometry, Quantize, StepOutput};
use crate::batch::Batch;
use crate::config::Config;
use crate::weights::{Weights, WeightsError};
use attention::PagedKv;
use forward::Buffers;
use model::{CpuModel, Plan};

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("could not allocate weight memory: {0}")]
    Alloc(#[from] std::io::Error),
    #[error("not supported by the CPU backend: {0}")]
    Unsupported(String),
}

pub struct CpuExecutor {
    model: CpuModel,
    kv: PagedKv,
    bufs: Buffers,
    pool: Pool,
    /// The last step's logits buffer, handed back by `recycle`.
    spare_logits: Vec<f32>,
}

/// Bytes of packed weights `--device cpu` holds for these weights, dtype and quantization.
pub fn weight_bytes(weights: &Weights, cfg: &Config, dtype: DType, quantize: Option<Quantize>) -> usize {
    CpuModel::packed_bytes(weights, cfg, Plan { dtype, quantize })
}

/// "Q4K ×120, Q8_0 ×1": the formats `--device cpu` packs these weights' matrices in.
pub fn weight_formats(weights: &Weights, cfg: &Config, dtype: DType, quantize: Option<Quantize>) -> String {
    crate::weights::describe_counts(&CpuModel::format_counts(weights, cfg, Plan { dtype, quantize }))
}

/// Build the CPU executor. Its KV cache is f32 whatever the weights (see `attention.rs`).
/// f16 runs keep f32 weights (f16 → f32 is exact; these CPUs have no f16 matmul).
pub fn create(weights: &Weights, cfg: &Config, opts: &ExecutorOptions) -> Result<Box<dyn Executor>, BackendError> {
    let plan = Plan {
        dtype: opts.dtype,
        quantize: opts.quantize,
    };
    let model = CpuModel::load(weights, cfg, plan)?;
    let geo = opts.kv_geometry(cfg);
    let threads = if opts.threads == 0 {
        default_threads()
    } else {
        opts.threads
    };
    let pool = Pool::new(threads);
    Ok(Box::new(CpuExecutor::new(model, geo, pool)?))
}

impl CpuExecutor {
    fn new(model: CpuModel, geo: KvGeometry, pool: Pool) -> Result<Self, CpuError> {
        Ok(CpuExecutor {
            model,
            kv: PagedKv::new(geo)?,
            bufs: Buffers::default(),
            pool,
            spare_logits: Vec::new(),
        })
    }
}

impl Drop for CpuExecutor {
    fn drop(&mut self) {
        if let Some(report) = self.bufs.profile.report() {
            eprintln!("{report}");
        }
    }
}

impl Executor for CpuExecutor {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, BackendError> {
        let cfg = &self.model.cfg;
        let geo = self.kv.geometry();
        batch.validate(
            cfg.vocab_size,
            cfg.max_position_embeddings,
            geo.block_size,
            geo.num_blocks,
        )?;
        let mut logits = std::mem::take(&mut self.spare_logits);
        self.model
            .forward(batch, &mut self.kv, &mut self.bufs, &self.pool, &mut logits)?;
        Ok(StepOutput {
            logits,
            vocab: cfg.vocab_size,
        })
    }

    fn kv_geometry(&self) -> KvGeometry {
        self.kv.geometry()
    }

    fn recycle(&mut self, out: StepOutput) {
        self.spare_logits = out.logits;
    }

    fn config(&self) -> &Config {
        &self.model.cfg
    }

    fn describe(&self) -> String {
        format!(
            "cpu native ({} weights, {:.1} MiB packed; f32 KV; {} threads; {})",
            self.model.describe_formats(),
            self.model.bytes() as f64 / (1 << 20) as f64,
            self.pool.size(),
            Isa::get().describe()
        )
    }
}

#[cfg(test)]
mod tests;
