//! `aisle eval`: run a JSON Lines dataset through the server's router in-process (engine and
//! built-in tools included) or against a running server (`--url`), then print accuracy per
//! kind, tool-call validity and rounds, latency percentiles and throughput as a table or JSON.
//!
//! Owns: the command's flags, building the in-process server and writing the outputs.
//! Must not: score or time requests itself (`aisle::eval` does).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use aisle::engine::{Engine, EngineCore};
use aisle::eval::{self, Report, RunOptions, Target};
use aisle::runtime::LoadedModel;
use aisle::server::{AppState, ServerConfig};

use super::args::{EngineArgs, ModelArgs};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON Lines dataset (default: the model directory's eval/heldout.jsonl).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Evaluate a running OpenAI-compatible server at this base URL instead of in-process.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the model name to request (default: the first one the server lists).
    #[arg(long)]
    served_model_name: Option<String>,
    /// With --url: bearer token for the server.
    #[arg(long, env = "AISLE_API_KEY")]
    api_key: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Most tokens per model turn (each round of the tool loop has its own).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the report as JSON (stdout) instead of a table.
    #[arg(long)]
    json: bool,
    /// LLM-as-judge: an OpenAI-compatible base URL whose model grades every answer against the
    /// reference (rubric in `aisle::eval::judge`, verdict via response_format json_schema).
    #[arg(long, requires = "judge_model")]
    judge_url: Option<String>,
    /// The judge's model name.
    #[arg(long, requires = "judge_url")]
    judge_model: Option<String>,
    /// Environment variable holding the judge's API key.
    #[arg(long)]
    judge_api_key_env: Option<String>,
    /// Write every item's output and scores here as JSON Lines.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Exit with status 1 when key-fact accuracy is below this fraction (e.g. 0.9).
    #[arg(long)]
    min_accuracy: Option<f64>,
    /// In-process: the catalog the built-in tools read (default: the model directory's
    /// catalog.json, when it has one and its chat template can call tools).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// In-process: run without built-in tools.
    #[arg(long, conflicts_with = "catalog")]
    no_tools: bool,
    /// KV cache size in MiB (in-process).
    #[arg(long, default_value_t = 128)]
    kv_cache_mb: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The server's router on this process's engine, with the built-in tools.
fn local_app(args: &EvalArgs, model: &LoadedModel) -> Result<(Target, Engine)> {
    let mut opts = args.model.executor_options(args.engine.block_size, 0);
    opts.num_blocks = model.kv_blocks_for_mib(&opts, args.kv_cache_mb);
    let core = EngineCore::new(
        model.executor(&opts)?,
        model.tokenizer.clone(),
        model.eos_token_ids(),
        args.engine.scheduler()?,
    );
    let (served, engine) = aisle::server::start_engine(model, core, std::time::Duration::ZERO, String::new());
    let shipped = model.dir.join("catalog.json");
    let calls_tools = model.tool_format().is_some();
    let catalog = args
        .catalog
        .clone()
        .or_else(|| (calls_tools && shipped.is_file()).then_some(shipped));
    let toolbox = match (catalog, args.no_tools) {
        (Some(c), false) => {
            let cfg = aisle::toolbox::ToolsConfig {
                catalog: Some(c),
                ..Default::default()
            };
            Some(std::sync::Arc::new(aisle::toolbox::Toolbox::new(&cfg)?))
        }
        _ => None,
    };
    let cfg = ServerConfig {
        model_name: "local".into(),
        api_keys: Vec::new(),
        max_waiting: usize::MAX / 2,
        max_body_bytes: 16 << 20,
        body_timeout: std::time::Duration::from_secs(30),
        default_max_tokens: args.max_tokens,
        local_price: Default::default(),
        tool_parser: Default::default(),
        allowed_origins: Vec::new(),
    };
    let state = AppState::with_tools(cfg, None, toolbox);
    state.set_model(served);
    let target = Target::App {
        app: aisle::server::app(state),
        model: "local".into(),
    };
    Ok((target, engine))
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model_dir = args.model.spec()?;
    let dataset = match &args.dataset {
        Some(d) => d.clone(),
        None => PathBuf::from(&model_dir).join("eval").join("heldout.jsonl"),
    };
    let mut items = eval::load(&dataset)?;
    items.truncate(args.limit.unwrap_or(items.len()));
    let opts = RunOptions {
        concurrency: args.concurrency,
        max_tokens: args.max_tokens,
        progress: true,
    };
    let judge = match (&args.judge_url, &args.judge_model) {
        (Some(url), Some(model)) => {
            let key = args.judge_api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
            Some(eval::Judge::new(url, model, key)?)
        }
        _ => None,
    };
    let judge = judge.as_ref();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (results, wall, target_name) = match &args.url {
        Some(url) => {
            let target = rt.block_on(Target::http(url, args.served_model_name.clone(), args.api_key.clone()))?;
            let (results, wall) = rt.block_on(eval::run_judged(&target, &items, &opts, judge));
            (results, wall, url.clone())
        }
        None => {
            let model = LoadedModel::load(&model_dir)?;
            let (target, engine) = local_app(&args, &model)?;
            let (results, wall) = rt.block_on(eval::run_judged(&target, &items, &opts, judge));
            drop(target); // its handle keeps the engine thread alive
            engine.shutdown();
            (results, wall, format!("in-process {}", model.dir.display()))
        }
    };
    let report = Report::new(
        dataset.display().to_string(),
        target_name,
        opts.concurrency,
        &items,
        &results,
        wall,
    );
    write_outputs(&args, &report, &results)?;
    if let Some(floor) = args.min_accuracy {
        if report.key_fact_accuracy < floor {
            anyhow::bail!(
                "key-fact accuracy {:.1}% is below --min-accuracy {:.1}%",
                100.0 * report.key_fact_accuracy,
                100.0 * floor
            );
        }
    }
    Ok(())
}

/// The per-item results file (`--results`) and the report on stdout (table or JSON).
fn write_outputs(args: &EvalArgs, report: &Report, results: &[eval::ItemResult]) -> Result<()> {
    if let Some(path) = &args.results {
        let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for r in results {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        stdout.write_all(report.table().as_bytes())?;
    }
    Ok(())
}
