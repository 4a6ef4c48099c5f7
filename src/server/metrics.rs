//! Prometheus metrics with vLLM's meanings under the `aisle:` prefix.
//!
//! Owns: the registry, per-request observations (latencies, lengths, outcomes) and, at scrape
//! time, copying the engine's gauges and cumulative counters (running, waiting, KV usage,
//! prefix cache, preemptions) from `EngineStats`.
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

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric definition")
}

const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TOKENS: [f64; 10] = [1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

impl Metrics {
    pub fn new() -> Metrics {
        let s = SECONDS.to_vec();
        let t = TOKENS.to_vec();
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric definition");
        let m = Metrics {
            registry: Registry::new(),
            e2e_latency: hist(
                "aisle:e2e_request_latency_seconds",
                "End-to-end request latency",
                s.clone(),
            ),
            ttft: hist("aisle:time_to_first_token_seconds", "Time to first token", s.clone()),
            inter_token: hist(
                "aisle:inter_token_latency_seconds",
                "Time between output tokens",
                s.clone(),
            ),
            queue_time: hist(
                "aisle:request_queue_time_seconds",
                "Time waiting before the first step",
                s,
            ),
            prompt_len: hist(
                "aisle:request_prompt_tokens",
                "Prompt length of finished requests",
                t.clone(),
            ),
            generation_len: hist("aisle:request_generation_tokens", "Generated tokens per request", t),
            prompt_tokens: counter("aisle:prompt_tokens_total", "Prompt tokens processed"),
            generation_tokens: counter("aisle:generation_tokens_total", "Tokens generated"),
            success: IntCounterVec::new(
                Opts::new("aisle:request_success_total", "Finished requests by finish reason"),
                &["finished_reason"],
            )
            .expect("valid metric definition"),
            failures: IntCounterVec::new(
                Opts::new("aisle:request_failure_total", "Failed requests by reason"),
                &["reason"],
            )
            .expect("valid metric definition"),
            running: IntGauge::new("aisle:num_requests_running", "Sequences running").expect("valid metric definition"),
            waiting: IntGauge::new("aisle:num_requests_waiting", "Sequences waiting").expect("valid metric definition"),
            kv_usage: Gauge::new("aisle:kv_cache_usage_perc", "Fraction of KV blocks in use (0-1)")
                .expect("valid metric definition"),
            cache_queries: counter(
                "aisle:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache",
            ),
            cache_hits: counter(
                "aisle:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache",
            ),
            preemptions: counter("aisle:num_preemptions_total", "Sequences preempted"),
            fallback: IntCounterVec::new(
                Opts::new("aisle:fallback_total", "Requests sent to a remote, by routing reason"),
                &["reason"],
            )
            .expect("valid metric definition"),
            remote_latency: HistogramVec::new(
                HistogramOpts::new("aisle:remote_request_latency_seconds", "Latency of remote requests")
                    .buckets(SECONDS.to_vec()),
                &["remote"],
            )
            .expect("valid metric definition"),
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "aisle:remote_circuit_state",
                    "Circuit breaker per remote: 0 closed, 1 open, 2 half-open",
                ),
                &["remote"],
            )
            .expect("valid metric definition"),
            cost: CounterVec::new(
                Opts::new("aisle:cost_usd_total", "Cost of answered requests in USD, by route"),
                &["route"],
            )
            .expect("valid metric definition"),
            tool_calls: IntCounterVec::new(
                Opts::new("aisle:tool_calls_total", "Built-in tool calls by tool and outcome"),
                &["tool", "outcome"],
            )
            .expect("valid metric definition"),
            tool_latency: HistogramVec::new(
                HistogramOpts::new("aisle:tool_call_latency_seconds", "Latency of built-in tool calls")
                    .buckets(SECONDS.to_vec()),
                &["tool"],
            )
            .expect("valid metric definition"),
            synced: Mutex::new(EngineStats::default()),
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.e2e_latency.clone()),
            Box::new(self.tool_calls.clone()),
            Box::new(self.tool_latency.clone()),
            Box::new(self.ttft.clone()),
            Box::new(self.inter_token.clone()),
            Box::new(self.queue_time.clone()),
            Box::new(self.prompt_len.clone()),
            Box::new(self.generation_len.clone()),
            Box::new(self.prompt_tokens.clone()),
            Box::new(self.generation_tokens.clone()),
            Box::new(self.success.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.running.clone()),
            Box::new(self.waiting.clone()),
            Box::new(self.kv_usage.clone()),
            Box::new(self.cache_queries.clone()),
            Box::new(self.cache_hits.clone()),
            Box::new(self.preemptions.clone()),
            Box::new(self.fallback.clone()),
            Box::new(self.remote_latency.clone()),
            Box::new(self.circuit_state.clone()),
            Box::new(self.cost.clone()),
        ];
        for c in collectors {
            if let Err(e) = self.registry.register(c) {
                tracing::error!("metric registration failed: {e}");
            }
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
