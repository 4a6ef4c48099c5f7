//! The routing policy: the one object the server asks where a request runs — before the
//! engine (the requested model, context overflow, complexity, overload), while it runs
//! locally (the local deadline, the confidence cascade), and after the local route gave up.
//!
//! Owns: every routing rule the server applies, `LocalPlan` (what a local run must watch
//! for) and `Reroute` (why a local run gave up). Must not: perform I/O, hold request state or
//! know about HTTP; handlers ask and act on the answer.

use std::time::Duration;

use super::config::RoutingConfig;
use super::router::{local_rules, requested, Reason, Route, RouteInput, UnknownModel};
use crate::engine::{EngineError, FinishReason, GenerationRequest};

/// Serve from this remote, for this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub reason: Reason,
}

/// The local route gave up before answering; the policy may send the request elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Reroute {
    /// The answer's mean token logprob was below the cascade threshold.
    LowConfidence(f64),
    /// The local request failed or hit its deadline.
    Failed(String),
}

/// How a request runs locally: what may still send it elsewhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalPlan {
    /// Confidence cascade: (minimum mean token logprob, tokens to judge a stream on).
    cascade: Option<(f64, usize)>,
    /// A failure or the deadline before any answer goes to the fallback.
    reroute_failures: bool,
    timeout: Option<Duration>,
}

/// The server's routing rules, with or without a routing config.
#[derive(Debug, Clone)]
pub struct Policy {
    local_name: String,
    cfg: Option<RoutingConfig>,
}

impl Policy {
    pub fn new(local_name: &str, cfg: Option<RoutingConfig>) -> Policy {
        Policy {
            local_name: local_name.to_string(),
            cfg,
        }
    }

    /// Which backend the request's `model` names: `None` for the local model. Without a
    /// routing config only the served model's name (or none) is accepted.
    pub fn target(&self, model: Option<&str>) -> Result<Option<Remote>, UnknownModel> {
        let Some(cfg) = &self.cfg else {
            return match model {
                Some(m) if m != self.local_name => Err(UnknownModel(m.to_string())),
                _ => Ok(None),
            };
        };
        Ok(requested(cfg, &self.local_name, model)?.map(|name| Remote {
            name,
            reason: Reason::Requested,
        }))
    }

    /// The fallback remote, if one is configured.
    fn fallback(&self, reason: Reason) -> Option<Remote> {
        let name = self.cfg.as_ref()?.rules.fallback.clone()?;
        Some(Remote { name, reason })
    }

    /// A request too long for the local context: the fallback when the rules say so, else
    /// `None` and the client gets the context-length 400.
    pub fn on_context_overflow(&self) -> Option<Remote> {
        self.cfg
            .as_ref()
            .filter(|c| c.rules.context_overflow)
            .and_then(|_| self.fallback(Reason::ContextOverflow))
    }

    /// Before the engine, for a valid local request: complexity and the queue.
    pub fn before(&self, input: &RouteInput) -> Result<LocalPlan, Remote> {
        let Some(cfg) = &self.cfg else {
            return Ok(LocalPlan::default());
        };
        let cascade = match local_rules(cfg, input) {
            Route::Remote { name, reason } => return Err(Remote { name, reason }),
            Route::Local { cascade } => cascade,
        };
        let c = &cfg.rules.cascade;
        let reroute_failures = cfg.rules.on_local_error && cfg.rules.fallback.is_some();
        Ok(LocalPlan {
            cascade: cascade.then_some((c.min_mean_logprob, c.stream_decide_tokens)),
            reroute_failures,
            timeout: cfg
                .rules
                .local_timeout_ms
                .filter(|_| reroute_failures)
                .map(Duration::from_millis),
        })
    }

    /// Local admission was refused (the queue is full): the fallback, or `None` for a 429.
    pub fn on_overload(&self) -> Option<Remote> {
        self.fallback(Reason::Overload)
    }

    /// The local route gave up: where to ask instead, if anywhere.
    pub fn after(&self, why: &Reroute) -> Option<Remote> {
        self.fallback(match why {
            Reroute::LowConfidence(_) => Reason::LowConfidence,
            Reroute::Failed(_) => Reason::LocalError,
        })
    }
}

