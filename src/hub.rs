//! Hugging Face hub downloads for `--model org/name[@revision][/FILE.gguf]`.
//!
//! Owns: parsing a hub spec, the hub settings read from the environment (`HF_ENDPOINT`,
//! `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`), deciding which of a repository's
//! files a model needs, fetching the missing ones through hf-hub's blocking client (progress
//! bar, `.part` files resumed after an interruption, retries) into the standard cache layout,
//! and checking every new file against the hub's ETag (sha256 for LFS files, the git blob
//! sha1 for the rest). A complete cached snapshot is used without touching the network.
//! Must not: parse model files (see `model_dir`, `gguf`, `weights`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use sha2::Digest;

/// `org/name`, an optional `@revision` (branch, tag or commit) and an optional file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSpec {
    pub repo: String,
    pub revision: String,
    /// A GGUF file inside the repository (`org/name/FILE.gguf`).
    pub file: Option<String>,
}

impl HubSpec {
    /// `None` when `spec` does not look like a hub id (then it is a missing local path).
    pub fn parse(spec: &str) -> Option<HubSpec> {
        if spec.starts_with(['.', '/', '~']) || spec.contains('\\') {
            return None;
        }
        let mut parts = spec.split('/');
        let (org, name) = (parts.next()?, parts.next()?);
        let rest: Vec<&str> = parts.collect();
        let (name, revision) = match name.split_once('@') {
            Some((n, r)) if !r.is_empty() => (n, r),
            Some(_) => return None,
            None => (name, "main"),
        };
        let id_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let file = (!rest.is_empty()).then(|| rest.join("/"));
        if !id_ok(org) || !id_ok(name) || file.as_deref().is_some_and(|f| !safe_rel_path(f)) {
            return None;
        }
        if file
            .as_deref()
            .is_some_and(|f| !f.to_ascii_lowercase().ends_with(".gguf"))
        {
            return None;
        }
        Some(HubSpec {
            repo: format!("{org}/{name}"),
            revision: revision.to_string(),
            file,
        })
    }

    fn hf_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }
}

impl std::fmt::Display for HubSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repo)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        match &self.file {
            Some(file) => write!(f, "/{file}"),
            None => Ok(()),
        }
    }
}

/// Where and how to reach the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`, or the token file hf-hub's login writes).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: only the local cache.
    pub offline: bool,
    /// Show a progress bar per file (on a terminal).
    pub progress: bool,
    /// Resumed attempts after an interrupted transfer.
    pub retries: usize,
}

