//! `aisle bench-serve`: load a running OpenAI-compatible server with N concurrent streaming
//! clients and print request/token throughput and TTFT / TPOT / ITL / end-to-end latency
//! percentiles as a table, or JSON (`--json`, `--result-file`).
//!
//! Owns: the command's flags and output. Must not: time requests itself (`aisle::loadtest`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use aisle::loadtest::{self, BenchReport, LoadOptions, Server};

#[derive(Args)]
pub struct BenchServeArgs {
    /// Base URL of the server (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    url: String,
    /// Model name to request (default: the first one the server lists).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Bearer token for the server.
    #[arg(long, env = "AISLE_API_KEY")]
    api_key: Option<String>,
    /// Requests to send.
    #[arg(long, default_value_t = 200)]
    num_prompts: usize,
    /// Most requests in flight at once (clients).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Mean arrival rate in requests/s (Poisson); default: as fast as --concurrency allows.
    #[arg(long)]
    request_rate: Option<f64>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Prompt lengths are uniform in input-len × [1 - spread, 1 + spread].
    #[arg(long, default_value_t = 0.0)]
    input_spread: f64,
    /// Tokens generated per request (max_tokens, with ignore_eos).
    #[arg(long, default_value_t = 64)]
    output_len: usize,
    /// Prompt token ids are drawn uniformly from LO-HI (keep it inside the vocabulary).
    #[arg(long, default_value = "100-1000", value_parser = parse_range)]
    token_range: (u32, u32),
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    result_file: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once('-').ok_or("expected LO-HI, e.g. 100-1000")?;
    let num = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("`{v}`: {e}"));
    Ok((num(a)?, num(b)?))
}

pub fn run(args: BenchServeArgs) -> Result<()> {
    let opts = LoadOptions {
        num_prompts: args.num_prompts,
        concurrency: args.concurrency,
        request_rate: args.request_rate.filter(|r| r.is_finite() && *r > 0.0),
        input_len: args.input_len,
        input_spread: args.input_spread,
        output_len: args.output_len,
        token_range: args.token_range,
        seed: args.seed,
    };
    let prompts = loadtest::plan(&opts)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(async {
        let server = Server::connect(&args.url, args.served_model_name.clone(), args.api_key.clone()).await?;
        let (timings, duration) = loadtest::run(Arc::new(server), prompts, &opts).await;
        Ok::<_, anyhow::Error>(BenchReport::new(&opts, &timings, duration))
    })?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.result_file {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", if args.json { json } else { report.table() });
    if report.completed == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}
