//! Flags shared by several subcommands: the model and its device, engine sizing, logging.
//!
//! Owns: `ModelArgs` (which model, on what, how packed), `EngineArgs`, `LogFormat`, the shipped
//! default model's lookup and logging setup. Every enum flag is a typed value parsed once by
//! clap. Must not: run anything.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use aisle::backend::{DeviceSpec, ExecutorOptions, Quantize};
use aisle::engine::{PromptLookup, SchedulerConfig};
use aisle::runtime::{LoadedModel, RunDType};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model: a Hugging Face layout directory, a .gguf file (or a directory holding one), or a
    /// hub id `org/name[@revision][/FILE.gguf]`, downloaded into the HF cache when missing
    /// unless HF_HUB_OFFLINE=1 (default: the shipped models/shop-tiny; `serve --config` may
    /// name it instead).
    #[arg(long)]
    pub model: Option<String>,
    /// Run dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: RunDType,
    /// Device: cpu, cpu-reference (the candle forward pass), cpu-static (the static-shape
    /// executor on CPU), cuda[:N] or neuron (non-CPU backends need their Cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Weight formats at load time: q8_0 or q4_k (requantize every matrix), or none
    /// (dequantize GGUF weights to the run dtype). Unset: safetensors run in the dtype, GGUF
    /// files keep their formats (see the README's GGUF section).
    #[arg(long)]
    pub quantize: Option<Quantize>,
    /// CPU threads (0: AISLE_THREADS, else one per available core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// cpu-static: KV slots, i.e. sequences held at once.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// cpu-static: positions per slot (0: the model's maximum context).
    #[arg(long, default_value_t = 0)]
    pub max_len: usize,
    /// cpu-static: the smallest bucket; buckets double from it up to --max-len.
    #[arg(long, default_value_t = 16)]
    pub min_bucket: usize,
    /// neuron: the model's manifest of compiled NEFFs (default: <model>/neuron/manifest.json).
    #[arg(long)]
    pub neuron_manifest: Option<std::path::PathBuf>,
}

impl ModelArgs {
    /// Executor options from these flags, with the engine's KV block geometry.
    pub fn executor_options(&self, block_size: usize, num_blocks: usize) -> ExecutorOptions {
        ExecutorOptions {
            device: self.device,
            dtype: self.dtype.0,
            block_size,
            num_blocks,
            quantize: self.quantize,
            threads: self.threads,
            static_shape: aisle::backend::StaticOptions {
                max_batch: self.max_batch,
                max_len: self.max_len,
                min_bucket: self.min_bucket,
            },
            neuron_manifest: self.neuron_manifest.clone(),
        }
    }
}

/// Engine sizing shared by `generate` and `serve`.
#[derive(Args)]
pub struct EngineArgs {
    /// KV cache block size in tokens.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Token budget per engine step (prefill chunks + decodes).
    #[arg(long, default_value_t = 512)]
    pub max_batched_tokens: usize,
    /// Most sequences decoding at once.
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// While sequences are decoding, cut each step's prompt tokens so that the step takes about
    /// this long (ms), fitted from measured step times; bounds inter-token latency under load at
    /// some cost in time to first token. 0 turns it off (the full token budget every step).
    #[arg(long, default_value_t = 100)]
    pub step_time_target_ms: u64,
    /// Speculative decoding by prompt lookup: at most this many draft tokens per decode step,
    /// verified in the same forward pass (output unchanged; 0 turns it off). Requests opt out
    /// with `"speculative": false`.
    #[arg(long, default_value_t = 8)]
    pub speculative_tokens: usize,
    /// Longest n-gram of a sequence's latest tokens looked up in its prompt and output.
    #[arg(long, default_value_t = 3)]
    pub prompt_lookup_max: usize,
    /// Shortest n-gram tried when longer ones do not occur.
    #[arg(long, default_value_t = 2)]
    pub prompt_lookup_min: usize,
}

impl EngineArgs {
    pub fn scheduler(&self) -> Result<SchedulerConfig> {
        if self.prompt_lookup_min == 0 || self.prompt_lookup_min > self.prompt_lookup_max {
            anyhow::bail!(
                "--prompt-lookup-min ({}) must be at least 1 and at most --prompt-lookup-max ({})",
                self.prompt_lookup_min,
                self.prompt_lookup_max
            );
        }
        Ok(SchedulerConfig {
            max_batched_tokens: self.max_batched_tokens,
            max_seqs: self.max_seqs,
            step_time_target: (self.step_time_target_ms > 0)
                .then(|| std::time::Duration::from_millis(self.step_time_target_ms)),
            speculation: (self.speculative_tokens > 0).then_some(PromptLookup {
                num_tokens: self.speculative_tokens,
                max_ngram: self.prompt_lookup_max,
                min_ngram: self.prompt_lookup_min,
            }),
        })
    }
}

/// The shipped default model: `models/shop-tiny` under the working directory, else in the
/// source tree this binary was built from.
const DEFAULT_MODEL: &str = "models/shop-tiny";

impl ModelArgs {
    /// `--model`, else the default model directory.
    pub fn spec(&self) -> Result<String> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        let built_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL);
        [std::path::PathBuf::from(DEFAULT_MODEL), built_in]
            .into_iter()
            .find(|p| p.join("config.json").is_file())
            .map(|p| p.display().to_string())
            .with_context(|| {
                format!("no --model given and the default {DEFAULT_MODEL} was not found; give --model DIR")
            })
    }
}

impl ModelArgs {
    /// Load the model directory these flags name.
    pub fn load(&self) -> Result<LoadedModel> {
        Ok(LoadedModel::load(&self.spec()?)?)
    }
}

/// Log to stderr, filtered by `AISLE_LOG` (else `default`).
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AISLE_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}
