//! Where a request goes: the local model or a named remote, with the reason as a label for
//! logs and `aisle:fallback_total{reason}`.
//!
//! Owns: the pure rules from the request (model name, sizes, text) and the local engine's
//! queue state: `requested` (which backend `model` names) and `local_rules` (overflow,
//! complexity, overload), with `decide` composing them; and `Reason`, the names of every
//! route, the runtime ones (`local_error`, `low_confidence`) included. `policy` applies them.
//! Must not: perform I/O.

use super::config::RoutingConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client asked for that backend by name or alias.
    Requested,
    ContextOverflow,
    Overload,
    LocalError,
    LowConfidence,
    Complex,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::ContextOverflow => "context_overflow",
            Reason::Overload => "overload",
            Reason::LocalError => "local_error",
            Reason::LowConfidence => "low_confidence",
            Reason::Complex => "complex",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Run locally; with `cascade`, check confidence before answering.
    Local {
        cascade: bool,
    },
    Remote {
        name: String,
        reason: Reason,
    },
}

/// What the decision looks at.
#[derive(Debug, Clone, Default)]
pub struct RouteInput<'a> {
    pub model: Option<&'a str>,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    pub context: usize,
    /// The text a complexity rule inspects (the last user message or the prompt).
    pub text: &'a str,
    /// Local admission would fail right now.
    pub queue_full: bool,
    pub predicted_wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model `{0}` does not exist")]
pub struct UnknownModel(pub String);

/// Is the question complex by the configured rules?
pub fn is_complex(cfg: &RoutingConfig, input: &RouteInput) -> bool {
    let c = &cfg.rules.complex;
    if c.max_prompt_tokens.is_some_and(|m| input.prompt_tokens > m) {
        return true;
    }
    let lower = input.text.to_lowercase();
    c.keywords
        .iter()
        .any(|k| !k.is_empty() && lower.contains(&k.to_lowercase()))
        || cfg.complex_patterns.iter().any(|p| p.is_match(input.text))
}

/// The backend the request's `model` names: `None` for the local model (no name, its name or
/// `local`), else the remote an alias or a remote's own name points at.
pub fn requested(cfg: &RoutingConfig, local_name: &str, model: Option<&str>) -> Result<Option<String>, UnknownModel> {
    let target = match model {
        None => "local",
        Some(m) if m == local_name || m == "local" => "local",
        Some(m) => match cfg.aliases.get(m) {
            Some(t) => t.as_str(),
            None if cfg.remote(m).is_some() => m,
            None => return Err(UnknownModel(m.to_string())),
        },
    };
    Ok((target != "local").then(|| target.to_string()))
}

/// The rules for a request the local model was asked for: context overflow, complexity and
/// overload send it to the fallback remote.
pub fn local_rules(cfg: &RoutingConfig, input: &RouteInput) -> Route {
    let rules = &cfg.rules;
    let Some(fallback) = rules.fallback.clone() else {
        return Route::Local { cascade: false };
    };
    let remote = |reason| Route::Remote {
        name: fallback.clone(),
        reason,
    };
    if rules.context_overflow && input.prompt_tokens + input.max_tokens > input.context {
        return remote(Reason::ContextOverflow);
    }
    if is_complex(cfg, input) {
        return remote(Reason::Complex);
    }
    let too_slow = rules.max_queue_wait_ms.is_some_and(|m| input.predicted_wait_ms > m);
    if input.queue_full || too_slow {
        return remote(Reason::Overload);
    }
    Route::Local {
        cascade: rules.cascade.enabled,
    }
}

/// The whole decision before the engine: the requested backend, then the local rules.
pub fn decide(cfg: &RoutingConfig, local_name: &str, input: &RouteInput) -> Result<Route, UnknownModel> {
    Ok(match requested(cfg, local_name, input.model)? {
        Some(name) => Route::Remote {
            name,
            reason: Reason::Requested,
        },
        None => local_rules(cfg, input),
    })
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
