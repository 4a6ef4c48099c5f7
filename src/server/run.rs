//! Running the server: bind, load the model in the background (so `/ready` answers 503
//! meanwhile), serve, and on SIGTERM/SIGINT stop admitting (503), drain in-flight requests up to
//! the shutdown timeout, then return.
//!
//! Owns: process-level lifecycle. Must not: handle individual requests.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{app, AppState, ServedModel, ServerConfig};
use crate::backend::ExecutorOptions;
use crate::engine::{Engine, EngineCore, SchedulerConfig};
use crate::runtime::LoadedModel;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: String,
    /// Remote backends and routing rules (`--config` or `--fallback-url`).
    pub routing: Option<crate::fallback::RoutingConfig>,
    pub host: String,
    pub port: u16,
    pub executor: ExecutorOptions,
    /// KV cache size in MiB (turned into a block count for the model's shape).
    pub kv_cache_mib: usize,
    pub scheduler: SchedulerConfig,
    pub shutdown_timeout: Duration,
    /// Header/idle timeout and connection limit.
    pub conn: super::listen::ConnLimits,
    pub server: ServerConfig,
    /// Sleep after each engine step (testing aid: simulates a slower device).
    pub step_delay: Duration,
    /// Tools the server runs for its model (`--catalog`, `[tools]`).
    pub tools: Option<crate::toolbox::ToolsConfig>,
}

/// sha256 over config.json and each safetensors file's name, size and header: a model version
/// that changes when the config or any weight layout changes, computed without reading weights.
pub fn model_version(dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(std::fs::read(dir.join("config.json")).unwrap_or_default());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for path in files {
        h.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes().to_vec())
                .unwrap_or_default(),
        );
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            h.update(len.to_le_bytes());
            let mut n = [0u8; 8];
            if f.read_exact(&mut n).is_ok() {
                let mut header = vec![0u8; (u64::from_le_bytes(n) as usize).min(16 << 20)];
                if f.read_exact(&mut header).is_ok() {
                    h.update(&header);
                }
            }
        }
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Load the model and start the engine (blocking; runs off the async runtime).
fn load(opts: &ServeOptions) -> Result<(ServedModel, Engine), String> {
    let model = LoadedModel::load(&opts.model).map_err(|e| e.to_string())?;
    if opts.tools.is_some() && opts.server.tool_parser.resolve(model.tool_format()).is_none() {
        return Err(format!(
            "built-in tools (--catalog or [tools]) need a model that writes tool calls, and the chat \
             template of {} has no tool-call format (name one with --tool-call-parser, or serve \
             without tools)",
            model.dir.display()
        ));
    }
    let mut exec_opts = opts.executor.clone();
    // A request longer than the cache holds is rejected with a clear message by the engine.
    exec_opts.num_blocks = model.kv_blocks_for_mib(&opts.executor, opts.kv_cache_mib);
    let exec = model.executor(&exec_opts).map_err(|e| e.to_string())?;
    tracing::info!(
        "model loaded from {}: {} KV blocks of {} tokens ({} MiB)",
        model.dir.display(),
        exec_opts.num_blocks,
        exec_opts.block_size,
        opts.kv_cache_mib
    );
    let core = EngineCore::new(exec, model.tokenizer.clone(), model.eos_token_ids(), opts.scheduler);
    Ok(start_engine(&model, core, opts.step_delay, model_version(&model.dir)))
}

/// Spawn the engine thread for `core` and describe it for the handlers. Admission counts the
/// scheduler's effective `max_seqs`: an executor with fixed slots (`cpu-static`, Neuron)
/// lowers the configured one.
pub fn start_engine(
    model: &LoadedModel,
    core: EngineCore,
    step_delay: Duration,
    version: String,
) -> (ServedModel, Engine) {
    let max_seqs = core.scheduler().config().max_seqs;
    let kv_capacity = core.kv_capacity();
    let engine = Engine::spawn_with_delay(core, step_delay);
    let c = &model.config;
    let grammars = crate::grammar::Grammars::new(model.tokenizer.clone(), c.vocab_size, model.eos_token_ids());
    grammars.prepare();
    let served = ServedModel {
        engine: engine.handle(),
        tokenizer: model.tokenizer.clone(),
        grammars: Arc::new(grammars),
        detected_tools: model.tool_format(),
        vocab: c.vocab_size,
        context: c.max_position_embeddings,
        max_seqs,
        max_prompt_bytes: c
            .max_position_embeddings
            .saturating_mul(model.tokenizer.max_token_bytes())
            .saturating_mul(2),
        kv_capacity,
        version,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    (served, engine)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Load the model off the async runtime; the server turns ready when it is in. A load
/// failure arrives on the returned channel.
fn spawn_loader(
    state: &AppState,
    opts: &ServeOptions,
) -> (
    tokio::task::JoinHandle<Option<Engine>>,
    tokio::sync::mpsc::Receiver<String>,
) {
    let (fail_tx, fail_rx) = tokio::sync::mpsc::channel::<String>(1);
    let loader_state = state.clone();
    let load_opts = opts.clone();
    let loader = tokio::task::spawn_blocking(move || match load(&load_opts) {
        Ok((served, engine)) => {
            loader_state.set_model(served);
            eprintln!("aisle: model ready");
            Some(engine)
        }
        Err(e) => {
            let _ = fail_tx.blocking_send(e);
            None
        }
    });
    (loader, fail_rx)
}

/// Serve until SIGTERM/SIGINT, then drain. Errors: bind failure or model load failure.
pub async fn serve(opts: ServeOptions) -> Result<(), String> {
    let backends = match opts.routing.clone() {
        Some(cfg) => Some(crate::fallback::Backends::new(cfg)?),
        None => None,
    };
    let toolbox = match &opts.tools {
        Some(cfg) => {
            let tb = crate::toolbox::Toolbox::new(cfg).map_err(|e| e.to_string())?;
            eprintln!("aisle: built-in tools: {}", tb.names().join(", "));
            Some(Arc::new(tb))
        }
        None => None,
    };
    let state = AppState::with_tools(opts.server.clone(), backends, toolbox);
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!("listening on http://{addr} (model loading)");
    eprintln!("aisle: listening on http://{addr}");
    let (loader, mut fail_rx) = spawn_loader(&state, &opts);
    let drain_state = state.clone();
    let timeout = opts.shutdown_timeout;
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            Some(e) = fail_rx.recv() => { let _ = failed_tx.send(e); }
        }
        drain_state.begin_shutdown();
        let start = Instant::now();
        while drain_state.in_flight() > 0 && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = drain_state.in_flight();
        if left > 0 {
            drain_state.cut_streams(); // each open stream sends its error event and ends
        }
        eprintln!("aisle: shutting down ({left} requests still in flight)");
    };
    // After the drain, connections get one more second to close cleanly, then are dropped.
    super::listen::serve(listener, app(state), opts.conn, shutdown, Duration::from_secs(1)).await;
    if let Ok(e) = failed_rx.await {
        return Err(format!("model failed to load: {e}"));
    }
    if let Ok(Some(engine)) = loader.await {
        drop(engine);
    }
    Ok(())
}
