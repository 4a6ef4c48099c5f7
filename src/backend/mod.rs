//! The execution seam: every backend runs a `Batch` and returns logits through `Executor`.
//!
//! Owns: device selection (`--device cpu|cpu-reference|cpu-static|cuda[:N]|neuron`), the
//! `Executor` trait, and the crate's `#[cfg(feature = ...)]` switches (which backends are
//! compiled in; `neuron/mod.rs` has the only others, gating the libnrt parts).
//! Must not: schedule, sample, or know about requests.

pub mod cpu;
mod cpu_kv;
#[cfg(feature = "cuda")]
pub mod cuda;
mod dynamic;
pub mod kernel_ref;
pub mod neuron;
pub mod static_shape;

use std::path::PathBuf;
use std::str::FromStr;

use candle_core::{DType, Device};

pub use cpu_kv::{new_cpu_kv, CpuPagedKv, KvElem, KvGeometry};
pub use dynamic::ModelExecutor;
pub use static_shape::{BucketPlan, StaticError, StaticExecutor};

use crate::batch::{Batch, BatchError, ExecutorLimits};
use crate::config::Config;
use crate::model::ModelError;
use crate::weights::Weights;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown device `{0}` (expected cpu, cpu-reference, cpu-static, cuda, cuda:N or neuron)")]
    UnknownDevice(String),
    #[error("the `{backend}` backend is not compiled into this binary; compiled-in backends: {compiled}. Rebuild with `cargo build --release --features {backend}`")]
    NotCompiled { backend: &'static str, compiled: String },
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error(transparent)]
    Static(#[from] StaticError),
    #[cfg(feature = "neuron")]
    #[error(transparent)]
    Neuron(#[from] neuron::NeuronError),
    #[error("forward pass failed: {0}")]
    Forward(#[from] candle_core::Error),
}

/// The device a model runs on, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The native CPU backend (packed weights, our kernels).
    Cpu,
    /// The candle-tensor forward pass on CPU: the reference the native backend is checked
    /// against, and what the GPU path runs.
    CpuReference,
    /// The static-shape executor (Neuron's execution model: fixed buckets and KV slots) with
    /// its graphs evaluated on CPU.
    CpuStatic,
    Cuda(usize),
    Neuron,
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cpu-reference" => Ok(DeviceSpec::CpuReference),
            "cpu-static" => Ok(DeviceSpec::CpuStatic),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "neuron" => Ok(DeviceSpec::Neuron),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| BackendError::UnknownDevice(s.to_string())),
        }
    }
}

/// Names of the backends compiled into this binary.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut b = vec!["cpu", "cpu-reference", "cpu-static"];
    if cfg!(feature = "cuda") {
        b.push("cuda");
    }
    if cfg!(feature = "neuron") {
        b.push("neuron");
    }
    b
}

/// In-situ weight quantization at load time (`--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// ggml q8_0 values: blocks of 32 int8 with one scale. Packed with an f32 scale per
    /// block: 9.0 bits per weight (ggml's f16 scale makes 8.5 on disk).
    Q8_0,
    /// ggml q4_K values (4-bit, 6-bit scales and mins per 32), packed per 32 weights with f16
    /// scale and min: 5.0 bits per weight (4.5 in ggml's file); embeddings and lm_head stay
    /// q8_0.
    Q4K,
    /// `none`: every weight dequantized to the run dtype (GGUF files otherwise keep their
    /// block formats; safetensors weights are converted to the run dtype either way).
    Dequantize,
}

impl Quantize {
    /// Whether weights are requantized (only `--device cpu` can).
    pub fn requantizes(q: Option<Quantize>) -> bool {
        matches!(q, Some(Quantize::Q8_0 | Quantize::Q4K))
    }
}

impl FromStr for Quantize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q8_0" => Ok(Quantize::Q8_0),
            "q4_k" | "q4_K" => Ok(Quantize::Q4K),
            "none" => Ok(Quantize::Dequantize),
            other => Err(format!("unknown quantization `{other}` (expected q8_0, q4_k or none)")),
        }
    }
}

/// What an executor needs besides the weights.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub device: DeviceSpec,
    /// Activation / KV dtype (and weight dtype unless `quantize` is set).
    pub dtype: DType,
    pub block_size: usize,
    pub num_blocks: usize,
    pub quantize: Option<Quantize>,
    /// CPU threads (0: `AISLE_THREADS` or one per available core).
    pub threads: usize,
    /// Shapes of the static-shape executor (`cpu-static`).
    pub static_shape: StaticOptions,
    /// The Neuron manifest (default: `<model dir>/neuron/manifest.json`).
    pub neuron_manifest: Option<PathBuf>,
}

/// The bucket plan a `cpu-static` executor compiles (a Neuron model's comes from its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticOptions {
    /// KV slots: sequences held at once.
    pub max_batch: usize,
    /// Positions per slot (0: the model's maximum context).
    pub max_len: usize,
    /// Smallest bucket; buckets double from here up to `max_len`.
    pub min_bucket: usize,
}

impl Default for StaticOptions {
    fn default() -> Self {
        StaticOptions {
            max_batch: 8,
            max_len: 0,
            min_bucket: 16,
        }
    }
}

