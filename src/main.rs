//! The `aisle` command line: `generate` and `inspect` (more subcommands join as the engine
//! and server land).
//!
//! Owns: argument parsing, logging setup and turning library errors into exit messages
//! (`anyhow` lives here only). Must not: contain model or engine logic.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod cli;

use aisle::backend::{compiled_backends, DeviceSpec, ExecutorOptions, Quantize};
use aisle::chat_template::ChatMessage;
use aisle::engine::{Engine, EngineCore, Event, GenerationRequest, RequestOutput, SchedulerConfig};
use aisle::runtime::{LoadedModel, RunDType};
use aisle::sampling::SamplingParams;

#[derive(Parser)]
#[command(name = "aisle", version, about = "Serve and run small Llama-family models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text for one or more prompts (run concurrently); one prompt streams to stdout.
    Generate(Box<GenerateArgs>),
    /// Print a model's resolved configuration, size and memory footprint.
    Inspect(ModelArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(Box<ServeArgs>),
    /// Score a dataset of chat requests (key-fact accuracy, latency, tokens/s), in-process or
    /// against a running server.
    Eval(Box<cli::eval::EvalArgs>),
    /// Load a running server with concurrent streaming clients; print throughput and TTFT /
    /// inter-token / end-to-end latency percentiles (as `vllm bench serve` does).
    BenchServe(Box<cli::bench_serve::BenchServeArgs>),
    /// Write the Neuron manifest (`manifest.json`: per bucket the NEFF, its sha256 and its
    /// tensors) for a model's compiled NEFFs.
    NeuronManifest(Box<cli::neuron_manifest::NeuronManifestArgs>),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Name clients use in `model` (default: the model directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Accepted API key (repeatable); none means no authentication.
    #[arg(long)]
    api_key: Vec<String>,
    /// File with one API key per line.
    #[arg(long)]
    api_key_file: Option<std::path::PathBuf>,
    /// Requests that may wait beyond the running ones; more get 429.
    #[arg(long, default_value_t = 256)]
    max_waiting: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// max_tokens when a request gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// KV cache size in MiB.
    #[arg(long, default_value_t = 512)]
    kv_cache_mb: usize,
    #[command(flatten)]
    engine: EngineArgs,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Log format: text or json (one JSON object per line).
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Routing config (TOML): local model, remote backends, aliases, routing rules.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Simple fallback without a config file: an OpenAI-compatible base URL (up to /v1).
    #[arg(long)]
    fallback_url: Option<String>,
    /// Model name to request from --fallback-url.
    #[arg(long, default_value = "gpt-4o-mini")]
    fallback_model: String,
    /// Environment variable holding the --fallback-url API key.
    #[arg(long)]
    fallback_api_key_env: Option<String>,
    /// Testing aid: sleep this long after every engine step (simulates a slower device).
    #[arg(long, default_value_t = 0, hide = true)]
    step_delay_ms: u64,
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// Model directory (Hugging Face layout) or `org/name` already in the local HF cache
    /// (default: the shipped models/shop-tiny; `serve --config` may name it instead).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Run dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub(crate) dtype: RunDType,
    /// Device: cpu, cpu-reference (the candle forward pass), cpu-static (the static-shape
    /// executor on CPU), cuda[:N] or neuron (non-CPU backends need their Cargo feature).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Quantize the weights at load time: q8_0 or q4_k (activations stay f32).
    #[arg(long)]
    pub(crate) quantize: Option<aisle::backend::Quantize>,
    /// CPU threads (0: AISLE_THREADS, else one per available core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// cpu-static: KV slots, i.e. sequences held at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) max_batch: usize,
    /// cpu-static: positions per slot (0: the model's maximum context).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_len: usize,
    /// cpu-static: the smallest bucket; buckets double from it up to --max-len.
    #[arg(long, default_value_t = 16)]
    pub(crate) min_bucket: usize,
    /// neuron: the model's manifest of compiled NEFFs (default: <model>/neuron/manifest.json).
    #[arg(long)]
    pub(crate) neuron_manifest: Option<std::path::PathBuf>,
}

impl ModelArgs {
    /// Executor options from these flags, with the engine's KV block geometry.
    pub(crate) fn executor_options(&self, block_size: usize, num_blocks: usize) -> Result<ExecutorOptions> {
        Ok(ExecutorOptions {
            device: self.device.parse()?,
            dtype: self.dtype.0,
            block_size,
            num_blocks,
            quantize: self.quantize,
            threads: self.threads,
            static_shape: aisle::backend::StaticOptions {
                max_batch: self.max_batch,
                max_len: self.max_len,
                min_bucket: self.min_bucket,
            },
            neuron_manifest: self.neuron_manifest.clone(),
        })
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt; repeat for several prompts, which run concurrently through the engine.
    #[arg(long)]
    prompt: Vec<String>,
    /// A file with one prompt per line (added after any --prompt).
    #[arg(long)]
    prompts_file: Option<std::path::PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy. Default: the model's generation_config.json, else greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Stop string (repeatable); not included in the output.
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Engine sizing shared by `generate` and `serve`.
#[derive(Args)]
pub(crate) struct EngineArgs {
    /// KV cache block size in tokens.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Token budget per engine step (prefill chunks + decodes).
    #[arg(long, default_value_t = 512)]
    max_batched_tokens: usize,
    /// Most sequences decoding at once.
    #[arg(long, default_value_t = 64)]
    max_seqs: usize,
}

impl EngineArgs {
    pub(crate) fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            max_batched_tokens: self.max_batched_tokens,
            max_seqs: self.max_seqs,
        }
    }
}

fn init_logging(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AISLE_LOG").unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => {
            init_logging("warn", false);
            run_generate(*args)
        }
        Command::Inspect(args) => {
            init_logging("warn", false);
            run_inspect(args)
        }
        Command::Eval(args) => {
            init_logging("warn", false);
            cli::eval::run(*args)
        }
        Command::BenchServe(args) => {
            init_logging("warn", false);
            cli::bench_serve::run(*args)
        }
        Command::NeuronManifest(args) => {
            init_logging("warn", false);
            cli::neuron_manifest::run(*args)
        }
        Command::Serve(args) => {
            init_logging("warn,aisle=info", args.log_format == "json");
            run_serve(*args)
        }
    };
    if let Err(e) = result {
        // A reader that closed our stdout (`aisle inspect | head`) is a normal end, not an error.
        let closed_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe);
        if !closed_pipe {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The shipped default model: `models/shop-tiny` under the working directory, else in the
/// source tree this binary was built from.
const DEFAULT_MODEL: &str = "models/shop-tiny";

impl ModelArgs {
    /// `--model`, else the default model directory.
    pub(crate) fn spec(&self) -> Result<String> {
        if let Some(m) = &self.model {
            return Ok(m.clone());
        }
        let built_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL);
        [std::path::PathBuf::from(DEFAULT_MODEL), built_in]
            .into_iter()
            .find(|p| p.join("config.json").is_file())
            .map(|p| p.display().to_string())
            .with_context(|| {
                format!("no --model given and the default {DEFAULT_MODEL} was not found; give --model DIR")
            })
    }
}

