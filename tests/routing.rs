//! Routing and fallback in `aisle serve`: requested alias, complexity, context overflow and
//! overload go to the remote (JSON and SSE), responses keep Aisle's shape with
//! `x-aisle-route`, costs are reported, and a dead remote gives a clear 502/503, never a hang.

use crate::common;

use std::time::{Duration, Instant};

use aisle::engine::Engine;
use aisle::fallback::{Backends, RoutingConfig};
use aisle::server::{app, AppState, ServerConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A fake OpenAI-compatible remote that says which model it was asked for.
async fn fake_remote() -> String {
    async fn handler(Json(body): Json<Value>) -> axum::response::Response {
        let model = body["model"].as_str().unwrap_or("").to_string();
        let usage = json!({"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000});
        if body.get("tools").is_some() {
            return tool_answer(&body, &model, usage);
        }
        if body["stream"].as_bool().unwrap_or(false) {
            let chunk = |c: Value| format!("data: {}\n\n", c);
            let mut s = chunk(json!({"id": "x", "object": "chat.completion.chunk", "model": model,
                                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}));
            s += &chunk(json!({"id": "x", "object": "chat.completion.chunk", "model": model,
                               "choices": [{"index": 0, "delta": {"content": "from remote"}, "finish_reason": null}]}));
            s += &chunk(json!({"id": "x", "object": "chat.completion.chunk", "model": model,
                               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
            s += &chunk(
                json!({"id": "x", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}),
            );
            s += "data: [DONE]\n\n";
            return ([("content-type", "text/event-stream")], s).into_response();
        }
        Json(json!({"id": "x", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "from remote"}, "finish_reason": "stop"}],
                    "usage": usage}))
        .into_response()
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(handler))
        .route("/v1/completions", post(handler));
    format!("{}/v1", common::serve_stub(app).await)
}

/// The fake remote's answer to a request with tools: one call to the first tool whose
/// arguments echo what the remote received (`tool_choice`, `response_format`).
fn tool_answer(body: &Value, model: &str, usage: Value) -> axum::response::Response {
    let name = body["tools"][0]["function"]["name"].clone();
    let args = json!({"tool_choice": body["tool_choice"], "response_format": body["response_format"]}).to_string();
    if body["stream"].as_bool().unwrap_or(false) {
        let chunk = |d: Value, f: Value| {
            let c = json!({"id": "x", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": d, "finish_reason": f}]});
            format!("data: {c}\n\n")
        };
        let mut s = chunk(json!({"role": "assistant", "content": null}), Value::Null);
        s += &chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_r", "type": "function",
                                           "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        );
        s += &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
            Value::Null,
        );
        s += &chunk(json!({}), json!("tool_calls"));
        s += "data: [DONE]\n\n";
        return ([("content-type", "text/event-stream")], s).into_response();
    }
    Json(
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_r", "type": "function", "function": {"name": name, "arguments": args}}]},
                             "finish_reason": "tool_calls"}],
                "usage": usage}),
    )
    .into_response()
}

fn routing(base_url: &str, cascade: Option<f64>, routing_extra: &str) -> RoutingConfig {
    let cascade = match cascade {
        Some(t) => format!("[routing.cascade]\nenabled = true\nmin_mean_logprob = {t:.1}\nstream_decide_tokens = 3\n"),
        None => String::new(),
    };
    let text = format!(
        r#"
[local]
model = "unused"
name = "shop"
price = {{ prompt_per_1m = 1.0, completion_per_1m = 2.0 }}

[[remote]]
name = "big"
base_url = "{base_url}"
model = "big-model"
price = {{ prompt_per_1m = 10.0, completion_per_1m = 20.0 }}
connect_timeout_ms = 300
first_byte_timeout_ms = 2000
max_retries = 0
breaker_failures = 2

[aliases]
smart = "big"

[routing]
fallback = "big"
{routing_extra}

[routing.complex]
keywords = ["compare"]

{cascade}"#
    );
    RoutingConfig::parse(&text, "test.toml").unwrap()
}

struct Local {
    router: Router,
    _engine: Engine,
}

fn local(base_url: &str, max_seqs: usize, max_waiting: usize) -> Local {
    local_with(base_url, max_seqs, max_waiting, None)
}

fn local_with(base_url: &str, max_seqs: usize, max_waiting: usize, cascade: Option<f64>) -> Local {
    local_full(base_url, max_seqs, max_waiting, cascade, "", Duration::ZERO)
}

fn local_full(
    base_url: &str,
    max_seqs: usize,
    max_waiting: usize,
    cascade: Option<f64>,
    extra: &str,
    step: Duration,
) -> Local {
    let (served, engine) = common::served_mistral(max_seqs, step);
    let state = AppState::with_routing(
        local_config(max_waiting),
        Some(Backends::new(routing(base_url, cascade, extra)).unwrap()),
    );
    state.set_model(served);
    Local {
        router: app(state),
        _engine: engine,
    }
}

