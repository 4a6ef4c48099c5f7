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
use model::CpuModel;

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

/// The weight format for a run dtype and optional quantization. f16 runs keep f32 weights
/// (f16 → f32 is exact; there is no f16 matmul instruction on these CPUs).
pub fn weight_format(dtype: DType, quantize: Option<Quantize>) -> Format {
    match (quantize, dtype) {
        (Some(Quantize::Q8_0), _) => Format::Q8_0,
        (Some(Quantize::Q4K), _) => Format::Q4K,
        (None, DType::BF16) => Format::Bf16,
        (None, _) => Format::F32,
    }
}

/// Bytes of packed weights `--device cpu` holds for this config, dtype and quantization.
pub fn weight_bytes(cfg: &Config, dtype: DType, quantize: Option<Quantize>) -> usize {
    CpuModel::packed_bytes(cfg, weight_format(dtype, quantize))
}

/// Build the CPU executor. Its KV cache is f32 whatever the weights (see `attention.rs`).
pub fn create(weights: &Weights, cfg: &Config, opts: &ExecutorOptions) -> Result<Box<dyn Executor>, BackendError> {
    let format = weight_format(opts.dtype, opts.quantize);
    let model = CpuModel::load(weights, cfg, format)?;
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
            "cpu native ({:?} weights, {:.1} MiB packed; f32 KV; {} threads; {})",
            self.model.format,
            self.model.bytes() as f64 / (1 << 20) as f64,
            self.pool.size(),
            Isa::get().describe()
        )
    }
}

#[cfg(test)]
mod tests;
