//! Remote-model fallback and routing: the local model answers what it can, remote
//! OpenAI-compatible backends the rest.
//!
//! Reading order: `config` (the TOML file) → `router` (the pure rules: where a request goes,
//! and why) → `policy` (the one object the server asks before, during and after a local run)
//! → `remote` (the OpenAI client with timeouts and retries) → `retry` (backoff timing) →
//! `breaker` (per-remote circuit breaker). `server/proxy.rs` re-emits remote answers.

pub mod breaker;
pub mod config;
pub mod policy;
pub mod remote;
pub mod retry;
pub mod router;

pub use config::{ConfigFileError, Price, RemoteConfig, RoutingConfig};
pub use policy::{LocalPlan, Policy, Remote, Reroute};
pub use router::{decide, Reason, Route, RouteInput, UnknownModel};

/// The configured remotes, built once at start-up.
pub struct Backends {
    pub cfg: RoutingConfig,
    pub remotes: Vec<remote::RemoteBackend>,
}

impl Backends {
    pub fn new(cfg: RoutingConfig) -> Result<Backends, String> {
        let remotes = cfg
            .remotes
            .iter()
            .cloned()
            .map(remote::RemoteBackend::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Backends { cfg, remotes })
    }

    pub fn remote(&self, name: &str) -> Option<&remote::RemoteBackend> {
        self.remotes.iter().find(|r| r.cfg.name == name)
    }
}
