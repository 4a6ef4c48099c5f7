//! The figures of a load benchmark, named as `vllm bench serve` names them: request and token
//! throughput, and TTFT / TPOT / ITL / end-to-end latency at mean, p50, p90 and p99.
//!
//! Owns: aggregating `RequestTiming`s and printing them as a table or JSON.
//! Must not: send requests.

use std::time::Duration;

use serde::Serialize;

use super::{LoadOptions, RequestTiming};
use crate::eval::report::{percentiles, Percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub num_prompts: usize,
    pub concurrency: usize,
    pub request_rate: Option<f64>,
    pub completed: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Milliseconds.
    pub ttft_ms: Percentiles,
    /// Time per output token after the first, per request (ms).
    pub tpot_ms: Percentiles,
    /// Every gap between streamed tokens, all requests pooled (ms).
    pub itl_ms: Percentiles,
    pub e2el_ms: Percentiles,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl BenchReport {
    pub fn new(opts: &LoadOptions, timings: &[RequestTiming], duration: Duration) -> BenchReport {
        let ok: Vec<&RequestTiming> = timings.iter().filter(|t| t.error.is_none()).collect();
        let secs = duration.as_secs_f64().max(1e-9);
        let input: usize = ok.iter().map(|t| t.prompt_tokens).sum();
        let output: usize = ok.iter().map(|t| t.output_tokens).sum();
        let tpot = ok
            .iter()
            .filter(|t| t.output_tokens > 1)
            .filter_map(|t| t.ttft.map(|f| ms(t.e2e - f) / (t.output_tokens - 1) as f64))
            .collect();
        BenchReport {
            num_prompts: opts.num_prompts,
            concurrency: opts.concurrency,
            request_rate: opts.request_rate,
            completed: ok.len(),
            failed: timings.len() - ok.len(),
            first_error: timings.iter().find_map(|t| t.error.clone()),
            duration_s: secs,
            total_input_tokens: input,
            total_output_tokens: output,
            request_throughput: ok.len() as f64 / secs,
            output_throughput: output as f64 / secs,
            total_token_throughput: (input + output) as f64 / secs,
            ttft_ms: percentiles(ok.iter().filter_map(|t| t.ttft.map(ms)).collect()),
            tpot_ms: percentiles(tpot),
            itl_ms: percentiles(ok.iter().flat_map(|t| t.itl.iter().copied().map(ms)).collect()),
            e2el_ms: percentiles(ok.iter().map(|t| ms(t.e2e)).collect()),
        }
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let rate = self.request_rate.map_or("inf".to_string(), |r| format!("{r}"));
        let mut s = format!(
            "============ Serving Benchmark Result ============\n\
             {:<34}{:>16}\n{:<34}{:>16}\n{:<34}{:>16}\n{:<34}{:>16}\n{:<34}{:>16.2}\n\
             {:<34}{:>16}\n{:<34}{:>16}\n{:<34}{:>16.2}\n{:<34}{:>16.2}\n{:<34}{:>16.2}\n",
            "Successful requests:",
            self.completed,
            "Failed requests:",
            self.failed,
            "Maximum concurrency:",
            self.concurrency,
            "Request rate (req/s):",
            rate,
            "Benchmark duration (s):",
            self.duration_s,
            "Total input tokens:",
            self.total_input_tokens,
            "Total generated tokens:",
            self.total_output_tokens,
            "Request throughput (req/s):",
            self.request_throughput,
            "Output token throughput (tok/s):",
            self.output_throughput,
            "Total token throughput (tok/s):",
            self.total_token_throughput,
        );
        for (name, p) in [
            ("Time to First Token", &self.ttft_ms),
            ("Time per Output Token (excl. 1st)", &self.tpot_ms),
            ("Inter-token Latency", &self.itl_ms),
            ("End-to-end Latency", &self.e2el_ms),
        ] {
            s += &format!("{:-^50}\n", format!(" {name} "));
            for (label, v) in [("Mean", p.mean), ("P50", p.p50), ("P90", p.p90), ("P99", p.p99)] {
                s += &format!("{:<34}{:>16.2}\n", format!("{label} (ms):"), v);
            }
        }
        s += &"=".repeat(50);
        if let Some(e) = &self.first_error {
            s += &format!("\nfirst error: {e}");
        }
        s
    }
}
