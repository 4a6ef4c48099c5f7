//! Shared helpers for integration tests: fixture paths, golden records, and a stepwise
//! greedy decoder that keeps every step's logits.
#![allow(dead_code)]

pub mod driver;
pub mod http;
pub mod real;

use std::path::PathBuf;

use aisle::backend::{DeviceSpec, Executor, ExecutorOptions};
use aisle::batch::{Batch, LogitsWanted};
use aisle::runtime::LoadedModel;
use aisle::sampling::argmax;
use aisle::weights::Weights;
use candle_core::{DType, Device};
use serde_json::Value;

pub const FAMILIES: [&str; 5] = ["llama", "llama3", "mistral", "qwen2", "qwen3"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A file under `target/models`, fetched by `scripts/fetch_models.sh` (which
/// `scripts/test.sh` runs first); a missing file fails the test with that instruction.
pub fn fetched(rel: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/models")
        .join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch_models.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The real SmolLM2-135M-Instruct, Q4_1 GGUF.
pub fn smollm2_gguf() -> PathBuf {
    fetched("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub struct Golden {
    pub json: Value,
    pub tensors: Weights,
    pub vocab: usize,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let dir = fixture(name);
        let text = std::fs::read_to_string(dir.join("golden.json")).expect("golden.json");
        let json: Value = serde_json::from_str(&text).expect("golden.json parses");
        let tensors = Weights::open_files(&[dir.join("golden.safetensors")]).expect("golden.safetensors");
        let cfg = aisle::model_dir::load_config(&dir).expect("config");
        Golden {
            json,
            tensors,
            vocab: cfg.vocab_size,
        }
    }

    pub fn prompts(&self) -> &Vec<Value> {
        self.json["prompts"].as_array().expect("prompts")
    }

    pub fn ids(&self, i: usize, key: &str) -> Vec<u32> {
        self.prompts()[i][key]
            .as_array()
            .expect("id list")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect()
    }

    /// A recorded logits tensor as rows of f32.
    pub fn logits(&self, name: &str, rows: usize) -> Vec<f32> {
        let t = self
            .tensors
            .get(name, &[rows, self.vocab], DType::F32, &Device::Cpu)
            .expect(name);
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }
}

impl Golden {
    /// HF's logprob (f64 log-softmax of the golden f32 prompt logits) and rank (1 = most
    /// likely) of each token of prompt `i` after the first.
    pub fn prompt_scores(&self, i: usize) -> Vec<(f64, u32)> {
        let ids = self.ids(i, "input_ids");
        let logits = self.logits(&format!("p{i}.f32.prompt_logits"), ids.len());
        (1..ids.len())
            .map(|j| {
                let row = &logits[(j - 1) * self.vocab..j * self.vocab];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let norm = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                let x = row[ids[j] as usize];
                (x as f64 - norm, 1 + row.iter().filter(|&&y| y > x).count() as u32)
            })
            .collect()
    }
}

pub fn executor(model: &LoadedModel, dtype: DType, num_blocks: usize) -> Box<dyn Executor> {
    executor_with(model, dtype, 4, num_blocks)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Greedy decode `steps` tokens for one prompt in blocks `first_block..`, returning the
/// tokens and the logits of every step (step 0 = last prompt position).
pub fn greedy_steps(
    exec: &mut dyn Executor,
    prompt: &[u32],
    steps: usize,
    first_block: u32,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let bs = exec.kv_geometry().block_size;
    let nblocks = (prompt.len() + steps).div_ceil(bs) as u32;
    let table: Vec<u32> = (first_block..first_block + nblocks).collect();
    let mut batch = Batch::default();
    batch.push(prompt, 0, table.clone(), LogitsWanted::Last);
    let mut logits = vec![exec.execute(&batch).expect("prefill").row(0).to_vec()];
    let mut tokens = Vec::new();
    for step in 0..steps {
        let next = argmax(&logits[step]);
        tokens.push(next);
        if step + 1 == steps {
            break;
        }
        let mut b = Batch::default();
        b.push(&[next], prompt.len() + step, table.clone(), LogitsWanted::Last);
        logits.push(exec.execute(&b).expect("decode").row(0).to_vec());
    }
    (tokens, logits)
}

/// An engine thread on the `mistral` fixture and the `ServedModel` a test server needs
/// (4-token blocks, 256 of them, a 64-token step budget).
pub fn served_mistral(
    max_seqs: usize,
    step_delay: std::time::Duration,
) -> (aisle::server::ServedModel, aisle::engine::Engine) {
    let model = LoadedModel::load_dir(&fixture("mistral")).expect("fixture");
    served(&model, 4, 256, 64, max_seqs, step_delay)
}

/// An engine thread on `model` and the `ServedModel` a test server needs.
pub fn served(
    model: &LoadedModel,
    block_size: usize,
    num_blocks: usize,
    max_batched_tokens: usize,
    max_seqs: usize,
    step_delay: std::time::Duration,
) -> (aisle::server::ServedModel, aisle::engine::Engine) {
    let exec = executor_with(model, DType::F32, block_size, num_blocks);
    served_on(model, exec, max_batched_tokens, max_seqs, step_delay)
}

/// An engine thread on `exec` and the `ServedModel` a test server needs.
pub fn served_on(
    model: &LoadedModel,
    exec: Box<dyn Executor>,
    max_batched_tokens: usize,
    max_seqs: usize,
    step_delay: std::time::Duration,
) -> (aisle::server::ServedModel, aisle::engine::Engine) {
    let core = aisle::engine::EngineCore::new(
        exec,
        model.tokenizer.clone(),
        model.eos_token_ids(),
        aisle::engine::SchedulerConfig {
            max_batched_tokens,
            max_seqs,
            step_time_target: None,
            speculation: None,
        },
    );
    aisle::server::start_engine(model, core, step_delay, "test".into())
}

/// The in-process test servers' config: model `shop`, 8 waiting, 64 KiB bodies, 16 tokens
/// by default, no keys.
pub fn server_config() -> aisle::server::ServerConfig {
    aisle::server::ServerConfig {
        model_name: "shop".into(),
        api_keys: vec![],
        max_waiting: 8,
        max_body_bytes: 1 << 16,
        body_timeout: std::time::Duration::from_secs(30),
        default_max_tokens: 16,
        local_price: Default::default(),
        tool_parser: Default::default(),
        allowed_origins: vec![],
    }
}

/// `model` behind the real router on a loopback port (32 sequences, 512 blocks of 16):
/// returns the base URL `http://127.0.0.1:PORT` and the engine (keep it alive).
pub async fn serve_on_loopback(model: &LoadedModel, name: &str) -> (String, aisle::engine::Engine) {
    serve_on_loopback_with_tools(model, name, None).await
}

/// `serve_on_loopback` with the server's own tools.
pub async fn serve_on_loopback_with_tools(
    model: &LoadedModel,
    name: &str,
    toolbox: Option<std::sync::Arc<aisle::toolbox::Toolbox>>,
) -> (String, aisle::engine::Engine) {
    let (served, engine) = served(model, 16, 512, 512, 32, std::time::Duration::ZERO);
    let cfg = aisle::server::ServerConfig {
        model_name: name.into(),
        api_keys: vec![],
        max_waiting: 64,
        max_body_bytes: 1 << 20,
        body_timeout: std::time::Duration::from_secs(30),
        default_max_tokens: 64,
        local_price: Default::default(),
        tool_parser: Default::default(),
        allowed_origins: vec![],
    };
    let state = aisle::server::AppState::with_tools(cfg, None, toolbox);
    state.set_model(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, aisle::server::app(state)).await.ok() });
    (format!("http://{addr}"), engine)
}

/// Serve `app` on a loopback port for the rest of the test; its base URL (`http://host:port`).
pub async fn serve_stub(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}")
}

/// The device integration tests run on: `AISLE_TEST_DEVICE` (e.g. `cuda` with `--features
/// cuda`, to run the golden and batching suites on a GPU), else the native CPU backend.
pub fn test_device() -> DeviceSpec {
    std::env::var("AISLE_TEST_DEVICE").map_or(DeviceSpec::Cpu, |d| d.parse().expect("AISLE_TEST_DEVICE"))
}

pub fn executor_with(model: &LoadedModel, dtype: DType, block_size: usize, num_blocks: usize) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device: test_device(),
        dtype,
        block_size,
        num_blocks,
        ..Default::default()
    };
    model.executor(&opts).expect("executor")
}

