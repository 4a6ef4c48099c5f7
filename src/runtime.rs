//! Loading a whole model directory: config, generation defaults, tokenizer and weights.
//!
//! Owns: the `LoadedModel` bundle, the choice of run dtype, and the cross-file checks
//! (tokenizer vocabulary vs model vocabulary, stop ids).
//! Must not: run the model; executors are built from it by `backend::create_executor`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::DType;

use crate::backend::{create_executor, BackendError, Executor, ExecutorOptions};
use crate::config::Config;
use crate::model_dir::{self, GenerationConfig, LoadError};
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;

/// Run dtype chosen with `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunDType(pub DType);

impl FromStr for RunDType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "float32" => Ok(RunDType(DType::F32)),
            "bf16" | "bfloat16" => Ok(RunDType(DType::BF16)),
            "f16" | "float16" => Ok(RunDType(DType::F16)),
            _ => Err(format!("unsupported dtype `{s}` (expected f32, bf16 or f16)")),
        }
    }
}

pub struct LoadedModel {
    pub dir: PathBuf,
    pub config: Config,
    pub generation: GenerationConfig,
    pub tokenizer: TextTokenizer,
    pub weights: Weights,
}

impl LoadedModel {
    /// Resolve `spec` (directory or cached `org/name`) and load everything but the tensors,
    /// which stay memory-mapped until an executor is built.
    pub fn load(spec: &str) -> Result<LoadedModel, LoadError> {
        let dir = model_dir::resolve(spec)?;
        LoadedModel::load_dir(&dir)
    }

    pub fn load_dir(dir: &Path) -> Result<LoadedModel, LoadError> {
        let config = model_dir::load_config(dir)?;
        let generation = GenerationConfig::load(dir)?;
        let tokenizer = TextTokenizer::load(dir)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(LoadError::Other(format!(
                "{}: tokenizer has {} tokens but config.json's vocab_size is {}",
                dir.join("tokenizer.json").display(),
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let weights = Weights::open_dir(dir)?;
        Ok(LoadedModel {
            dir: dir.to_path_buf(),
            config,
            generation,
            tokenizer,
            weights,
        })
    }

    /// Token ids that end generation: config.json, generation_config.json and the
    /// tokenizer's eos token, de-duplicated.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids.clone();
        ids.extend(self.generation.eos_token_ids());
        if let Some(id) = self
            .tokenizer
            .eos_token
            .as_deref()
            .and_then(|t| self.tokenizer.token_id(t))
        {
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// KV cache blocks that fit in `mib` MiB for this model at `opts`' dtype and block size
    /// (at least one).
    pub fn kv_blocks_for_mib(&self, opts: &ExecutorOptions, mib: usize) -> usize {
        let c = &self.config;
        let block_bytes =
            2 * c.num_layers * c.num_kv_heads * c.head_dim * opts.kv_dtype().size_in_bytes() * opts.block_size;
        ((mib << 20) / block_bytes.max(1)).max(1)
    }

    pub fn executor(&self, opts: &ExecutorOptions) -> Result<Box<dyn Executor>, BackendError> {
        let mut opts = opts.clone();
        if opts.neuron_manifest.is_none() {
            opts.neuron_manifest = Some(self.dir.join("neuron").join("manifest.json"));
        }
        create_executor(&self.weights, &self.config, &opts)
    }
}
