//! The remote client against a fault-injecting OpenAI-compatible server on loopback: success
//! (JSON and SSE), slow first byte, 500, 429 with Retry-After, malformed JSON, a connection
//! dropped mid-stream, and the circuit breaker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aisle::fallback::remote::{RemoteBackend, RemoteError};
use aisle::fallback::RemoteConfig;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

fn ok_body(model: &str) -> Value {
    json!({"id": "r-1", "object": "chat.completion", "created": 1, "model": model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "remote says hi"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})
}

fn sse_body(chunks: &[&str], done: bool) -> String {
    let mut s: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        s.push_str("data: [DONE]\n\n");
    }
    s
}

/// `/{mode}/v1/chat/completions` behaves according to `mode`.
async fn fault(State(hits): State<Hits>, Path(mode): Path<String>, Json(body): Json<Value>) -> Response {
    let n = hits.0.fetch_add(1, Ordering::SeqCst);
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or("").to_string();
    match mode.as_str() {
        "ok" if stream => {
            let c = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}).to_string();
            ([("content-type", "text/event-stream")], sse_body(&[&c, &c], true)).into_response()
        }
        "ok" => Json(ok_body(&model)).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Json(ok_body(&model)).into_response()
        }
        "e500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "e429" if n == 0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0.3")], "slow down").into_response(),
        "e429" => Json(ok_body(&model)).into_response(),
        "trickle" => {
            // One chunk, then silence far beyond the client's total timeout.
            let c = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}).to_string();
            let parts = futures_util::stream::iter([0, 1]).then(move |i| {
                let chunk = format!("data: {c}\n\n");
                async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Ok::<_, std::io::Error>(bytes::Bytes::from(chunk))
                }
            });
            ([("content-type", "text/event-stream")], Body::from_stream(parts)).into_response()
        }
        "fail2" if n < 2 => (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response(),
        "fail2" => Json(ok_body(&model)).into_response(),
        "bad" => ([("content-type", "application/json")], "{not json").into_response(),
        "drop" => {
            let c = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}).to_string();
            // One chunk, a pause (so the head and chunk are flushed), then a broken connection.
            let parts = futures_util::stream::iter([0, 1]).then(move |i| {
                let chunk = format!("data: {c}\n\n");
                async move {
                    if i == 0 {
                        return Ok(bytes::Bytes::from(chunk));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("connection reset"))
                }
            });
            let body = Body::from_stream(parts);
            ([("content-type", "text/event-stream")], body).into_response()
        }
        "split" => {
            // "é" and "€" each cut between network chunks, CRLF line ends, and one CRLF cut
            // between its CR and LF.
            let mut bytes = Vec::new();
            for t in ["é", "€"] {
                let c = json!({"choices": [{"index": 0, "delta": {"content": t}}]}).to_string();
                bytes.extend_from_slice(format!("data: {c}\r\n\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"data: [DONE]\r\n\r\n");
            let cut = |b: u8| bytes.iter().position(|&x| x == b).unwrap();
            let (e, euro, cr) = (cut(0xC3) + 1, cut(0xE2) + 2, cut(b'\r') + 1);
            let mut cuts = [0, e, cr, euro, bytes.len()];
            cuts.sort();
            let parts: Vec<bytes::Bytes> = cuts
                .windows(2)
                .map(|w| bytes::Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
                .collect();
            let parts = futures_util::stream::iter(parts).then(|p| async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // separate reads
                Ok::<_, std::io::Error>(p)
            });
            ([("content-type", "text/event-stream")], Body::from_stream(parts)).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn fault_server() -> (String, Hits) {
    let hits = Hits::default();
    let app = Router::new()
        .route("/{mode}/v1/chat/completions", post(fault))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}"), hits)
}

fn backend(base: &str, mode: &str, retries: u32, breaker: u32) -> RemoteBackend {
    RemoteBackend::new(RemoteConfig {
        name: "big".into(),
        base_url: format!("{base}/{mode}/v1"),
        api_key_env: None,
        model: "big-model".into(),
        price: Default::default(),
        connect_timeout_ms: 500,
        first_byte_timeout_ms: 400,
        total_timeout_ms: 5_000,
        max_retries: retries,
        breaker_failures: breaker,
        breaker_cooldown_ms: 300,
    })
    .unwrap()
}

fn req() -> Value {
    json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn success_json_and_stream_send_the_remote_model_name() {
    let (base, _) = fault_server().await;
    let b = backend(&base, "ok", 0, 5);
    let r = b.complete("chat/completions", &req()).await.unwrap();
    assert_eq!(r["model"], "big-model");
    let chunks: Vec<_> = b.stream("chat/completions", &req()).await.unwrap().collect().await;
    assert_eq!(chunks.len(), 2);
    assert!(chunks
        .iter()
        .all(|c| c.as_ref().unwrap()["choices"][0]["delta"]["content"] == "hi"));
}

#[tokio::test]
async fn multibyte_characters_split_across_chunks_and_crlf_arrive_intact() {
    let (base, _) = fault_server().await;
    let b = backend(&base, "split", 0, 5);
    let chunks: Vec<_> = b.stream("chat/completions", &req()).await.unwrap().collect().await;
    let texts: Vec<String> = chunks
        .iter()
        .map(|c| {
            c.as_ref().unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["é", "€"]);
}

#[tokio::test]
async fn faults_become_clear_errors() {
    let (base, hits) = fault_server().await;
    let e = backend(&base, "slow", 0, 5)
        .complete("chat/completions", &req())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RemoteError::Timeout {
                stage: "first byte",
                ..
            }
        ),
        "{e}"
    );
    let e = backend(&base, "bad", 0, 5)
        .complete("chat/completions", &req())
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Malformed { .. }), "{e}");
    let before = hits.0.load(Ordering::SeqCst);
    let e = backend(&base, "e500", 2, 5)
        .complete("chat/completions", &req())
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Status { status: 500, .. }), "{e}");
    assert_eq!(hits.0.load(Ordering::SeqCst) - before, 3, "500 is retried twice");
    let items: Vec<_> = backend(&base, "drop", 0, 5)
        .stream("chat/completions", &req())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(items[0].is_ok());
    assert!(
        matches!(items.last().unwrap(), Err(RemoteError::Dropped { .. })),
        "{items:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_on_429() {
    let (base, hits) = fault_server().await;
    let start = Instant::now();
    let r = backend(&base, "e429", 2, 5)
        .complete("chat/completions", &req())
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "remote says hi");
    assert!(start.elapsed() >= Duration::from_millis(300), "waited for Retry-After");
    assert_eq!(hits.0.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn breaker_opens_rejects_fast_and_closes_after_a_good_probe() {
    let (base, hits) = fault_server().await; // fresh server: "fail2" answers 503 twice, then 200
    let b = backend(&base, "fail2", 0, 2);
    for _ in 0..2 {
        assert!(matches!(
            b.complete("chat/completions", &req()).await,
            Err(RemoteError::Status { status: 503, .. })
        ));
    }
    assert_eq!(b.breaker_code(), 1, "open after 2 consecutive failures");
    let start = Instant::now();
    assert!(matches!(
        b.complete("chat/completions", &req()).await,
        Err(RemoteError::CircuitOpen(_))
    ));
    assert!(start.elapsed() < Duration::from_millis(50), "rejected fast");
    assert_eq!(hits.0.load(Ordering::SeqCst), 2, "nothing sent while open");
    tokio::time::sleep(Duration::from_millis(350)).await; // cool-down 300 ms
    let probe = b.complete("chat/completions", &req()).await.unwrap();
    assert_eq!(probe["model"], "big-model");
    assert_eq!(b.breaker_code(), 0, "a successful probe closes the circuit");
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_total_timeout() {
    let (base, _) = fault_server().await;
    let mut cfg = backend(&base, "trickle", 0, 5).cfg.clone();
    cfg.total_timeout_ms = 600;
    let b = RemoteBackend::new(cfg).unwrap();
    let start = Instant::now();
    let items: Vec<_> = b.stream("chat/completions", &req()).await.unwrap().collect().await;
    assert!(items[0].is_ok());
    assert!(
        matches!(items.last().unwrap(), Err(RemoteError::Timeout { stage: "total", .. })),
        "{items:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3), "bounded, not hung");
}