/// Run the `aisle` binary from the repository root: (success, stdout, stderr).
pub fn aisle(args: &[&str]) -> (bool, String, String) {
    aisle_env(args, &[])
}

/// `aisle` with extra environment variables.
pub fn aisle_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aisle"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run aisle");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 output");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// An f32 executor on `device` with 32 blocks of 16 tokens, for `two_sequence_trace`.
pub fn trace_executor(model: &LoadedModel, device: DeviceSpec, threads: usize) -> Box<dyn Executor> {
    let opts = ExecutorOptions {
        device,
        dtype: DType::F32,
        block_size: 16,
        num_blocks: 32,
        threads,
        ..Default::default()
    };
    model.executor(&opts).expect("executor")
}

/// Prompts of 40 and 23 tokens in scattered blocks, all logits; then 8 greedy steps of both
/// sequences together. Returns every logits row in order.
pub fn two_sequence_trace(exec: &mut dyn Executor, vocab: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
    let prompts: Vec<Vec<u32>> = [40usize, 23]
        .iter()
        .enumerate()
        .map(|(s, &n)| (0..n).map(|i| ((i * 7 + s * 13 + 3) % vocab) as u32).collect())
        .collect();
    let tables = [vec![9u32, 2, 30, 4], vec![7u32, 0, 15]];
    let mut batch = Batch::default();
    for (p, t) in prompts.iter().zip(&tables) {
        batch.push(p, 0, t.clone(), LogitsWanted::All);
    }
    let out = exec.execute(&batch).expect("prefill");
    let mut rows: Vec<Vec<f32>> = (0..out.rows()).map(|r| out.row(r).to_vec()).collect();
    let mut last = [argmax(&rows[39]), argmax(&rows[62])];
    let mut tokens = Vec::new();
    for step in 0..8 {
        let mut b = Batch::default();
        for s in 0..2 {
            b.push(
                &[last[s]],
                prompts[s].len() + step,
                tables[s].clone(),
                LogitsWanted::Last,
            );
        }
        let out = exec.execute(&b).expect("decode");
        for (s, l) in last.iter_mut().enumerate() {
            rows.push(out.row(s).to_vec());
            *l = argmax(out.row(s));
            tokens.push(*l);
        }
    }
    (rows, tokens)
}
