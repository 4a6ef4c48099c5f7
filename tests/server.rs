//! The HTTP API in-process through `app(state)` (no socket): every endpoint, chunk order,
//! stream/non-stream agreement, and every error class with its status and JSON shape.

use crate::common;

use std::time::Duration;

use aisle::server::{app, AppState, ServerConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::http::{config, error_of, json_of, post, send, server, server_stepping, server_with, sse};
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_models_metrics() {
    let s = server();
    assert_eq!(
        send(&s.router, Request::get("/health").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&s.router, Request::get("/ready").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    let (st, models) = json_of(&s.router, Request::get("/v1/models").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(models["data"][0]["id"], "shop");
    let (_, _, metrics) = send(&s.router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    for name in [
        "aisle:e2e_request_latency_seconds",
        "aisle:time_to_first_token_seconds",
        "aisle:num_requests_running",
        "aisle:kv_cache_usage_perc",
        "aisle:prefix_cache_hits_total",
        "aisle:num_preemptions_total",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    let not_loaded = app(AppState::new(config()));
    let (st, body) = json_of(&not_loaded, Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (st, body["error"]["type"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable"))
    );
    let (st, _) = json_of(&not_loaded, post("/v1/completions", json!({"prompt": "x"}))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    s.state.begin_shutdown();
    assert_eq!(
        send(&s.router, Request::get("/ready").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completion_bodies() {
    let s = server();
    let (st, c) = json_of(
        &s.router,
        post(
            "/v1/completions",
            json!({"model": "shop", "prompt": "Is the café grinder in stock? Yes", "max_tokens": 40, "temperature": 0}),
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["choices"][0]["text"], " — we have 12 units in the Zürich store.");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        c["usage"]["total_tokens"],
        c["usage"]["prompt_tokens"].as_u64().unwrap() + c["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let req = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Is the"}]}], "max_completion_tokens": 6,
                     "temperature": 0, "logprobs": true, "top_logprobs": 3, "n": 2});
    let (st, chat) = json_of(&s.router, post("/v1/chat/completions", req)).await;
    assert_eq!(st, StatusCode::OK, "{chat}");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"].as_array().unwrap().len(), 2);
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    // OpenAI's schema requires `refusal` on the message and on its logprobs (null here).
    let (message, logprobs) = (&chat["choices"][0]["message"], &chat["choices"][0]["logprobs"]);
    assert!(message.get("refusal").is_some_and(Value::is_null), "{message}");
    assert!(logprobs.get("refusal").is_some_and(Value::is_null), "{logprobs}");
    assert_eq!(chat["choices"][0]["finish_reason"], "length");
    let content = chat["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 3);
    let joined: String = content.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(joined, chat["choices"][0]["message"]["content"].as_str().unwrap());
    let (_, stop) = json_of(
        &s.router,
        post(
            "/v1/completions",
            json!({"prompt": "The cordless drill has a", "temperature": 0, "stop": ["att mo"]}),
        ),
    )
    .await;
    assert_eq!(stop["choices"][0]["text"], " 750 w");
    let (_, lp) = json_of(
        &s.router,
        post(
            "/v1/completions",
            json!({"prompt": "The cordless drill has a", "temperature": 0, "max_tokens": 3, "logprobs": 2}),
        ),
    )
    .await;
    assert_eq!(lp["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(lp["choices"][0]["logprobs"]["text_offset"][0], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_openai_chunk_order_and_match_non_streaming() {
    let s = server();
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Is the café"}], "max_tokens": 24, "seed": 5, "temperature": 0.9}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "Emoji test: 🔨", "max_tokens": 24, "seed": 5, "temperature": 0.9}),
        ),
    ] {
        let (_, full) = json_of(&s.router, post(path, body.clone())).await;
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let (st, headers, text) = send(&s.router, post(path, streamed)).await;
        assert_eq!(st, StatusCode::OK);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let data = sse(&text);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]), "usage chunk has empty choices");
        // Same token counts; the streamed run also reuses the first run's prompt blocks.
        for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(usage["usage"][k], full["usage"][k]);
        }
        assert!(
            usage["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        let finish = &chunks[chunks.len() - 2]["choices"][0];
        assert_eq!(finish["finish_reason"], full["choices"][0]["finish_reason"]);
        let is_chat = path.contains("chat");
        if is_chat {
            assert_eq!(
                chunks[0]["choices"][0]["delta"]["role"], "assistant",
                "role delta first"
            );
            assert_eq!(finish["delta"], json!({}));
        }
        let text_of = |c: &Value| {
            let ch = &c["choices"][0];
            if is_chat {
                ch["delta"]["content"].as_str().unwrap_or("").to_string()
            } else {
                ch["text"].as_str().unwrap_or("").to_string()
            }
        };
        let joined: String = chunks[..chunks.len() - 1].iter().map(text_of).collect();
        let expected = if is_chat {
            &full["choices"][0]["message"]["content"]
        } else {
            &full["choices"][0]["text"]
        };
        assert_eq!(
            joined,
            expected.as_str().unwrap(),
            "{path}: same seed, same text streamed or not"
        );
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_400_with_param() {
    let s = server();
    let cases = [
        (json!({"prompt": "x", "temperature": 3}), "temperature"),
        (json!({"prompt": "x", "top_p": 0}), "top_p"),
        (json!({"prompt": "x", "n": 0}), "n"),
        (json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "x", "presence_penalty": -3}), "presence_penalty"),
        (json!({"prompt": "x", "logit_bias": {"abc": 1}}), "logit_bias"),
        (json!({"prompt": "x", "logit_bias": {"5": 101}}), "logit_bias"),
        (json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"prompt": "x", "logprobs": 21}), "logprobs"),
        (json!({"prompt": "x", "top_k": -2}), "top_k"),
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": [99999]}), "prompt"),
    ];
    for (body, param) in cases {
        let (st, e) = error_of(&s.router, post("/v1/completions", body.clone())).await;
        assert_eq!(
            (st, e["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{body}"
        );
        assert_eq!(e["type"], "invalid_request_error");
    }
    let chat_cases = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content",
        ),
    ];
    for (body, param) in chat_cases {
        let (st, e) = error_of(&s.router, post("/v1/chat/completions", body.clone())).await;
        assert_eq!(
            (st, e["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{body}"
        );
    }
    let (st, e) = error_of(&s.router, post("/v1/completions", json!({"prompt": 5}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_errors_map_to_their_status() {
    let s = server();
    let raw = |ctype: &str, body: &str| {
        Request::post("/v1/completions")
            .header("content-type", ctype)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (st, e) = error_of(&s.router, raw("application/json", "{\"prompt\": ")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("not valid JSON"));
    for ctype in ["text/plain", "application/jsonfoo", "application/json-seq", ""] {
        let (st, e) = error_of(&s.router, raw(ctype, "{}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{ctype}");
        assert!(e["message"].as_str().unwrap().contains("Content-Type"), "{ctype}: {e}");
    }
    // The media type matches exactly, case-blind, with parameters allowed.
    let (_, e) = error_of(&s.router, raw("Application/JSON; charset=utf-8", "{\"prompt\": ")).await;
    assert!(e["message"].as_str().unwrap().contains("not valid JSON"), "{e}");
    // A body that breaks off mid-way (a malformed chunked encoding) is a 400, not a 413.
    let broken = futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from_static(b"{\"prompt\": \"x")),
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")),
    ]);
    let req = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from_stream(broken))
        .unwrap();
    let (st, e) = error_of(&s.router, req).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("cannot read the request body"),
        "{e}"
    );
    // A known route with the wrong method: 405 with a JSON body.
    let (st, e) = error_of(
        &s.router,
        Request::get("/v1/chat/completions").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let huge = json!({"prompt": "x".repeat(70_000)}).to_string();
    let (st, e) = error_of(&s.router, raw("application/json", &huge)).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large"))
    );
    // Text that cannot fit the context however it tokenizes is refused before tokenizing.
    for (path, body) in [
        ("/v1/completions", json!({"prompt": "tent ".repeat(12_000)})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "tent ".repeat(12_000)}]}),
        ),
    ] {
        let (st, e) = error_of(&s.router, post(path, body)).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
        );
        assert!(
            e["message"].as_str().unwrap().contains("bytes of text cannot fit"),
            "{e}"
        );
    }
    let long = "tent ".repeat(300);
    let (st, e) = error_of(&s.router, post("/v1/completions", json!({"prompt": long}))).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
    );
    let (st, e) = error_of(
        &s.router,
        post("/v1/completions", json!({"prompt": "x", "max_tokens": 1000})),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("context_length_exceeded"))
    );
    let (st, e) = error_of(
        &s.router,
        post(
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
        ),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"))
    );
    let (st, _) = error_of(&s.router, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, headers, _) = send(
        &s.router,
        Request::get("/health")
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["x-request-id"], "req-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_enforced_on_v1_routes() {
    let s = server_with(
        ServerConfig {
            api_keys: vec!["k1".into(), "k2".into()],
            ..config()
        },
        8,
    );
    let req = |key: Option<&str>| {
        let mut r = Request::get("/v1/models");
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let (st, e) = error_of(&s.router, req(None)).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
    assert_eq!(error_of(&s.router, req(Some("nope"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&s.router, req(Some("k2"))).await.0, StatusCode::OK);
    // The scheme is case-insensitive (RFC 7235); the token is not.
    for header in ["bearer k2", "BEARER k1", "Bearer  k2"] {
        let r = Request::get("/v1/models")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&s.router, r).await.0, StatusCode::OK, "{header}");
    }
    for header in ["Bearer K2", "Basic k2", "k2", "Bearerk2"] {
        let r = Request::get("/v1/models")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&s.router, r).await.0, StatusCode::UNAUTHORIZED, "{header}");
    }
    assert_eq!(
        send(&s.router, Request::get("/health").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK,
        "health needs no key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gets_429_and_a_dropped_stream_frees_its_blocks() {
    let s = server_stepping(
        ServerConfig {
            max_waiting: 0,
            ..config()
        },
        1,
        Duration::from_millis(5),
    );
    let long = json!({"prompt": "The", "max_tokens": 200, "ignore_eos": true, "stream": true});
    // Hold one streaming response open without reading it: capacity (1 running + 0 waiting) is used.
    let resp = s.router.clone().oneshot(post("/v1/completions", long)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (st, headers, text) = send(&s.router, post("/v1/completions", json!({"prompt": "x"}))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers["retry-after"], "1");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    drop(resp); // the client goes away mid-stream
    let model_stats = || {
        let h = s.state.model().unwrap().engine.clone();
        h.stats().unwrap()
    };
    let mut stats = model_stats();
    for _ in 0..200 {
        if stats.requests == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = model_stats();
    }
    assert_eq!(
        (stats.requests, stats.free_blocks, stats.cancelled),
        (0, stats.total_blocks, 1),
        "cancelled (not run to its end) and freed: {stats:?}"
    );
    assert_failures_counted(&s.router, &[("overloaded", 1), ("cancelled", 1)]).await;
    assert_eq!(s.state.in_flight(), 0);
    let (st, _, _) = send(
        &s.router,
        post("/v1/completions", json!({"prompt": "x", "max_tokens": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "capacity is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_client_that_leaves_cancels_its_request() {
    let s = server_stepping(config(), 8, Duration::from_millis(5));
    let long = json!({"prompt": "The", "max_tokens": 240, "ignore_eos": true});
    let engine = s.state.model().unwrap().engine.clone();
    let call = tokio::spawn(s.router.clone().oneshot(post("/v1/completions", long)));
    // Wait until the engine holds the request, then the client gives up: the handler future
    // is dropped mid-generation (240 steps of 5 ms are far from done).
    let mut stats = engine.stats().unwrap();
    for _ in 0..2000 {
        if stats.running == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        stats = engine.stats().unwrap();
    }
    assert_eq!(stats.running, 1, "the request started: {stats:?}");
    call.abort();
    for _ in 0..2000 {
        if stats.requests == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = engine.stats().unwrap();
    }
    assert_eq!(
        (stats.requests, stats.free_blocks, stats.cancelled),
        (0, stats.total_blocks, 1),
        "cancelled, not run to its end: {stats:?}"
    );
    assert_failures_counted(&s.router, &[("cancelled", 1)]).await;
}

/// `/metrics` counts these failures by reason (a disconnect is `cancelled`).
async fn assert_failures_counted(router: &axum::Router, want: &[(&str, u64)]) {
    let (_, _, m) = send(router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    for (reason, n) in want {
        let line = format!("aisle:request_failure_total{{reason=\"{reason}\"}} {n}");
        assert!(m.lines().any(|l| l == line), "no `{line}` in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_kv_cache_cannot_hold_is_a_400_streamed_or_not() {
    // 8 blocks of 4 tokens: 32 tokens of KV, well inside the fixture's 256-token context.
    let model = aisle::runtime::LoadedModel::load_dir(&common::fixture("mistral")).expect("fixture");
    let (served, _engine) = common::served(&model, 4, 8, 64, 8, Duration::ZERO);
    let state = AppState::new(config());
    state.set_model(served);
    let router = app(state);
    for stream in [false, true] {
        let body = json!({"prompt": "The", "max_tokens": 100, "stream": stream});
        let (st, e) = error_of(&router, post("/v1/completions", body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "stream {stream}: {e}");
        assert!(e["message"].as_str().unwrap().contains("KV cache blocks"), "{e}");
    }
    let fits = json!({"prompt": "The", "max_tokens": 20, "stream": true});
    assert_eq!(send(&router, post("/v1/completions", fits)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_open_at_the_shutdown_deadline_end_with_an_error_event() {
    let s = server_stepping(config(), 8, Duration::from_millis(5));
    let long = json!({"prompt": "The", "max_tokens": 200, "ignore_eos": true, "stream": true});
    let resp = s.router.clone().oneshot(post("/v1/completions", long)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.state.cut_streams(); // what `serve` does when the drain runs out of time
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("shutting down"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    assert_failures_counted(&s.router, &[("unavailable", 1)]).await;
}
