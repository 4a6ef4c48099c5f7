//! The routing config file (`aisle serve --config aisle.toml`): the local model, remote
//! OpenAI-compatible backends with prices, client-visible aliases, routing rules, and the
//! server's own tools (`[tools]`, defined by `toolbox::ToolsConfig`).
//!
//! Owns: parsing and validating the TOML into `RoutingConfig`, with errors that name the file
//! and the offending key. Must not: open connections or read API keys (only the env var name).

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Price {
    #[serde(default)]
    pub prompt_per_1m: f64,
    #[serde(default)]
    pub completion_per_1m: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.prompt_per_1m + completion_tokens as f64 * self.completion_per_1m) / 1e6
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Model directory or cached `org/name`.
    pub model: String,
    /// Name clients use for the local model (default: the directory name).
    pub name: Option<String>,
    #[serde(default)]
    pub price: Price,
}

fn default_connect_ms() -> u64 {
    2_000
}
fn default_first_byte_ms() -> u64 {
    15_000
}
fn default_total_ms() -> u64 {
    120_000
}
fn default_retries() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub name: String,
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    /// Environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Model name sent to the remote.
    pub model: String,
    #[serde(default)]
    pub price: Price,
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "default_total_ms")]
    pub total_timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Below this mean token log-probability the local answer is discarded.
    #[serde(default = "default_min_logprob")]
    pub min_mean_logprob: f64,
    /// For streaming: decide on this many tokens before anything is sent.
    #[serde(default = "default_decide_tokens")]
    pub stream_decide_tokens: usize,
}

fn default_min_logprob() -> f64 {
    -1.0
}
fn default_decide_tokens() -> usize {
    8
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexConfig {
    /// Prompts longer than this (tokens) are complex.
    pub max_prompt_tokens: Option<usize>,
    /// Case-insensitive words or phrases that mark a question as complex.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) that mark a question as complex.
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRules {
    /// The remote used for overflow, overload, local errors, low confidence and complexity.
    pub fallback: Option<String>,
    /// Route to the fallback when the predicted local wait exceeds this.
    pub max_queue_wait_ms: Option<u64>,
    #[serde(default = "yes")]
    pub context_overflow: bool,
    #[serde(default = "yes")]
    pub on_local_error: bool,
    /// Deadline for local requests; one that expires before answering goes remote
    /// (`local_error`).
    pub local_timeout_ms: Option<u64>,
    #[serde(default)]
    pub cascade: CascadeConfig,
    #[serde(default)]
    pub complex: ComplexConfig,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    local: LocalConfig,
    #[serde(default)]
    remote: Vec<RemoteConfig>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    routing: RoutingRules,
    /// The server's own tools (`toolbox`); checked when the server starts them.
    tools: Option<crate::toolbox::ToolsConfig>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub local: LocalConfig,
    pub remotes: Vec<RemoteConfig>,
    /// Client-visible name → backend name (`local` or a remote's name).
    pub aliases: BTreeMap<String, String>,
    pub rules: RoutingRules,
    pub complex_patterns: Vec<Regex>,
    /// `[tools]`: tools the server runs for its model.
    pub tools: Option<crate::toolbox::ToolsConfig>,
}

impl RoutingConfig {
    pub fn load(path: &Path) -> Result<RoutingConfig, ConfigFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
            path: p.clone(),
            source,
        })?;
        RoutingConfig::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<RoutingConfig, ConfigFileError> {
        let bad = |message: String| ConfigFileError::Invalid {
            path: path.to_string(),
            message,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut names = vec!["local".to_string()];
        for r in &file.remote {
            if names.contains(&r.name) {
                return Err(bad(format!("duplicate backend name `{}`", r.name)));
            }
            if !(r.base_url.starts_with("http://") || r.base_url.starts_with("https://")) {
                return Err(bad(format!(
                    "remote `{}`: base_url must start with http:// or https://",
                    r.name
                )));
            }
            names.push(r.name.clone());
        }
        for (alias, target) in &file.aliases {
            if !names.contains(target) {
                return Err(bad(format!("alias `{alias}` points to unknown backend `{target}`")));
            }
        }
        if let Some(f) = &file.routing.fallback {
            if !file.remote.iter().any(|r| &r.name == f) {
                return Err(bad(format!("routing.fallback `{f}` is not a [[remote]] name")));
            }
        }
        let complex_patterns = file
            .routing
            .complex
            .patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| bad(format!("routing.complex.patterns: `{p}`: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RoutingConfig {
            local: file.local,
            remotes: file.remote,
            aliases: file.aliases,
            rules: file.routing,
            complex_patterns,
            tools: file.tools,
        })
    }

    pub fn remote(&self, name: &str) -> Option<&RemoteConfig> {
        self.remotes.iter().find(|r| r.name == name)
    }
}