impl StaticOptions {
    pub fn plan(&self, cfg: &Config) -> Result<BucketPlan, StaticError> {
        let max_len = match self.max_len {
            0 => cfg.max_position_embeddings,
            n => n.min(cfg.max_position_embeddings),
        };
        BucketPlan::powers_of_two(self.max_batch, max_len, self.min_bucket)
    }
}

impl ExecutorOptions {
    /// The KV cache these options give a model of `cfg`.
    pub fn kv_geometry(&self, cfg: &Config) -> KvGeometry {
        KvGeometry {
            num_layers: cfg.num_layers,
            num_blocks: self.num_blocks,
            block_size: self.block_size,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        }
    }

    /// The KV cache's element type: the native CPU backend keeps f32 K/V for every weight
    /// format; the candle path keeps the run dtype.
    pub fn kv_dtype(&self) -> DType {
        match self.device {
            DeviceSpec::Cpu => DType::F32,
            _ => self.dtype,
        }
    }
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            device: DeviceSpec::Cpu,
            dtype: DType::F32,
            block_size: 16,
            num_blocks: 256,
            quantize: None,
            threads: 0,
            static_shape: StaticOptions::default(),
            neuron_manifest: None,
        }
    }
}

/// Logits of one step: `rows` rows of `vocab` f32s, in `Batch::logit_rows` order.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub logits: Vec<f32>, // (rows, vocab)
    pub vocab: usize,
}

impl StepOutput {
    pub fn rows(&self) -> usize {
        self.logits.len() / self.vocab.max(1)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.vocab..(i + 1) * self.vocab]
    }
}

/// One model step on some hardware. The engine thread owns the executor exclusively.
pub trait Executor: Send {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, BackendError>;
    fn kv_geometry(&self) -> KvGeometry;
    fn config(&self) -> &Config;
    fn describe(&self) -> String;
    /// Constraints the scheduler must respect (none for dynamic-shape executors).
    fn limits(&self) -> ExecutorLimits {
        ExecutorLimits::default()
    }
    /// Take a step's output back once the caller is done with it, to reuse its buffer.
    fn recycle(&mut self, _out: StepOutput) {}
}

/// Build the executor for `opts.device`.
pub fn create_executor(
    weights: &Weights,
    cfg: &Config,
    opts: &ExecutorOptions,
) -> Result<Box<dyn Executor>, BackendError> {
    match opts.device {
        DeviceSpec::Cpu => cpu::create(weights, cfg, opts),
        DeviceSpec::CpuReference if Quantize::requantizes(opts.quantize) => Err(BackendError::Cpu(
            cpu::CpuError::Unsupported("--quantize on the cpu-reference device (use --device cpu)".into()),
        )),
        DeviceSpec::CpuReference => Ok(Box::new(ModelExecutor::new(weights, cfg, opts, Device::Cpu)?)),
        DeviceSpec::CpuStatic if Quantize::requantizes(opts.quantize) => Err(BackendError::Cpu(
            cpu::CpuError::Unsupported("--quantize on the cpu-static device (use --device cpu)".into()),
        )),
        DeviceSpec::CpuStatic => {
            let plan = opts.static_shape.plan(cfg)?;
            let model = crate::model::Model::load(weights, cfg, opts.dtype, &Device::Cpu)?;
            let graphs = static_shape::CpuGraphs::new(model, plan);
            Ok(Box::new(StaticExecutor::new(graphs, opts.block_size)))
        }
        DeviceSpec::Cuda(n) => cuda_executor(weights, cfg, opts, n),
        DeviceSpec::Neuron => neuron_executor(cfg, opts),
    }
}

#[cfg(feature = "cuda")]
fn cuda_executor(
    weights: &Weights,
    cfg: &Config,
    opts: &ExecutorOptions,
    n: usize,
) -> Result<Box<dyn Executor>, BackendError> {
    if Quantize::requantizes(opts.quantize) {
        return Err(BackendError::Cpu(cpu::CpuError::Unsupported(
            "--quantize on the cuda device (use --device cpu)".into(),
        )));
    }
    Ok(Box::new(cuda::create(weights, cfg, opts, n)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_executor(_: &Weights, _: &Config, _: &ExecutorOptions, _: usize) -> Result<Box<dyn Executor>, BackendError> {
    Err(not_compiled("cuda"))
}

#[cfg(feature = "neuron")]
fn neuron_executor(cfg: &Config, opts: &ExecutorOptions) -> Result<Box<dyn Executor>, BackendError> {
    let manifest = opts.neuron_manifest.clone().ok_or_else(|| {
        neuron::NeuronError::from(neuron::nrt::NrtError::Invalid("no Neuron manifest path given".into()))
    })?;
    let nopts = neuron::NeuronOptions {
        manifest,
        libnrt: neuron::nrt::candidate_paths(),
        start_nc: -1,
        nc_count: -1,
    };
    let graphs = neuron::NeuronGraphs::load(cfg, &nopts)?;
    Ok(Box::new(StaticExecutor::new(graphs, opts.block_size)))
}

#[cfg(not(feature = "neuron"))]
fn neuron_executor(_: &Config, _: &ExecutorOptions) -> Result<Box<dyn Executor>, BackendError> {
    Err(not_compiled("neuron"))
}

fn not_compiled(backend: &'static str) -> BackendError {
    BackendError::NotCompiled {
        backend,
        compiled: compiled_backends().join(", "),
    }
}
