//! Loading a whole model: config, generation defaults, tokenizer and weights, from a Hugging
//! Face directory or from one GGUF file.
//!
//! Owns: the `LoadedModel` bundle, the choice of run dtype, and the cross-file checks
//! (tokenizer vocabulary vs model vocabulary, stop ids).
//! Must not: run the model; executors are built from it by `backend::create_executor`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::DType;

use crate::backend::{create_executor, BackendError, Executor, ExecutorOptions};
use crate::config::Config;
use crate::gguf::GgufFile;
use crate::model_dir::{self, GenerationConfig, LoadError, ModelPath};
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

/// The tokenizer must not produce ids the model has no embedding for.
fn check_vocab(tokenizer: &TextTokenizer, config: &Config, path: &Path) -> Result<(), LoadError> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(LoadError::Other(format!(
            "{}: tokenizer has {} tokens but the model's vocab_size is {}",
            path.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    // A sparse id past the embedding would only fail at the first prompt that uses it.
    if let Some((id, token)) = tokenizer
        .max_token_id()
        .filter(|(id, _)| *id as usize >= config.vocab_size)
    {
        return Err(LoadError::Other(format!(
            "{}: token `{token}` has id {id}, outside the model's vocab_size of {}",
            path.display(),
            config.vocab_size
        )));
    }
    Ok(())
}

pub struct LoadedModel {
    /// The model directory (a GGUF file's parent).
    pub dir: PathBuf,
    /// The GGUF file the model came from, if it did.
    pub gguf: Option<PathBuf>,
    pub config: Config,
    pub generation: GenerationConfig,
    pub tokenizer: TextTokenizer,
    pub weights: Weights,
}

impl LoadedModel {
    /// Resolve `spec` (a path, or a hub id found or fetched with the environment's hub
    /// settings) and load everything but the tensors, which stay memory-mapped until an
    /// executor is built.
    pub fn load(spec: &str) -> Result<LoadedModel, LoadError> {
        LoadedModel::load_with(spec, &crate::hub::HubOptions::from_env())
    }

    /// `load` with explicit hub settings.
    pub fn load_with(spec: &str, hub: &crate::hub::HubOptions) -> Result<LoadedModel, LoadError> {
        match model_dir::resolve_model(spec, hub)? {
            ModelPath::Dir(dir) => LoadedModel::load_dir(&dir),
            ModelPath::Gguf(file) => LoadedModel::load_gguf(&file),
        }
    }

    /// Everything from one GGUF file: config and tokenizer from its metadata, weights mapped.
    pub fn load_gguf(path: &Path) -> Result<LoadedModel, LoadError> {
        let file = GgufFile::open(path)?;
        let mut config = file.config()?;
        let tok = file.tokenizer()?;
        let tokenizer = TextTokenizer::from_json(&tok.json, &tok.config, path)?;
        check_vocab(&tokenizer, &config, path)?;
        let weights = Weights::open_gguf(path, &file.content, &file.layout(&config)?)?;
        weights.check_layers(config.num_layers)?;
        config.apply_rope_factors(&weights)?;
        Ok(LoadedModel {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            gguf: Some(path.to_path_buf()),
            config,
            generation: GenerationConfig::default(),
            tokenizer,
            weights,
        })
    }

    pub fn load_dir(dir: &Path) -> Result<LoadedModel, LoadError> {
        let config = model_dir::load_config(dir)?;
        let generation = GenerationConfig::load(dir)?;
        generation
            .check(config.vocab_size)
            .map_err(|m| LoadError::Other(format!("{}: {m}", dir.join("generation_config.json").display())))?;
        let tokenizer = TextTokenizer::load(dir)?;
        check_vocab(&tokenizer, &config, &dir.join("tokenizer.json"))?;
        let weights = Weights::open_dir(dir)?;
        weights.check_layers(config.num_layers)?;
        Ok(LoadedModel {
            dir: dir.to_path_buf(),
            gguf: None,
            config,
            generation,
            tokenizer,
            weights,
        })
    }

    /// Token ids that end generation: config.json, generation_config.json and the
    /// tokenizer's eos token, de-duplicated.
    /// The tool-call format its chat template writes, if any (what built-in tools need).
    pub fn tool_format(&self) -> Option<crate::tools::ToolFormat> {
        self.tokenizer
            .chat_template_source()
            .and_then(crate::tools::ToolFormat::detect)
    }

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