/// The test servers' config: model `shop`, 8 tokens by default, priced.
fn local_config(max_waiting: usize) -> ServerConfig {
    ServerConfig {
        model_name: "shop".into(),
        api_keys: vec![],
        max_waiting,
        max_body_bytes: 1 << 16,
        body_timeout: std::time::Duration::from_secs(30),
        default_max_tokens: 8,
        local_price: aisle::fallback::Price {
            prompt_per_1m: 1.0,
            completion_per_1m: 2.0,
        },
        tool_parser: Default::default(),
        allowed_origins: vec![],
    }
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let route = resp
        .headers()
        .get("x-aisle-route")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, route, String::from_utf8(bytes.to_vec()).unwrap())
}

fn chat(model: &str, text: &str, extra: Value) -> Value {
    let mut b = json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4});
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

async fn metric(router: &Router, needle: &str) -> bool {
    let (_, _, text) = call(router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    text.contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reason_routes_to_the_remote_in_both_modes() {
    let base = fake_remote().await;
    let l = local(&base, 8, 8);
    let cases = [
        ("smart", "what is the wattage?", json!({}), "requested"),
        ("shop", "Compare the drills please", json!({}), "complex"),
        (
            "shop",
            "what is the wattage?",
            json!({"max_tokens": 250}),
            "context_overflow",
        ),
    ];
    for (model, text, extra, reason) in cases {
        for stream in [false, true] {
            let mut body = chat(model, text, extra.clone());
            body["stream"] = json!(stream);
            let (st, route, text_out) = call(&l.router, post_json("/v1/chat/completions", body)).await;
            assert_eq!(
                (st, route.as_str()),
                (StatusCode::OK, "remote:big"),
                "{reason} stream={stream}: {text_out}"
            );
            if stream {
                assert!(
                    text_out.contains("from remote") && text_out.trim_end().ends_with("data: [DONE]"),
                    "{text_out}"
                );
                assert!(
                    text_out.contains("\"id\":\"chatcmpl-"),
                    "ids rewritten to Aisle's: {text_out}"
                );
                assert!(
                    text_out.contains("\"cost_usd\":0.05"),
                    "cost on the usage chunk: {text_out}"
                );
            } else {
                let v: Value = serde_json::from_str(&text_out).unwrap();
                assert_eq!(v["model"], "big-model", "the model field tells the route");
                assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
                assert_eq!(v["usage"]["cost_usd"], json!(0.05), "1000 × $10/1M + 2000 × $20/1M");
            }
        }
        assert!(
            metric(&l.router, &format!("aisle:fallback_total{{reason=\"{reason}\"}}")).await,
            "{reason} counted"
        );
    }
    let (st, route, text_out) = call(
        &l.router,
        post_json("/v1/chat/completions", chat("shop", "what is the wattage?", json!({}))),
    )
    .await;
    assert_eq!((st, route.as_str()), (StatusCode::OK, "local"), "{text_out}");
    let v: Value = serde_json::from_str(&text_out).unwrap();
    assert!(
        v["usage"]["cost_usd"].as_f64().unwrap() > 0.0,
        "local requests are priced too"
    );
    let (st, _, _) = call(
        &l.router,
        post_json("/v1/chat/completions", chat("nope", "x", json!({}))),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_response_format_go_remote_intact_and_calls_come_back() {
    let base = fake_remote().await;
    let l = local(&base, 8, 8);
    let tools = json!([{"type": "function", "function": {"name": "get_price", "parameters": {"type": "object"}}}]);
    let rf = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}});
    let extra = json!({"tools": tools, "tool_choice": "required", "response_format": rf});
    let sent = json!({"tool_choice": "required", "response_format": rf}).to_string();
    let body = chat("smart", "price?", extra);
    let (st, route, text) = call(&l.router, post_json("/v1/chat/completions", body.clone())).await;
    assert_eq!((st, route.as_str()), (StatusCode::OK, "remote:big"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["tool_calls"][0]["function"]["name"], "get_price");
    assert_eq!(
        c["message"]["tool_calls"][0]["function"]["arguments"],
        json!(sent),
        "the remote saw both fields"
    );
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (st, _, text) = call(&l.router, post_json("/v1/chat/completions", streamed)).await;
    assert_eq!(st, StatusCode::OK);
    let mut args = String::new();
    for p in text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|p| *p != "[DONE]")
    {
        let v: Value = serde_json::from_str(p).unwrap();
        for t in v["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            args.push_str(t["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(args, sent, "streamed tool-call deltas pass through: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_goes_remote_instead_of_429() {
    let base = fake_remote().await;
    let l = local(&base, 1, 0);
    let long = json!({"model": "shop", "prompt": "The", "max_tokens": 200, "ignore_eos": true, "stream": true});
    let held = l
        .router
        .clone()
        .oneshot(post_json("/v1/completions", long))
        .await
        .unwrap();
    assert_eq!(held.headers()["x-aisle-route"], "local");
    for stream in [false, true] {
        let body = chat("shop", "price?", json!({"stream": stream}));
        let (st, route, text) = call(&l.router, post_json("/v1/chat/completions", body)).await;
        assert_eq!(
            (st, route.as_str()),
            (StatusCode::OK, "remote:big"),
            "stream={stream}: {text}"
        );
        assert!(text.contains("from remote"));
    }
    assert!(metric(&l.router, "aisle:fallback_total{reason=\"overload\"} 2").await);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_remote_gives_a_clear_error_fast_then_opens_the_circuit() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/v1")
    };
    let l = local(&dead, 8, 8);
    for _ in 0..2 {
        let start = Instant::now();
        let (st, route, body) = call(
            &l.router,
            post_json("/v1/chat/completions", chat("smart", "x", json!({}))),
        )
        .await;
        assert_eq!((st, route.as_str()), (StatusCode::BAD_GATEWAY, "remote:big"), "{body}");
        assert!(
            body.contains("\"upstream_error\"") && body.contains("cannot connect"),
            "{body}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "bounded by the connect timeout"
        );
    }
    let (st, _, body) = call(
        &l.router,
        post_json("/v1/chat/completions", chat("smart", "x", json!({"stream": true}))),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit open after 2 failures: {body}"
    );
    assert!(metric(&l.router, "aisle:remote_circuit_state{remote=\"big\"} 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidence_cascade_discards_unsure_local_answers() {
    let base = fake_remote().await;
    // Every token logprob is < 0, so a threshold of 0 finds every local answer unsure.
    let unsure = local_with(&base, 8, 8, Some(0.0));
    for stream in [false, true] {
        let body = chat("shop", "what is the wattage?", json!({"stream": stream}));
        let (st, route, text) = call(&unsure.router, post_json("/v1/chat/completions", body)).await;
        assert_eq!(
            (st, route.as_str()),
            (StatusCode::OK, "remote:big"),
            "stream={stream}: {text}"
        );
        assert!(text.contains("from remote"));
        if stream {
            let local_role_chunks = text.matches("\"role\":\"assistant\"").count();
            assert_eq!(
                local_role_chunks, 1,
                "only the remote's role chunk: nothing local was sent: {text}"
            );
        }
    }
    assert!(metric(&unsure.router, "aisle:fallback_total{reason=\"low_confidence\"} 2").await);
    // A threshold of -100 trusts the local model; the client did not ask for logprobs and gets none.
    let sure = local_with(&base, 8, 8, Some(-100.0));
    let (st, route, text) = call(
        &sure.router,
        post_json("/v1/chat/completions", chat("shop", "price?", json!({}))),
    )
    .await;
    assert_eq!((st, route.as_str()), (StatusCode::OK, "local"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    let streamed = chat("shop", "price?", json!({"stream": true}));
    let (st, route, text) = call(&sure.router, post_json("/v1/chat/completions", streamed)).await;
    assert_eq!((st, route.as_str()), (StatusCode::OK, "local"));
    assert!(
        text.trim_end().ends_with("data: [DONE]") && !text.contains("\"logprobs\":{"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_deadline_before_any_answer_goes_remote() {
    let base = fake_remote().await;
    for stream in [false, true] {
        // One slot, 100 ms per step, local deadline 4 s. A holds the slot for 100 steps (10 s;
        // dropped, so cancelled, once B is answered). A goes through a second app on the same
        // engine, without routing, so no deadline ends it early. B waits, and its deadline
        // passes before it ever runs, so the remote answers B. Under the same deadline A ended
        // at its own 4 s, a moment before B's, and B could get a local token in between.
        let (served, engine) = common::served_mistral(1, Duration::from_millis(100));
        let direct = AppState::new(local_config(4));
        direct.set_model(served.clone());
        let routed = AppState::with_routing(
            local_config(4),
            Some(Backends::new(routing(&base, None, "local_timeout_ms = 4000")).unwrap()),
        );
        routed.set_model(served);
        let l = Local {
            router: app(routed),
            _engine: engine,
        };
        let a = json!({"model": "shop", "prompt": "The", "max_tokens": 100, "ignore_eos": true, "stream": true});
        let held = app(direct).oneshot(post_json("/v1/completions", a)).await.unwrap();
        assert_eq!(held.headers()["x-aisle-route"], "local");
        let b = chat("shop", "price?", json!({"stream": stream}));
        let (st, route, text) = call(&l.router, post_json("/v1/chat/completions", b)).await;
        assert_eq!(
            (st, route.as_str()),
            (StatusCode::OK, "remote:big"),
            "stream={stream}: {text}"
        );
        assert!(text.contains("from remote"));
        assert!(metric(&l.router, "aisle:fallback_total{reason=\"local_error\"} 1").await);
        drop(held);
    }
}