fn load(args: &ModelArgs) -> Result<(LoadedModel, DeviceSpec)> {
    let device: DeviceSpec = args.device.parse()?;
    let model = LoadedModel::load(&args.spec()?)?;
    Ok((model, device))
}

/// Sampling parameters: flags first, then generation_config.json, then greedy.
fn sampling(args: &GenerateArgs, model: &LoadedModel) -> SamplingParams {
    let g = &model.generation;
    let sampled = g.do_sample.unwrap_or(false);
    let default_temp = if sampled {
        g.temperature.unwrap_or(1.0) as f32
    } else {
        0.0
    };
    SamplingParams {
        temperature: args.temperature.unwrap_or(default_temp),
        top_p: args
            .top_p
            .unwrap_or(if sampled { g.top_p.unwrap_or(1.0) as f32 } else { 1.0 }),
        top_k: args.top_k.unwrap_or(if sampled {
            g.top_k.unwrap_or(0).max(0) as usize
        } else {
            0
        }),
        seed: args.seed,
        ..SamplingParams::default()
    }
}

/// All prompts: `--prompt` values, then the lines of `--prompts-file`.
fn prompts(args: &GenerateArgs) -> Result<Vec<String>> {
    let mut all = args.prompt.clone();
    if let Some(path) = &args.prompts_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        all.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if all.is_empty() {
        anyhow::bail!("give at least one --prompt or a --prompts-file");
    }
    Ok(all)
}

