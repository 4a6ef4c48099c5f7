//! Engine liveness seen through the HTTP API: when the engine thread dies (an executor that
//! panics), the request in flight ends with an error (a 503 body, or an SSE error event, never
//! an empty 200), `/health` and `/ready` answer 503, and new requests get 503 at once. And
//! admission counts the scheduler's effective sequence limit (fixed slots lower it).

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aisle::backend::{BackendError, DeviceSpec, Executor, ExecutorOptions, KvGeometry, StepOutput};
use aisle::batch::{Batch, ExecutorLimits};

use aisle::config::Config;
use aisle::runtime::LoadedModel;
use aisle::server::{app, AppState, ServerConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use candle_core::DType;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Runs the real executor for `steps` steps, then panics inside `execute` (a device lost).
struct PanicsAfter {
    inner: Box<dyn Executor>,
    steps: Arc<AtomicUsize>,
}

impl Executor for PanicsAfter {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, BackendError> {
        if self.steps.fetch_sub(1, Ordering::SeqCst) == 0 {
            panic!("the device fell off the bus");
        }
        self.inner.execute(batch)
    }
    fn kv_geometry(&self) -> KvGeometry {
        self.inner.kv_geometry()
    }
    fn config(&self) -> &Config {
        self.inner.config()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn limits(&self) -> ExecutorLimits {
        self.inner.limits()
    }
}

fn config() -> ServerConfig {
    common::server_config()
}

/// A server whose engine panics on its `steps + 1`-th step.
fn dying_server(steps: usize) -> (Router, aisle::engine::Engine) {
    let model = LoadedModel::load_dir(&common::fixture("mistral")).expect("fixture");
    let inner = common::executor_with(&model, DType::F32, 4, 256);
    let exec = Box::new(PanicsAfter {
        inner,
        steps: Arc::new(AtomicUsize::new(steps)),
    });
    let (served, engine) = common::served_on(&model, exec, 64, 8, Duration::ZERO);
    let state = AppState::new(config());
    state.set_model(served);
    (app(state), engine)
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn post(body: Value) -> Request<Body> {
    Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn assert_dead(router: &Router) {
    for path in ["/health", "/ready"] {
        assert_eq!(
            send(router, get(path)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}"
        );
    }
    let (st, body) = send(router, post(json!({"prompt": "The", "max_tokens": 2}))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "engine_stopped");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the device fell off the bus"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engine_fails_the_request_in_flight_and_every_later_one() {
    let (router, _engine) = dying_server(3);
    assert_eq!(send(&router, get("/health")).await.0, StatusCode::OK);
    let (st, body) = send(
        &router,
        post(json!({"prompt": "The", "max_tokens": 50, "ignore_eos": true})),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("engine_stopped"), "{body}");
    assert_dead(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_engine_dies_ends_with_an_error_event() {
    let (router, _engine) = dying_server(3);
    let req = json!({"prompt": "The", "max_tokens": 50, "ignore_eos": true, "stream": true});
    let (st, body) = send(&router, post(req)).await;
    assert_eq!(st, StatusCode::OK, "the stream had started");
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "engine_stopped", "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    let tokens = events.iter().filter(|e| e.contains("\"text\"")).count();
    assert!(tokens >= 1, "tokens before the failure were streamed: {body}");
    assert_dead(&router).await;
}

#[test]
fn admission_counts_the_executors_slots_not_the_configured_max_seqs() {
    let model = LoadedModel::load_dir(&common::fixture("llama")).expect("fixture");
    let opts = ExecutorOptions {
        device: DeviceSpec::CpuStatic,
        dtype: DType::F32,
        block_size: 16,
        num_blocks: 64,
        static_shape: aisle::backend::StaticOptions {
            max_batch: 2,
            max_len: 64,
            min_bucket: 16,
        },
        ..Default::default()
    };
    let exec = model.executor(&opts).expect("cpu-static");
    let (served, _engine) = common::served_on(&model, exec, 512, 64, Duration::ZERO);
    assert_eq!(served.max_seqs, 2);
}
