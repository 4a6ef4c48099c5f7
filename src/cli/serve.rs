//! `aisle serve`: the OpenAI-compatible server on one model, with optional routing to remotes.
//!
//! Owns: the command's flags, API keys from flags and files, and the routing config from
//! `--config` or `--fallback-url`. Must not: handle requests (`aisle::server` does).

use anyhow::{Context, Result};
use clap::Args;

use super::args::{EngineArgs, LogFormat, ModelArgs};

#[derive(Args)]
pub struct ServeArgs {
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
    /// How tool calls are written and read: `auto` (detected from the chat template),
    /// `hermes`, `llama3_json`, `mistral`, or `none` (requests that need calls get a 400).
    #[arg(long, default_value = "auto")]
    tool_call_parser: aisle::tools::ParserChoice,
    /// Browser origins allowed to call the API (CORS), comma-separated or repeated, e.g.
    /// `http://localhost:5173`; `*` allows any. Default: none (no CORS headers are sent).
    #[arg(long, value_delimiter = ',', value_parser = parse_origin)]
    allowed_origins: Vec<String>,
    /// KV cache size in MiB.
    #[arg(long, default_value_t = 512)]
    kv_cache_mb: usize,
    #[command(flatten)]
    engine: EngineArgs,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT; the process exits one
    /// second after that whatever the clients do.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a client has to send a request's whole body (408 after).
    #[arg(long, default_value_t = 30)]
    body_timeout: u64,
    /// Most open connections; more get a 503 and are closed.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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
    /// Product catalog for the built-in tools (`search_products`, `get_product`): a SQLite
    /// database from `aisle catalog build` (read live) or a catalog.json. Chat requests
    /// without `tools` then run the tool loop in the server. Default: the shipped model's
    /// catalog when serving the shipped model.
    #[arg(long)]
    catalog: Option<std::path::PathBuf>,
    /// Serve without built-in tools, even for the shipped model.
    #[arg(long, conflicts_with = "catalog")]
    no_tools: bool,
    /// Most turns of tool calls one request may spend before the model must answer.
    #[arg(long)]
    max_tool_rounds: Option<usize>,
    /// Per-call timeout of built-in tools, in milliseconds.
    #[arg(long)]
    tool_timeout_ms: Option<u64>,
    /// Testing aid: sleep this long after every engine step (simulates a slower device).
    #[arg(long, default_value_t = 0, hide = true)]
    step_delay_ms: u64,
}

pub fn run(args: ServeArgs) -> Result<()> {
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
    let tools = tools_config(&args, routing.as_ref(), &spec);
    let opts = aisle::server::ServeOptions {
        model: spec,
        routing,
        host: args.host.clone(),
        port: args.port,
        executor: args.model.executor_options(args.engine.block_size, 0),
        kv_cache_mib: args.kv_cache_mb,
        scheduler: args.engine.scheduler()?,
        shutdown_timeout: std::time::Duration::from_secs(args.shutdown_timeout),
        conn: aisle::server::listen::ConnLimits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
            max_connections: args.max_connections.max(1),
        },
        step_delay: std::time::Duration::from_millis(args.step_delay_ms),
        tools,
        server: aisle::server::ServerConfig {
            model_name,
            api_keys,
            max_waiting: args.max_waiting,
            max_body_bytes: args.max_body_bytes,
            body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
            default_max_tokens: args.default_max_tokens,
            local_price,
            tool_parser: args.tool_call_parser,
            allowed_origins: args.allowed_origins.clone(),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(aisle::server::serve(opts)).map_err(anyhow::Error::msg)
}

/// The built-in tools: `[tools]` from the config, with `--catalog` and the tool flags on top;
/// the shipped model brings its own catalog (when it can call tools) unless `--no-tools`.
fn tools_config(
    args: &ServeArgs,
    routing: Option<&aisle::fallback::RoutingConfig>,
    spec: &str,
) -> Option<aisle::toolbox::ToolsConfig> {
    if args.no_tools {
        return None;
    }
    let mut cfg = routing.and_then(|r| r.tools.clone());
    let shipped = std::path::Path::new(spec).join("catalog.json");
    let default_model = args.model.model.is_none() && routing.is_none();
    // The shipped model brings its catalog when its chat template can call tools.
    let calls_tools = args
        .tool_call_parser
        .resolve(aisle::tools::detect_in_dir(std::path::Path::new(spec)))
        .is_some();
    let catalog = args
        .catalog
        .clone()
        .or_else(|| (default_model && calls_tools && shipped.is_file()).then_some(shipped));
    if let Some(c) = catalog {
        cfg.get_or_insert_with(Default::default).catalog = Some(c);
    }
    let cfg = cfg.as_mut()?;
    if let Some(n) = args.max_tool_rounds {
        cfg.max_rounds = n;
    }
    if let Some(ms) = args.tool_timeout_ms {
        cfg.timeout_ms = ms;
    }
    Some(cfg.clone())
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
        tools: None,
    }))
}

/// An origin as browsers send it: `*`, or `scheme://host[:port]` with no path.
fn parse_origin(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    match rest {
        _ if s == "*" => Ok(s.to_string()),
        Some(host) if !host.is_empty() && !host.contains('/') && axum::http::HeaderValue::from_str(s).is_ok() => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "`{s}` is not an origin: give `*` or `http(s)://host[:port]` without a path"
        )),
    }
}
