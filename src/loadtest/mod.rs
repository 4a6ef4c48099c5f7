//! The HTTP load benchmark behind `aisle bench-serve`: N concurrent clients stream
//! `/v1/completions` from a running OpenAI-compatible server with random-token prompts of a
//! chosen length distribution, timing each request (TTFT, every inter-token gap, end-to-end)
//! as `vllm bench serve` does.
//!
//! Reading order: `LoadOptions` → `plan` (the prompts) → `run` (arrivals, concurrency,
//! streaming) → `report` (figures). Must not: start servers or parse command lines.

pub mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

pub use report::BenchReport;

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("invalid benchmark settings: {0}")]
    Settings(String),
    #[error("server {url}: {message}")]
    Server { url: String, message: String },
}

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub num_prompts: usize,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Mean arrivals per second (Poisson); None sends as fast as `concurrency` allows.
    pub request_rate: Option<f64>,
    pub input_len: usize,
    /// Prompt lengths are uniform in `input_len × [1 - spread, 1 + spread]`.
    pub input_spread: f64,
    /// Tokens to generate per request (`max_tokens` with `ignore_eos`).
    pub output_len: usize,
    /// Prompt token ids are drawn uniformly from this range.
    pub token_range: (u32, u32),
    pub seed: u64,
}

/// One request's timings.
#[derive(Debug, Clone, Default)]
pub struct RequestTiming {
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft: Option<Duration>,
    /// Gaps between successive streamed tokens.
    pub itl: Vec<Duration>,
    pub e2e: Duration,
    pub error: Option<String>,
}

/// The prompts: token-id lists with lengths drawn from the options' distribution.
pub fn plan(opts: &LoadOptions) -> Result<Vec<Vec<u32>>, LoadtestError> {
    let (lo, hi) = opts.token_range;
    if lo >= hi {
        return Err(LoadtestError::Settings(format!("empty token range {lo}-{hi}")));
    }
    if !(0.0..1.0).contains(&opts.input_spread) || opts.input_len == 0 {
        return Err(LoadtestError::Settings(
            "--input-len must be at least 1 and --input-spread in [0, 1)".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let spread = (opts.input_len as f64 * opts.input_spread) as usize;
    Ok((0..opts.num_prompts)
        .map(|_| {
            let len = rng.random_range(opts.input_len - spread.min(opts.input_len - 1)..=opts.input_len + spread);
            (0..len).map(|_| rng.random_range(lo..hi)).collect()
        })
        .collect())
}

/// A running server to load.
pub struct Server {
    pub client: reqwest::Client,
    pub base: String,
    pub model: String,
    pub api_key: Option<String>,
}

impl Server {
    /// Connect; `model` defaults to the first id `/v1/models` lists.
    pub async fn connect(url: &str, model: Option<String>, api_key: Option<String>) -> Result<Server, LoadtestError> {
        let target = crate::eval::Target::http(url, model, api_key.clone())
            .await
            .map_err(|e| LoadtestError::Server {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let crate::eval::Target::Http {
            client, base, model, ..
        } = target
        else {
            unreachable!("Target::http builds an HTTP target")
        };
        Ok(Server {
            client,
            base,
            model,
            api_key,
        })
    }

    /// Stream one completion and time it.
    async fn request(&self, prompt: &[u32], output_len: usize) -> RequestTiming {
        let body = json!({
            "model": self.model, "prompt": prompt, "max_tokens": output_len, "temperature": 0,
            "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
        });
        let mut req = self.client.post(format!("{}/v1/completions", self.base)).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let start = Instant::now();
        let mut t = RequestTiming {
            prompt_tokens: prompt.len(),
            ..RequestTiming::default()
        };
        let mut last = start;
        let result = match req.send().await {
            Ok(resp) => crate::sse::read_events(resp, |event| note_event(&event, start, &mut last, &mut t))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        t.e2e = start.elapsed();
        t.error = result.err();
        t
    }
}

/// A streamed chunk with text is one more output token; the usage event gives the counts.
fn note_event(event: &Value, start: Instant, last: &mut Instant, t: &mut RequestTiming) {
    if event["choices"][0]["text"].as_str().is_some_and(|s| !s.is_empty()) {
        let now = Instant::now();
        match t.ttft {
            None => t.ttft = Some(now - start),
            Some(_) => t.itl.push(now - *last),
        }
        *last = now;
    }
    if let Some(n) = event["usage"]["completion_tokens"].as_u64() {
        t.output_tokens = n as usize;
    }
    if let Some(n) = event["usage"]["prompt_tokens"].as_u64() {
        t.prompt_tokens = n as usize;
    }
}

/// Send every prompt (Poisson arrivals at `request_rate`, at most `concurrency` in flight)
/// and collect the timings in prompt order, with the wall time of the whole run.
pub async fn run(server: Arc<Server>, prompts: Vec<Vec<u32>>, opts: &LoadOptions) -> (Vec<RequestTiming>, Duration) {
    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        if let Some(rate) = opts.request_rate {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            tokio::time::sleep(Duration::from_secs_f64(-u.ln() / rate)).await;
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        let (server, output_len) = (server.clone(), opts.output_len);
        tasks.push(tokio::spawn(async move {
            let t = server.request(&prompt, output_len).await;
            drop(permit);
            t
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap_or_else(|e| RequestTiming {
            error: Some(format!("client task failed: {e}")),
            ..RequestTiming::default()
        }));
    }
    (out, start.elapsed())
}
