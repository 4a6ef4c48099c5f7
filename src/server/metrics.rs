//! Prometheus metrics with vLLM's meanings under the `aisle:` prefix.
//!
//! Owns: the registry, per-request observations (latencies, lengths, outcomes) and, at scrape
//! time, copying the engine's gauges and cumulative counters (running, waiting, KV usage,
//! prefix cache, preemptions, capped steps) from `EngineStats`.
//! Must not: hold request state.

use std::sync::Mutex;

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::EngineStats;

pub struct Metrics {
    registry: Registry,
    pub e2e_latency: Histogram,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub queue_time: Histogram,
    pub prompt_len: Histogram,
    pub generation_len: Histogram,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub success: IntCounterVec,
    pub failures: IntCounterVec,
    running: IntGauge,
    waiting: IntGauge,
    kv_usage: Gauge,
    cache_queries: IntCounter,
    cache_hits: IntCounter,
    preemptions: IntCounter,
    capped_steps: IntCounter,
    draft_tokens: IntCounter,
    accepted_tokens: IntCounter,
    acceptance: Gauge,
    pub fallback: IntCounterVec,
    pub remote_latency: HistogramVec,
    pub circuit_state: IntGaugeVec,
    pub cost: CounterVec,
    /// Built-in tool calls by tool and outcome (`ok`, `error`, `invalid`), and their latency.
    pub tool_calls: IntCounterVec,
    pub tool_latency: HistogramVec,
    /// Engine counters already copied into the counters above.
    synced: Mutex<EngineStats>,
}

const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TOKENS: [f64; 10] = [1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Builds each metric and registers it. The definitions are constants, so building cannot
/// fail; a failed registration (a duplicate name, a bug) is logged, not fatal.
struct Reg(Registry);

impl Reg {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        if let Err(e) = self.0.register(Box::new(c.clone())) {
            tracing::error!("metric registration failed: {e}");
        }
        c
    }

    fn hist(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric definition"))
    }

    fn hist_vec(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric definition"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric definition"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
    }

    fn float_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        self.add(CounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric definition"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Reg(Registry::new());
        let (s, t) = (&SECONDS[..], &TOKENS[..]);
        Metrics {
            e2e_latency: r.hist("aisle:e2e_request_latency_seconds", "End-to-end request latency", s),
            ttft: r.hist("aisle:time_to_first_token_seconds", "Time to first token", s),
            inter_token: r.hist("aisle:inter_token_latency_seconds", "Time between output tokens", s),
            queue_time: r.hist(
                "aisle:request_queue_time_seconds",
                "Time waiting before the first step",
                s,
            ),
            prompt_len: r.hist("aisle:request_prompt_tokens", "Prompt length of finished requests", t),
            generation_len: r.hist("aisle:request_generation_tokens", "Generated tokens per request", t),
            prompt_tokens: r.counter("aisle:prompt_tokens_total", "Prompt tokens processed"),
            generation_tokens: r.counter("aisle:generation_tokens_total", "Tokens generated"),
            success: r.counter_vec(
                "aisle:request_success_total",
                "Finished requests by finish reason",
                &["finished_reason"],
            ),
            failures: r.counter_vec(
                "aisle:request_failure_total",
                "Failed requests by reason (`cancelled`: the client left first)",
                &["reason"],
            ),
            running: r.gauge("aisle:num_requests_running", "Sequences running"),
            waiting: r.gauge("aisle:num_requests_waiting", "Sequences waiting"),
            kv_usage: r.add(
                Gauge::new("aisle:kv_cache_usage_perc", "Fraction of KV blocks in use (0-1)")
                    .expect("valid metric definition"),
            ),
            cache_queries: r.counter(
                "aisle:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            cache_hits: r.counter(
                "aisle:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
            preemptions: r.counter("aisle:num_preemptions_total", "Sequences preempted"),
            capped_steps: r.counter(
                "aisle:step_prefill_capped_total",
                "Steps whose prompt tokens were cut to keep decodes near the step-time target",
            ),
            draft_tokens: r.counter(
                "aisle:spec_decode_num_draft_tokens_total",
                "Prompt-lookup draft tokens verified (speculative decoding)",
            ),
            accepted_tokens: r.counter(
                "aisle:spec_decode_num_accepted_tokens_total",
                "Draft tokens accepted (each saves one decode step)",
            ),
            acceptance: r.add(
                Gauge::new(
                    "aisle:spec_decode_acceptance_rate",
                    "Accepted over verified draft tokens since start (0-1; 0 before any draft)",
                )
                .expect("valid metric definition"),
            ),
            fallback: r.counter_vec(
                "aisle:fallback_total",
                "Requests sent to a remote, by routing reason",
                &["reason"],
            ),
            remote_latency: r.hist_vec(
                "aisle:remote_request_latency_seconds",
                "Latency of remote requests",
                s,
                &["remote"],
            ),
            circuit_state: r.gauge_vec(
                "aisle:remote_circuit_state",
                "Circuit breaker per remote: 0 closed, 1 open, 2 half-open",
                &["remote"],
            ),
            cost: r.float_counter_vec(
                "aisle:cost_usd_total",
                "Cost of answered requests in USD, by route",
                &["route"],
            ),
            tool_calls: r.counter_vec(
                "aisle:tool_calls_total",
                "Built-in tool calls by tool and outcome",
                &["tool", "outcome"],
            ),
            tool_latency: r.hist_vec(
                "aisle:tool_call_latency_seconds",
                "Latency of built-in tool calls",
                s,
                &["tool"],
            ),
            synced: Mutex::new(EngineStats::default()),
            registry: r.0,
        }
    }

    /// Copy the engine's state in (gauges set, counters advanced by the difference).
    pub fn sync_engine(&self, now: &EngineStats) {
        self.running.set(now.running as i64);
        self.waiting.set(now.waiting as i64);
        let used = now.total_blocks.saturating_sub(now.free_blocks);
        self.kv_usage.set(used as f64 / now.total_blocks.max(1) as f64);
        let Ok(mut last) = self.synced.lock() else { return };
        self.cache_queries
            .inc_by(now.prefix_cache_queries.saturating_sub(last.prefix_cache_queries));
        self.cache_hits
            .inc_by(now.prefix_cache_hits.saturating_sub(last.prefix_cache_hits));
        self.preemptions
            .inc_by(now.preemptions.saturating_sub(last.preemptions));
        self.capped_steps
            .inc_by(now.capped_steps.saturating_sub(last.capped_steps));
        self.draft_tokens
            .inc_by(now.draft_tokens.saturating_sub(last.draft_tokens));
        self.accepted_tokens
            .inc_by(now.accepted_tokens.saturating_sub(last.accepted_tokens));
        self.acceptance
            .set(now.accepted_tokens as f64 / now.draft_tokens.max(1) as f64);
        *last = *now;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