/// Mean of the logprobs, or `None` without any.
fn mean(lps: impl Iterator<Item = f32>) -> Option<f64> {
    let (sum, n) = lps.fold((0.0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl LocalPlan {
    /// Set what the plan needs on the engine request: the deadline, and per-token logprobs
    /// for the cascade even when the client did not ask for them.
    pub fn prepare(&self, req: &mut GenerationRequest) {
        req.timeout = self.timeout;
        if self.cascade.is_some() {
            req.sampling.logprobs.get_or_insert(0);
        }
    }

    /// Tokens of choice 0 a stream holds back before sending anything: the cascade judges
    /// that many; a reroutable request waits for its first; otherwise none.
    pub fn hold_tokens(&self) -> usize {
        match (self.cascade, self.reroute_failures) {
            (Some((_, n)), _) => n.max(1),
            (None, true) => 1,
            (None, false) => 0,
        }
    }

    /// An engine error before any answer was sent.
    pub fn on_error(&self, e: &EngineError) -> Option<Reroute> {
        self.reroute_failures.then(|| Reroute::Failed(e.to_string()))
    }

    /// A choice ended with `reason` after `tokens` tokens: the deadline (or an error) before
    /// any token is a failure the fallback may answer.
    pub fn on_finish(&self, reason: FinishReason, tokens: usize) -> Option<Reroute> {
        let failed = matches!(reason, FinishReason::Timeout | FinishReason::Error) && tokens == 0;
        (self.reroute_failures && failed).then(|| Reroute::Failed("the local deadline expired".into()))
    }

    /// A whole answer whose choices ended with `reasons`: a deadline anywhere is a failure.
    pub fn on_answer(&self, reasons: impl IntoIterator<Item = Option<FinishReason>>) -> Option<Reroute> {
        let timed_out = reasons.into_iter().any(|r| r == Some(FinishReason::Timeout));
        (self.reroute_failures && timed_out).then(|| Reroute::Failed("the local deadline expired".into()))
    }

    /// The cascade's decision on the logprobs seen so far.
    pub fn judge(&self, logprobs: impl Iterator<Item = f32>) -> Option<Reroute> {
        let (threshold, _) = self.cascade?;
        mean(logprobs).filter(|&m| m < threshold).map(Reroute::LowConfidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) -> RoutingConfig {
        RoutingConfig::parse(toml, "test.toml").unwrap()
    }

    #[test]
    fn without_a_config_only_the_served_name_is_accepted_and_nothing_reroutes() {
        let p = Policy::new("shop", None);
        assert_eq!(p.target(None), Ok(None));
        assert_eq!(p.target(Some("shop")), Ok(None));
        assert_eq!(p.target(Some("gpt")), Err(UnknownModel("gpt".into())));
        assert_eq!(p.on_context_overflow(), None);
        assert_eq!(p.on_overload(), None);
        assert_eq!(p.after(&Reroute::Failed("x".into())), None);
        let plan = p.before(&RouteInput::default()).unwrap();
        assert_eq!(
            (plan.hold_tokens(), plan.on_error(&EngineError::Executor("x".into()))),
            (0, None)
        );
    }

    #[test]
    fn the_plan_carries_deadline_cascade_and_failure_rules() {
        let toml = r#"
[local]
model = "m"
[[remote]]
name = "big"
base_url = "http://127.0.0.1:1/v1"
model = "gpt"
[routing]
fallback = "big"
on_local_error = true
local_timeout_ms = 250
context_overflow = true
[routing.cascade]
enabled = true
min_mean_logprob = -0.5
stream_decide_tokens = 3
"#;
        let p = Policy::new("shop", Some(cfg(toml)));
        let plan = p
            .before(&RouteInput {
                context: 100,
                ..RouteInput::default()
            })
            .unwrap();
        let mut req = GenerationRequest::default();
        plan.prepare(&mut req);
        assert_eq!(req.timeout, Some(Duration::from_millis(250)));
        assert_eq!(req.sampling.logprobs, Some(0));
        assert_eq!(plan.hold_tokens(), 3);
        assert_eq!(
            plan.judge([-1.0f32, -0.5].into_iter()),
            Some(Reroute::LowConfidence(-0.75))
        );
        assert_eq!(plan.judge([-0.1f32].into_iter()), None);
        assert!(plan.on_finish(FinishReason::Timeout, 0).is_some());
        assert!(plan.on_finish(FinishReason::Timeout, 2).is_none());
        let low = p.after(&Reroute::LowConfidence(-2.0)).unwrap();
        assert_eq!((low.name.as_str(), low.reason), ("big", Reason::LowConfidence));
        assert_eq!(p.on_context_overflow().unwrap().reason, Reason::ContextOverflow);
        assert_eq!(p.on_overload().unwrap().reason, Reason::Overload);
    }
}
