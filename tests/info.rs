//! The endpoints clients probe (`models.retrieve`, vLLM's `/tokenize`, `/detokenize`,
//! `/tokenizer_info`, `/version`), CORS, `role: developer` and per-chunk usage, in-process
//! through `app(state)` against the mistral fixture, compared with its tokenizer loaded here.

use crate::common;

use aisle::chat_template::ChatMessage;
use aisle::server::ServerConfig;
use aisle::tokenizer::TextTokenizer;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::http::{config, error_of, json_of, post, send, server, server_with, sse};
use serde_json::{json, Value};

fn tokenizer() -> TextTokenizer {
    TextTokenizer::load(&common::fixture("mistral")).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_retrieve_and_version() {
    let s = server();
    let (st, m) = json_of(&s.router, get("/v1/models/shop")).await;
    assert_eq!(
        (st, m["id"].as_str(), m["object"].as_str()),
        (StatusCode::OK, Some("shop"), Some("model"))
    );
    let (_, list) = json_of(&s.router, get("/v1/models")).await;
    assert_eq!(list["data"][0], m, "retrieve returns the listed object");
    let (st, e) = error_of(&s.router, get("/v1/models/mistral")).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"))
    );
    let (st, v) = json_of(&s.router, get("/version")).await;
    assert_eq!(
        (st, v["version"].as_str()),
        (StatusCode::OK, Some(env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_prompt_and_messages_as_the_model_does() {
    let (s, tok) = (server(), tokenizer());
    let text = "What is the wattage of this drill?";
    let (st, v) = json_of(
        &s.router,
        post("/tokenize", json!({"prompt": text, "return_token_strs": true})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(v["tokens"], json!(ids));
    assert_eq!(
        (v["count"].as_u64(), v["max_model_len"].is_u64()),
        (Some(ids.len() as u64), true)
    );
    let strs: Vec<String> = ids.iter().map(|&i| tok.token_str(i).unwrap()).collect();
    assert_eq!(v["token_strs"], json!(strs));
    let (_, bare) = json_of(
        &s.router,
        post("/tokenize", json!({"prompt": text, "add_special_tokens": false})),
    )
    .await;
    assert_eq!(bare["tokens"], json!(tok.encode(text, false).unwrap()));
    assert_ne!(bare["tokens"], v["tokens"], "the fixture's post-processor adds BOS");
    assert_eq!(bare["token_strs"], Value::Null);

    // Chat: the template's rendering, as a chat request's prompt is built.
    let messages = vec![ChatMessage::new("system", "Be brief."), ChatMessage::new("user", text)];
    let want = tok.encode_chat(&messages, None).unwrap();
    let body =
        |role: &str| json!({"messages": [{"role": role, "content": "Be brief."}, {"role": "user", "content": text}]});
    let (st, v) = json_of(&s.router, post("/tokenize", body("system"))).await;
    assert_eq!((st, &v["tokens"]), (StatusCode::OK, &json!(want)));
    let (_, dev) = json_of(&s.router, post("/tokenize", body("developer"))).await;
    assert_eq!(dev["tokens"], v["tokens"], "developer is OpenAI's system");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenizer_requests_are_checked() {
    let s = server();
    for (path, body, param) in [
        (
            "/tokenize",
            json!({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
            "prompt",
        ),
        ("/tokenize", json!({}), "prompt"),
        ("/tokenize", json!({"messages": []}), "messages"),
        ("/detokenize", json!({"tokens": [1, 1 << 30]}), "tokens"),
        ("/detokenize", json!({"tokens": [-1]}), "tokens"),
    ] {
        let (st, e) = error_of(&s.router, post(path, body)).await;
        assert_eq!((st, e["param"].as_str()), (StatusCode::BAD_REQUEST, Some(param)), "{e}");
    }
    let (st, e) = error_of(&s.router, post("/tokenize", json!({"prompt": "a", "truncate": 3}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("truncate"), "{e}");
    let (st, _) = error_of(&s.router, post("/tokenize", json!({"prompt": "a", "model": "other"}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detokenize_and_tokenizer_info() {
    let (s, tok) = (server(), tokenizer());
    let ids = tok.encode("A drill: 750 W, in stock.", true).unwrap();
    let (st, v) = json_of(&s.router, post("/detokenize", json!({"tokens": ids}))).await;
    assert_eq!(
        (st, v["prompt"].as_str()),
        (StatusCode::OK, Some(tok.decode(&ids, false).unwrap().as_str()))
    );
    let (st, info) = json_of(&s.router, get("/tokenizer_info")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(info["eos_token"].as_str(), tok.eos_token.as_deref());
    assert_eq!(info["bos_token"].as_str(), tok.bos_token.as_deref());
    assert_eq!(info["chat_template"].as_str(), tok.chat_template_source());
    assert!(info["chat_template"].is_string() && info["model_max_length"].is_u64());
}

fn preflight(origin: &str) -> Request<Body> {
    Request::options("/v1/chat/completions")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_configured_origins_only() {
    let page = "http://localhost:5173";
    let cfg = ServerConfig {
        allowed_origins: vec![page.into()],
        api_keys: vec!["sk-test".into()],
        ..config()
    };
    let s = server_with(cfg, 4);
    let (st, h, _) = send(&s.router, preflight(page)).await;
    assert_eq!(st, StatusCode::OK, "a preflight needs no API key");
    assert_eq!(h["access-control-allow-origin"], page);
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let (_, h, _) = send(&s.router, preflight("http://evil.example")).await;
    assert!(h.get("access-control-allow-origin").is_none());
    // The real request, refused for its missing key, still tells the page why.
    let req = Request::get("/v1/models")
        .header("origin", page)
        .body(Body::empty())
        .unwrap();
    let (st, h, _) = send(&s.router, req).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(h["access-control-allow-origin"], page);
    assert!(h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    // Default: no origins, no CORS headers.
    let (_, h, _) = send(&server().router, preflight(page)).await;
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_usage_stats_on_every_chunk() {
    let s = server();
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": true,
                      "ignore_eos": true,
                      "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    let (st, _, text) = send(&s.router, post("/v1/chat/completions", body)).await;
    assert_eq!(st, StatusCode::OK, "{text}");
    let chunks: Vec<Value> = sse(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let fin = chunks.last().unwrap()["usage"].clone();
    let mut last = 0;
    for c in &chunks {
        let u = &c["usage"];
        assert_eq!(u["prompt_tokens"], fin["prompt_tokens"], "{c}");
        let done = u["completion_tokens"].as_u64().unwrap();
        assert!(done >= last && u["total_tokens"].as_u64() == Some(done + u["prompt_tokens"].as_u64().unwrap()));
        last = done;
    }
    assert_eq!(fin["completion_tokens"], 6);
    let content: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .collect();
    assert_eq!(
        content[0]["usage"]["completion_tokens"], 0,
        "the role chunk comes before any token"
    );

    let chat = |opts: Value, stream: bool| {
        post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": stream, "stream_options": opts}),
        )
    };
    let (st, e) = error_of(&s.router, chat(json!({"include_usage": true}), false)).await;
    assert_eq!(
        (st, e["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("stream_options"))
    );
    let (st, e) = error_of(&s.router, chat(json!({"usage_every": 2}), true)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("usage_every"), "{e}");
}
