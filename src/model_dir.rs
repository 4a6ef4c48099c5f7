//! Finding and reading a Hugging Face-layout model directory.
//!
//! Owns: resolving `--model` (a local directory, a `.gguf` file or a directory holding one, or
//! a hub id, which `hub` finds in the cache or downloads), reading `config.json` and
//! `generation_config.json`, and the `LoadError` type that names the file and what is wrong.
//! Must not: build tensors (see `weights`, `model`) or tokenizers (see `tokenizer`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::hub::{HubOptions, HubSpec};
use crate::weights::WeightsError;

/// Everything that can go wrong while loading a model, each naming its file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model `{spec}` not found: no such file or directory, and not a Hugging Face hub id (`org/name`, `org/name@revision` or `org/name/FILE.gguf`)")]
    NotFound { spec: String },
    #[error("{path}: not a model directory or a .gguf file")]
    NotAModel { path: PathBuf },
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error("{path}: required file is missing ({what})")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: bad chat template: {message}")]
    ChatTemplate { path: PathBuf, message: String },
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{0}")]
    Other(String),
}

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPath {
    /// A Hugging Face layout directory (`config.json`, `tokenizer.json`, safetensors).
    Dir(PathBuf),
    /// One GGUF file holding config, tokenizer, chat template and weights.
    Gguf(PathBuf),
}

/// Resolve `spec` to a model: a `.gguf` file; a directory with `config.json`, or else with
/// exactly one `.gguf`; or a hub id, from the cache or downloaded as `hub` describes.
pub fn resolve_model(spec: &str, hub: &HubOptions) -> Result<ModelPath, LoadError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return in_dir(path);
    }
    if path.exists() {
        return match path.extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf")) {
            true => Ok(ModelPath::Gguf(path.to_path_buf())),
            false => Err(LoadError::NotAModel {
                path: path.to_path_buf(),
            }),
        };
    }
    let Some(id) = HubSpec::parse(spec) else {
        return Err(LoadError::NotFound { spec: spec.to_string() });
    };
    let local = crate::hub::fetch(&id, hub)?;
    match local.is_dir() {
        true => in_dir(&local),
        false => Ok(ModelPath::Gguf(local)),
    }
}

/// The model in a directory: its `config.json` layout, or else its one GGUF file.
fn in_dir(dir: &Path) -> Result<ModelPath, LoadError> {
    if !dir.join("config.json").exists() {
        if let Some(file) = crate::gguf::find_in_dir(dir)? {
            return Ok(ModelPath::Gguf(file));
        }
    }
    Ok(ModelPath::Dir(dir.to_path_buf()))
}

/// The largest JSON or template file a model directory may hold (a 256k-token
/// `tokenizer.json` is about 30 MB).
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// A model directory's text file, read only if it is a regular file (a FIFO would block the
/// open, `/dev/zero` behind a symlink would never end) of at most `MAX_TEXT_BYTES`.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_TEXT_BYTES >> 20),
        )
    };
    if meta.len() > MAX_TEXT_BYTES {
        return Err(too_big());
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TEXT_BYTES + 1)
        .read_to_string(&mut text)?;
    match text.len() as u64 > MAX_TEXT_BYTES {
        true => Err(too_big()),
        false => Ok(text),
    }
}

/// Read a required text file, turning "not found" into `MissingFile`.
pub fn read_required(path: &Path, what: &'static str) -> Result<String, LoadError> {
    match read_text(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LoadError::MissingFile {
            path: path.to_path_buf(),
            what,
        }),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read an optional text file: `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, LoadError> {
    match read_text(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Load and resolve `DIR/config.json`.
pub fn load_config(dir: &Path) -> Result<Config, LoadError> {
    let path = dir.join("config.json");
    let text = read_required(&path, "the model's config.json")?;
    Ok(Config::from_json(&text, &path.display().to_string())?)
}

/// `generation_config.json`: default sampling and extra stop ids. Unknown fields ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    pub eos_token_id: Option<Value>,
    pub bos_token_id: Option<Value>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    /// Load `DIR/generation_config.json`, or defaults when the file is absent.
    pub fn load(dir: &Path) -> Result<GenerationConfig, LoadError> {
        let path = dir.join("generation_config.json");
        match read_optional(&path)? {
            None => Ok(GenerationConfig::default()),
            Some(text) => serde_json::from_str(&text).map_err(|source| LoadError::Json { path, source }),
        }
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        crate::config::token_ids(&self.eos_token_id)
    }

    /// Every default in the range its sampler accepts, and the ids inside the vocabulary
    /// (a negative temperature or a top_p of 2 would otherwise change every request).
    pub fn check(&self, vocab: usize) -> Result<(), String> {
        let within = |name: &str, v: Option<f64>, lo: f64, hi: f64| match v {
            Some(x) if !(x.is_finite() && x >= lo && x <= hi) => {
                Err(format!("{name} must be between {lo} and {hi}, found {x}"))
            }
            _ => Ok(()),
        };
        within("temperature", self.temperature, 0.0, f64::MAX)?;
        within("top_p", self.top_p, 0.0, 1.0)?;
        within("min_p", self.min_p, 0.0, 1.0)?;
        if let Some(p) = self.repetition_penalty.filter(|p| !(p.is_finite() && *p > 0.0)) {
            return Err(format!("repetition_penalty must be a positive number, found {p}"));
        }
        if let Some(k) = self.top_k.filter(|k| *k < 0) {
            return Err(format!("top_k must be 0 (off) or more, found {k}"));
        }
        if self.max_new_tokens == Some(0) {
            return Err("max_new_tokens must be at least 1".into());
        }
        crate::config::check_token_ids("bos_token_id", &self.bos_token_id, vocab)?;
        crate::config::check_token_ids("eos_token_id", &self.eos_token_id, vocab)
    }
}