impl HubOptions {
    pub fn from_env() -> HubOptions {
        HubOptions::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The settings from `get(variable)`, so tests need not touch the process environment.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> HubOptions {
        let cache_dir = match (get("HF_HUB_CACHE"), get("HF_HOME")) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => Path::new(&home).join("hub"),
            (None, None) => hf_hub::Cache::default().path().clone(),
        };
        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| hf_hub::Cache::new(cache_dir.clone()).token());
        let truthy = |v: String| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
        HubOptions {
            endpoint: get("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            cache_dir,
            token,
            offline: get("HF_HUB_OFFLINE").is_some_and(truthy),
            progress: true,
            retries: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model `{spec}` is not in the Hugging Face cache at {cache}, and HF_HUB_OFFLINE is set (unset it to download, or fetch it first, e.g. `huggingface-cli download {spec}`)")]
    NotCached { spec: String, cache: String },
    #[error("model `{spec}`: {endpoint} answered {status} for {what}{hint}")]
    Status {
        spec: String,
        endpoint: String,
        status: u16,
        what: String,
        hint: &'static str,
    },
    #[error("model `{spec}`: cannot reach {endpoint} ({message}); set HF_HUB_OFFLINE=1 to use only the local cache at {cache}")]
    Unreachable {
        spec: String,
        endpoint: String,
        message: String,
        cache: String,
    },
    #[error("model `{spec}`: download of `{file}` failed: {message}")]
    Download {
        spec: String,
        file: String,
        message: String,
    },
    #[error("model `{spec}`: downloaded `{file}` does not match the hub's checksum (expected {expected}, got {actual}); the file was removed, run again to re-download")]
    Checksum {
        spec: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("model `{spec}`: {message}")]
    Repository { spec: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A local copy of `spec`: the snapshot directory, or the GGUF file in it.
pub fn fetch(spec: &HubSpec, opts: &HubOptions) -> Result<PathBuf, HubError> {
    if let Some(path) = snapshot_dir(spec, opts).and_then(|dir| complete(&dir, spec)) {
        return Ok(path);
    }
    if opts.offline {
        return Err(HubError::NotCached {
            spec: spec.to_string(),
            cache: opts.cache_dir.display().to_string(),
        });
    }
    let fetcher = Fetcher::new(spec, opts)?;
    let listed = fetcher.list()?;
    match plan(spec, &listed)? {
        Plan::Gguf(file) => fetcher.get(&file),
        Plan::Dir { files, index } => {
            let config = fetcher.get("config.json")?;
            for f in files {
                fetcher.get(&f)?;
            }
            if let Some(index) = index {
                for shard in shards(spec, &fetcher.get(&index)?)? {
                    fetcher.get(&shard)?;
                }
            }
            Ok(config.parent().unwrap_or(Path::new(".")).to_path_buf())
        }
    }
}

/// `refs/<revision>` → `snapshots/<commit>` in the cache, if that exists.
fn snapshot_dir(spec: &HubSpec, opts: &HubOptions) -> Option<PathBuf> {
    let repo_dir = opts.cache_dir.join(format!("models--{}", spec.repo.replace('/', "--")));
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join(&spec.revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if spec.revision.len() == 40 => spec.revision.clone(),
        Err(_) => return None,
    };
    let dir = repo_dir.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// The model in a cached snapshot, if everything it needs is there.
fn complete(dir: &Path, spec: &HubSpec) -> Option<PathBuf> {
    if let Some(file) = &spec.file {
        return dir.join(file).is_file().then(|| dir.join(file));
    }
    if !dir.join("config.json").is_file() {
        let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf")))
            .collect();
        return (ggufs.len() == 1).then(|| ggufs[0].clone());
    }
    let weights_ok = dir.join("model.safetensors").is_file()
        || std::fs::read(dir.join("model.safetensors.index.json"))
            .ok()
            .and_then(|b| shard_names(&b).ok())
            .is_some_and(|names| names.iter().all(|n| dir.join(n).is_file()));
    (weights_ok && dir.join("tokenizer.json").is_file()).then(|| dir.to_path_buf())
}

/// What to download, decided from the repository's file list.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Gguf(String),
    /// `config.json` first, then `files`, then the shards named by `index`.
    Dir {
        files: Vec<String>,
        index: Option<String>,
    },
}

/// The files a Hugging Face layout directory uses besides `config.json` and the weights.
const SIDE_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

fn plan(spec: &HubSpec, listed: &BTreeSet<String>) -> Result<Plan, HubError> {
    let err = |message: String| HubError::Repository {
        spec: spec.to_string(),
        message,
    };
    let ggufs: Vec<&String> = listed
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    if let Some(file) = &spec.file {
        return match listed.contains(file) {
            true => Ok(Plan::Gguf(file.clone())),
            false => Err(err(format!(
                "the repository has no file `{file}` (its GGUF files: {})",
                list(&ggufs)
            ))),
        };
    }
    let safetensors = ["model.safetensors", "model.safetensors.index.json"].map(|f| listed.contains(f));
    if listed.contains("config.json") && safetensors.iter().any(|&x| x) {
        let mut files: Vec<String> = SIDE_FILES
            .iter()
            .filter(|f| listed.contains(**f))
            .map(|f| f.to_string())
            .collect();
        let index = match safetensors {
            [true, _] => {
                files.push("model.safetensors".into());
                None
            }
            _ => Some("model.safetensors.index.json".to_string()),
        };
        return Ok(Plan::Dir { files, index });
    }
    match ggufs.as_slice() {
        [one] => Ok(Plan::Gguf(one.to_string())),
        [] => Err(err(format!(
            "no weights Aisle can load (safetensors or GGUF); the repository has: {}",
            list(&listed.iter().collect::<Vec<_>>())
        ))),
        many => Err(err(format!(
            "it holds {} GGUF files; name one, e.g. `{}/{}` (files: {})",
            many.len(),
            spec.repo,
            many[0],
            list(many)
        ))),
    }
}

fn list(files: &[&String]) -> String {
    match files {
        [] => "none".into(),
        _ => files.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// A relative path that stays inside the snapshot directory.
fn safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The distinct shard files an index names.
fn shard_names(index: &[u8]) -> Result<BTreeSet<String>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::HashMap<String, String>,
    }
    let idx: Index = serde_json::from_slice(index).map_err(|e| e.to_string())?;
    Ok(idx.weight_map.into_values().collect())
}

fn shards(spec: &HubSpec, index: &Path) -> Result<BTreeSet<String>, HubError> {
    let bytes = std::fs::read(index).map_err(|source| HubError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let names = shard_names(&bytes).map_err(|m| HubError::Repository {
        spec: spec.to_string(),
        message: format!("malformed model.safetensors.index.json: {m}"),
    })?;
    match names.iter().find(|n| !safe_rel_path(n)) {
        Some(bad) => Err(HubError::Repository {
            spec: spec.to_string(),
            message: format!("model.safetensors.index.json names shard `{bad}` outside the repository"),
        }),
        None => Ok(names),
    }
}

/// One repository on the hub, through hf-hub's blocking client.
struct Fetcher<'a> {
    spec: &'a HubSpec,
    opts: &'a HubOptions,
    repo: ApiRepo,
    cache: hf_hub::CacheRepo,
}

impl<'a> Fetcher<'a> {
    fn new(spec: &'a HubSpec, opts: &'a HubOptions) -> Result<Fetcher<'a>, HubError> {
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(opts.cache_dir.clone()))
            .with_endpoint(opts.endpoint.clone())
            .with_token(opts.token.clone())
            .with_progress(opts.progress)
            .with_retries(opts.retries)
            .build()
            .map_err(|e| HubError::Unreachable {
                spec: spec.to_string(),
                endpoint: opts.endpoint.clone(),
                message: e.to_string(),
                cache: opts.cache_dir.display().to_string(),
            })?;
        let cache = hf_hub::Cache::new(opts.cache_dir.clone()).repo(spec.hf_repo());
        Ok(Fetcher {
            spec,
            opts,
            repo: api.repo(spec.hf_repo()),
            cache,
        })
    }

    /// The repository's file names (`GET /api/models/{repo}/revision/{rev}`).
    fn list(&self) -> Result<BTreeSet<String>, HubError> {
        let info = guarded(|| self.repo.info()).map_err(|e| self.api_error(e, "the repository listing".into()))?;
        let names: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        match names.iter().find(|n| !safe_rel_path(n)) {
            Some(bad) => Err(HubError::Repository {
                spec: self.spec.to_string(),
                message: format!("the listing names a file `{bad}` outside the repository"),
            }),
            None => Ok(names),
        }
    }

    /// `file` from the cache, or downloaded and checked.
    fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        if let Some(path) = self.cache.get(file) {
            return Ok(path);
        }
        tracing::info!(repo = %self.spec.repo, revision = %self.spec.revision, file, "downloading");
        let path = guarded(|| self.repo.download(file)).map_err(|e| self.api_error(e, format!("`{file}`")))?;
        self.verify(file, &path)?;
        Ok(path)
    }

    /// Compare the file with the ETag its blob is named by; remove it when they differ.
    fn verify(&self, file: &str, pointer: &Path) -> Result<(), HubError> {
        let io = |source| HubError::Io {
            path: pointer.to_path_buf(),
            source,
        };
        let blob = std::fs::canonicalize(pointer).map_err(io)?;
        let expected = blob
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let actual = match expected.len() {
            64 => hash_file(&blob, sha2::Sha256::new(), None).map_err(io)?,
            40 => {
                let len = std::fs::metadata(&blob).map_err(io)?.len();
                hash_file(&blob, sha1::Sha1::new(), Some(format!("blob {len}\0"))).map_err(io)?
            }
            _ => return Ok(()), // not a content hash (e.g. a mirror's own ETag): nothing to check
        };
        if actual == expected {
            return Ok(());
        }
        let _ = std::fs::remove_file(pointer);
        let _ = std::fs::remove_file(&blob);
        Err(HubError::Checksum {
            spec: self.spec.to_string(),
            file: file.to_string(),
            expected,
            actual,
        })
    }

    fn api_error(&self, e: ApiError, what: String) -> HubError {
        let spec = self.spec.to_string();
        match e {
            ApiError::RequestError(boxed) => match *boxed {
                ureq::Error::Status(status, _) => HubError::Status {
                    spec,
                    endpoint: self.opts.endpoint.clone(),
                    status,
                    what,
                    hint: match status {
                        401 | 403 => " (no such local path; on the hub this means a missing, gated or private repository: check the name, or set HF_TOKEN to a token with access)",
                        404 => " (no such local path; on the hub: check the repository name, revision and file name)",
                        _ => "",
                    },
                },
                transport => HubError::Unreachable {
                    spec,
                    endpoint: self.opts.endpoint.clone(),
                    message: transport.to_string(),
                    cache: self.opts.cache_dir.display().to_string(),
                },
            },
            other => HubError::Download {
                spec,
                file: what,
                message: other.to_string(),
            },
        }
    }
}

/// Run an hf-hub call, turning a panic inside it (it unwraps some server headers) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(ApiError::IoError(std::io::Error::other(
            "the hub's reply was malformed (hf-hub panicked on it)",
        )))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex digest of `prefix` then the file, read in chunks (shards can be many GB).
fn hash_file<D: Digest + std::io::Write>(path: &Path, mut h: D, prefix: Option<String>) -> std::io::Result<String> {
    if let Some(p) = prefix {
        Digest::update(&mut h, p.as_bytes());
    }
    std::io::copy(&mut std::io::BufReader::new(std::fs::File::open(path)?), &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Git's object id for a blob: sha1("blob {len}\0" + content), the hub's ETag for non-LFS files.
#[cfg(test)]
fn git_blob_sha1(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