fn encode(model: &LoadedModel, args: &GenerateArgs, text: &str) -> Result<Vec<u32>> {
    let tok = &model.tokenizer;
    if !args.chat {
        return Ok(tok.encode(text, true)?);
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", text));
    Ok(tok.encode_chat(&messages)?)
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let (model, device) = load(&args.model)?;
    let texts = prompts(&args)?;
    let encoded = texts
        .iter()
        .map(|t| encode(&model, &args, t))
        .collect::<Result<Vec<_>>>()?;
    let context = model.config.max_position_embeddings;
    let tokens: usize = encoded.iter().map(|p| (p.len() + args.max_tokens).min(context)).sum();
    let blocks = tokens.div_ceil(args.engine.block_size) + encoded.len();
    let mut opts = args.model.executor_options(args.engine.block_size, blocks)?;
    opts.device = device;
    let sched = args.engine.scheduler();
    let core = EngineCore::new(
        model.executor(&opts)?,
        model.tokenizer.clone(),
        model.eos_token_ids(),
        sched,
    );
    let engine = Engine::spawn(core);
    let start = std::time::Instant::now();
    let streams = encoded
        .iter()
        .map(|prompt| {
            let req = GenerationRequest {
                prompt: prompt.clone(),
                sampling: sampling(&args, &model),
                max_tokens: args.max_tokens,
                stop: args.stop.clone(),
                ignore_eos: args.ignore_eos,
                ..GenerationRequest::default()
            };
            engine.handle().submit(req)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut stdout = std::io::stdout().lock();
    let mut generated = 0;
    let single = streams.len() == 1;
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut out = RequestOutput::default();
        if !single {
            writeln!(stdout, "=== prompt {} ===", i + 1)?;
        }
        while let Some(event) = stream.blocking_next() {
            if let Event::Token { text, .. } | Event::Finished { text, .. } = &event {
                if single {
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
            }
            out.apply(event).map_err(anyhow::Error::msg)?;
        }
        let choice = out.choices.first().cloned().unwrap_or_default();
        if !single {
            stdout.write_all(choice.text.as_bytes())?;
        }
        writeln!(stdout)?;
        generated += out.usage.completion_tokens;
        let reason = choice.finish_reason.map(|r| r.as_str()).unwrap_or("none");
        eprintln!(
            "[{}] prompt {} tokens, generated {} tokens, finish_reason: {reason}",
            i + 1,
            out.usage.prompt_tokens,
            out.usage.completion_tokens
        );
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{} prompt(s): {generated} tokens generated in {secs:.3}s ({:.1} tok/s aggregate)",
        texts.len(),
        generated as f64 / secs.max(1e-9)
    );
    engine.shutdown();
    Ok(())
}

fn run_serve(args: ServeArgs) -> Result<()> {
    if args.log_format != "text" && args.log_format != "json" {
        anyhow::bail!("--log-format must be text or json");
    }
    let mut api_keys = args.api_key.clone();
    if let Some(path) = &args.api_key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        api_keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let routing = routing_config(&args)?;
    let spec = match (&args.model.model, &routing) {
        (Some(m), _) => m.clone(),
        (None, Some(r)) => r.local.model.clone(),
        (None, None) => args.model.spec()?,
    };
    let model_name = args
        .served_model_name
        .clone()
        .or_else(|| routing.as_ref().and_then(|r| r.local.name.clone()))
        .unwrap_or_else(|| {
            let p = std::path::Path::new(&spec);
            p.file_name().map_or(spec.clone(), |n| n.to_string_lossy().into_owned())
        });
    let local_price = routing.as_ref().map(|r| r.local.price).unwrap_or_default();
    let opts = aisle::server::ServeOptions {
        model: spec,
        routing,
        host: args.host.clone(),
        port: args.port,
        executor: args.model.executor_options(args.engine.block_size, 0)?,
        kv_cache_mib: args.kv_cache_mb,
        scheduler: args.engine.scheduler(),
        shutdown_timeout: std::time::Duration::from_secs(args.shutdown_timeout),
        step_delay: std::time::Duration::from_millis(args.step_delay_ms),
        server: aisle::server::ServerConfig {
            model_name,
            api_keys,
            max_waiting: args.max_waiting,
            max_body_bytes: args.max_body_bytes,
            default_max_tokens: args.default_max_tokens,
            local_price,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(aisle::server::serve(opts)).map_err(anyhow::Error::msg)
}

/// `--config FILE`, or a one-remote config from `--fallback-url`.
fn routing_config(args: &ServeArgs) -> Result<Option<aisle::fallback::RoutingConfig>> {
    use aisle::fallback::config::{LocalConfig, RoutingRules};
    if let Some(path) = &args.config {
        return Ok(Some(aisle::fallback::RoutingConfig::load(path)?));
    }
    let Some(url) = &args.fallback_url else { return Ok(None) };
    let remote = aisle::fallback::RemoteConfig {
        name: "fallback".into(),
        base_url: url.clone(),
        api_key_env: args.fallback_api_key_env.clone(),
        model: args.fallback_model.clone(),
        price: Default::default(),
        connect_timeout_ms: 2_000,
        first_byte_timeout_ms: 15_000,
        total_timeout_ms: 120_000,
        max_retries: 2,
        breaker_failures: 5,
        breaker_cooldown_ms: 30_000,
    };
    Ok(Some(aisle::fallback::RoutingConfig {
        local: LocalConfig {
            model: args.model.spec()?,
            name: None,
            price: Default::default(),
        },
        remotes: vec![remote],
        aliases: Default::default(),
        rules: RoutingRules {
            fallback: Some("fallback".into()),
            context_overflow: true,
            on_local_error: true,
            ..Default::default()
        },
        complex_patterns: Vec::new(),
    }))
}

fn run_inspect(args: ModelArgs) -> Result<()> {
    let (model, _) = load(&args)?;
    let c = &model.config;
    let dtype = args.dtype.0;
    let opts = args.executor_options(ExecutorOptions::default().block_size, 0)?;
    let params = c.num_parameters();
    let bytes = match args.quantize {
        // q8_0: 34 bytes per 32 weights; q4_k: 144 per 256 (embeddings/lm_head stay q8_0).
        Some(Quantize::Q8_0) => params * 34 / 32,
        Some(Quantize::Q4K) => {
            let head = c.vocab_size * c.hidden_size * if c.tie_word_embeddings { 1 } else { 2 };
            (params - head) * 144 / 256 + head * 34 / 32
        }
        None => params * dtype.size_in_bytes(),
    };
    let kv_per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim * opts.kv_dtype().size_in_bytes();
    let mut text = String::new();
    let mut row = |label: &str, value: String| text.push_str(&format!("{label:<22}{value}\n"));
    row("model directory", model.dir.display().to_string());
    row("family", c.family.name().to_string());
    row("layers", c.num_layers.to_string());
    row(
        "hidden / intermediate",
        format!("{} / {}", c.hidden_size, c.intermediate_size),
    );
    row(
        "heads / kv heads",
        format!("{} / {} (head_dim {})", c.num_heads, c.num_kv_heads, c.head_dim),
    );
    row("vocab", c.vocab_size.to_string());
    row("context", c.max_position_embeddings.to_string());
    row("rope", format!("theta {} scaling {:?}", c.rope_theta, c.rope_scaling));
    row("tied embeddings", c.tie_word_embeddings.to_string());
    row("qkv bias / qk norm", format!("{} / {}", c.qkv_bias, c.qk_norm));
    row("sliding window", format!("{:?}", c.sliding_window));
    row("eos token ids", format!("{:?}", model.eos_token_ids()));
    row(
        "chat template",
        if model.tokenizer.has_chat_template() {
            "yes"
        } else {
            "no"
        }
        .to_string(),
    );
    row("weights on disk", model.weights.disk_dtype().unwrap_or_default());
    row("parameters", format!("{params} ({:.2} M)", params as f64 / 1e6));
    row("run dtype", format!("{dtype:?}"));
    row(
        "quantization",
        args.quantize.map_or("none".into(), |q| format!("{q:?}")),
    );
    if opts.device == DeviceSpec::Cpu {
        let isa = aisle::backend::cpu::Isa::get().describe();
        let threads = if args.threads == 0 {
            aisle::backend::cpu::default_threads()
        } else {
            args.threads
        };
        row("cpu kernels", format!("{isa}, {threads} threads"));
    }
    row(
        "weights in memory",
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64),
    );
    row("KV cache per token", format!("{:.1} KiB", kv_per_token as f64 / 1024.0));
    let full = (kv_per_token * c.max_position_embeddings) as f64 / (1 << 20) as f64;
    row("KV cache, full ctx", format!("{full:.2} MiB"));
    row("backends compiled in", compiled_backends().join(", "));
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
