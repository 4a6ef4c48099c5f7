//! The grounded shopping assistant: the shipped model behind the server's tool loop answers
//! from the catalog database (a fact with one `get_product` call, a comparison with two calls
//! in one round, an edit to the database in the next answer), streamed and unary alike, with
//! the calls reported; failing and slow tools become answers, not 5xx; client tools keep the
//! OpenAI behaviour; requests the loop cannot serve get 400s.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use aisle::catalog::{Catalog, Lookup};
use aisle::runtime::LoadedModel;
use aisle::server::{app, AppState};
use aisle::toolbox::{HttpToolConfig, Toolbox, ToolsConfig};
use axum::Router;
use common::http::{json_of, post, send, sse};
use serde_json::{json, Value};

fn shop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shop-grounded")
}

struct Shop {
    router: Router,
    _engine: aisle::engine::Engine,
}

fn shop(tools: ToolsConfig) -> Shop {
    let model = LoadedModel::load_dir(&shop_dir()).expect("shop-tiny loads");
    let (served, engine) = common::served(&model, 16, 512, 512, 16, std::time::Duration::ZERO);
    let mut cfg = common::server_config();
    cfg.default_max_tokens = 96;
    let toolbox = Arc::new(Toolbox::new(&tools).expect("toolbox"));
    let state = AppState::with_tools(cfg, None, Some(toolbox));
    state.set_model(served);
    Shop {
        router: app(state),
        _engine: engine,
    }
}

fn catalog_tools(path: PathBuf) -> ToolsConfig {
    ToolsConfig {
        catalog: Some(path),
        ..ToolsConfig::default()
    }
}

/// A database built from the shipped catalog, in a temporary directory.
fn database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shop.db");
    Catalog::build(&shop_dir().join("catalog.json"), &db).expect("build");
    (dir, db)
}

fn ask(question: &str) -> Value {
    json!({"model": "shop", "temperature": 0, "messages": [{"role": "user", "content": question}]})
}

fn row(cat: &Catalog, sku: &str) -> Value {
    cat.get(&Lookup::Id(sku.into())).expect("query").expect("product").row()
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_question_is_answered_from_one_get_product_call() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db.clone()));
    let p = row(&Catalog::open(&db).unwrap(), "SKU-1003");
    let name = p["name"].as_str().unwrap();
    let (status, headers, text) = send(
        &s.router,
        post(
            "/v1/chat/completions",
            ask(&format!("How much do you charge for the {name}?")),
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    // The answer is written from the tool result, which holds just the field the call asked
    // for. The preview misreads some phrasings (see its model card); this one it reads, and
    // how well it reads others is what `aisle eval` measures.
    assert!(content(&body).starts_with(&format!("The {name} costs $")), "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"]["tool_calls"].is_null());
    assert_eq!(headers["x-aisle-tools"], "get_product");
    let tools = &body["aisle_tools"];
    let call = &tools["calls"][0];
    assert_eq!(
        (
            &call["name"],
            &call["arguments"]["name"],
            &call["arguments"]["fields"],
            &call["rows"],
            &call["valid"]
        ),
        (
            &json!("get_product"),
            &json!(name),
            &json!(["price"]),
            &json!(1),
            &json!(true)
        ),
        "{tools}"
    );
    // Round 2's prompt is round 1's prompt and output plus the result: a prefix-cache hit.
    let rounds = tools["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{tools}");
    assert!(
        rounds[1]["cached_tokens"].as_u64() > rounds[0]["cached_tokens"].as_u64(),
        "{tools}"
    );
    assert!(
        rounds[1]["cached_tokens"].as_u64().unwrap() >= rounds[0]["prompt_tokens"].as_u64().unwrap() / 16 * 16,
        "{tools}"
    );
    let prompts: u64 = rounds.iter().map(|r| r["prompt_tokens"].as_u64().unwrap()).sum();
    assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(prompts));
    let get = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, _, metrics) = send(&s.router, get).await;
    assert!(
        metrics.contains(r#"aisle:tool_calls_total{outcome="ok",tool="get_product"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_match_unary_ones_and_list_the_calls() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db.clone()));
    let p = row(&Catalog::open(&db).unwrap(), "SKU-1004");
    let q = ask(&format!("is the {} in stock", p["name"].as_str().unwrap()));
    let (_, unary) = json_of(&s.router, post("/v1/chat/completions", q.clone())).await;
    let mut stream = q;
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = send(&s.router, post("/v1/chat/completions", stream)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-aisle-tools"], "get_product");
    let events = sse(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content(&unary));
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"]["tool_calls"].is_null()));
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"].is_string())
        .unwrap();
    assert_eq!(
        without_latency(&finish["aisle_tools"]["calls"]),
        without_latency(&unary["aisle_tools"]["calls"])
    );
    // The same tokens; the second request finds more of them in the prefix cache.
    let (su, uu) = (&chunks.last().unwrap()["usage"], &unary["usage"]);
    assert_eq!(
        (&su["prompt_tokens"], &su["completion_tokens"]),
        (&uu["prompt_tokens"], &uu["completion_tokens"])
    );
    assert!(
        su["prompt_tokens_details"]["cached_tokens"].as_u64() >= uu["prompt_tokens_details"]["cached_tokens"].as_u64()
    );
}

/// Latencies differ run to run; everything else about a call must not.
fn without_latency(calls: &Value) -> Value {
    let mut calls = calls.clone();
    for c in calls.as_array_mut().into_iter().flatten() {
        c["latency_ms"] = Value::Null;
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comparison_runs_two_calls_in_one_round() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db.clone()));
    let cat = Catalog::open(&db).unwrap();
    let (a, b) = (row(&cat, "SKU-1050"), row(&cat, "SKU-1061"));
    let (na, nb) = (a["name"].as_str().unwrap(), b["name"].as_str().unwrap());
    let (_, body) = json_of(
        &s.router,
        post(
            "/v1/chat/completions",
            ask(&format!("Which is cheaper, the {na} or the {nb}?")),
        ),
    )
    .await;
    let calls = body["aisle_tools"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{body}");
    assert!(calls.iter().all(|c| c["round"] == 1 && c["name"] == "get_product"));
    let args: Vec<&Value> = calls.iter().map(|c| &c["arguments"]["name"]).collect();
    assert_eq!(args, [&json!(na), &json!(nb)], "{body}");
    assert!(calls.iter().all(|c| c["rows"] == 1 && c["valid"] == true), "{body}");
    assert_eq!(body["aisle_tools"]["rounds"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_the_database_shows_in_the_next_answer() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db.clone()));
    let editor = Catalog::open(&db).unwrap();
    let p = row(&editor, "SKU-1004");
    let name = p["name"].as_str().unwrap();
    let price_q = ask(&format!("How much do you charge for the {name}?"));
    // What the loop's tool call read, before and after the edits (the answer is written from
    // it; how exactly this preview model copies it is what `aisle eval` measures).
    let read = |body: &Value| -> Value {
        let result = body["aisle_tools"]["calls"][0]["result"]
            .as_str()
            .unwrap_or("{}")
            .to_string();
        serde_json::from_str(&result).unwrap()
    };
    let stock_q = ask(&format!("Is the {name} in stock?"));
    let (_, before) = json_of(&s.router, post("/v1/chat/completions", price_q.clone())).await;
    assert_eq!(read(&before), json!({"name": name, "price": p["price"]}), "{before}");
    let (_, before) = json_of(&s.router, post("/v1/chat/completions", stock_q.clone())).await;
    assert_eq!(read(&before), json!({"name": name, "stock": p["stock"]}), "{before}");
    editor.set(name, "price", "1234.56").unwrap();
    let flipped = if p["stock"] == "in stock" { "false" } else { "true" };
    editor.set(name, "in_stock", flipped).unwrap();
    let (_, after) = json_of(&s.router, post("/v1/chat/completions", price_q)).await;
    assert_eq!(read(&after)["price"], "$1234.56", "{after}");
    assert!(content(&after).starts_with(&format!("The {name} costs $")), "{after}");
    let (_, after) = json_of(&s.router, post("/v1/chat/completions", stock_q)).await;
    let stock = if flipped == "true" { "in stock" } else { "out of stock" };
    assert_eq!(read(&after)["stock"], stock, "{after}");
}

async fn stub_tools() -> String {
    use axum::routing::post as route;
    let app = Router::new()
        .route(
            "/fail",
            route(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/slow",
            route(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        );
    common::serve_stub(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_slow_tools_become_answers_not_errors() {
    let base = stub_tools().await;
    for (path, timeout_ms, says) in [
        ("fail", None, "is not available right now"),
        ("slow", Some(300), "did not answer within 300 ms"),
    ] {
        let http = |name: &str| HttpToolConfig {
            name: name.into(),
            description: None,
            url: format!("{base}/{path}"),
            parameters: Some(json!({"type": "object", "properties": {"name": {"type": "string"}}})),
            timeout_ms,
        };
        let s = shop(ToolsConfig {
            http: vec![http("search_products"), http("get_product")],
            ..ToolsConfig::default()
        });
        let (status, body) = json_of(
            &s.router,
            post("/v1/chat/completions", ask("How much is the Ironhand Edge N20?")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let call = &body["aisle_tools"]["calls"][0];
        assert!(call["error"].as_str().unwrap().contains(says), "{call}");
        assert_eq!(call["valid"], true);
        let text = content(&body);
        assert!(text.contains("can't check") && !text.contains('$'), "{path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tools_return_the_calls_to_the_client() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db.clone()));
    let tools = Toolbox::new(&catalog_tools(db)).unwrap().definitions();
    let mut q = ask("How much is the Ironhand Edge N20?");
    q["tools"] = tools;
    let (status, headers, text) = send(&s.router, post("/v1/chat/completions", q)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers.get("x-aisle-tools").is_none());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_product");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"name": "Ironhand Edge N20", "fields": ["price"]}));
    assert!(body.get("aisle_tools").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_loop_cannot_serve_are_400s_naming_the_field() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db));
    for (field, value) in [
        ("n", json!(2)),
        ("prompt_logprobs", json!(1)),
        ("response_format", json!({"type": "json_object"})),
    ] {
        let mut q = ask("How much is the Ironhand Edge N20?");
        q[field] = value;
        let (status, body) = json_of(&s.router, post("/v1/chat/completions", q)).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    let mut q = ask("How much is the Ironhand Edge N20?");
    q["tool_choice"] = json!("none");
    let (status, headers, text) = send(&s.router, post("/v1/chat/completions", q)).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers.get("x-aisle-tools").is_none() && !text.contains("aisle_tools"));
}

/// A remote that answers every chat request with "from remote" (JSON or SSE).
async fn fake_remote() -> String {
    use axum::response::IntoResponse;
    async fn handler(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        if body["stream"].as_bool().unwrap_or(false) {
            let c = |d: Value, f: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "r", "object": "chat.completion.chunk",
                "model": "big-model", "choices": [{"index": 0, "delta": d, "finish_reason": f}]})
                )
            };
            let s = c(json!({"role": "assistant", "content": "from remote"}), Value::Null)
                + &c(json!({}), json!("stop"))
                + "data: [DONE]\n\n";
            return ([("content-type", "text/event-stream")], s).into_response();
        }
        axum::Json(json!({"id": "r", "object": "chat.completion", "created": 1, "model": "big-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "from remote"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
        .into_response()
    }
    let app = Router::new().route("/v1/chat/completions", axum::routing::post(handler));
    format!("{}/v1", common::serve_stub(app).await)
}

fn routed_shop(remote: &str, extra: &str) -> Shop {
    let text = format!(
        "[local]\nmodel = \"unused\"\nname = \"shop\"\n\n[[remote]]\nname = \"big\"\nbase_url = \"{remote}\"\nmodel = \"big-model\"\nmax_retries = 0\n\n[routing]\nfallback = \"big\"\n\n[routing.complex]\nkeywords = [\"plan\"]\n\n{extra}"
    );
    let routing = aisle::fallback::RoutingConfig::parse(&text, "test.toml").unwrap();
    let model = LoadedModel::load_dir(&shop_dir()).expect("shop-tiny loads");
    let (served, engine) = common::served(&model, 16, 512, 512, 16, std::time::Duration::ZERO);
    let mut cfg = common::server_config();
    cfg.default_max_tokens = 96;
    let toolbox = Arc::new(Toolbox::new(&catalog_tools(shop_dir().join("catalog.json"))).unwrap());
    let backends = aisle::fallback::Backends::new(routing).unwrap();
    let state = AppState::with_tools(cfg, Some(backends), Some(toolbox));
    state.set_model(served);
    Shop {
        router: app(state),
        _engine: engine,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_still_applies_with_built_in_tools() {
    let remote = fake_remote().await;
    // Complexity: a planning question goes to the remote model before any tool runs.
    let s = routed_shop(&remote, "");
    let q = ask("Help me plan a camping trip for four: which tent and backpack should I buy?");
    let (status, headers, text) = send(&s.router, post("/v1/chat/completions", q)).await;
    assert_eq!(
        (status.as_u16(), headers["x-aisle-route"].to_str().unwrap()),
        (200, "remote:big"),
        "{text}"
    );
    assert!(text.contains("from remote") && !text.contains("aisle_tools"), "{text}");
    // A product question stays local and runs the tools.
    let (_, headers, text) = send(
        &s.router,
        post("/v1/chat/completions", ask("How much is the Ironhand Edge N20?")),
    )
    .await;
    assert_eq!(headers["x-aisle-route"], "local");
    assert!(text.contains("$323.99") || text.contains("aisle_tools"), "{text}");
    // The confidence cascade judges the tool loop's final answer: with an impossible floor
    // every local answer is sent on, unary and streamed.
    let s = routed_shop(
        &remote,
        "[routing.cascade]\nenabled = true\nmin_mean_logprob = 0.0\nstream_decide_tokens = 3\n",
    );
    for stream in [false, true] {
        let mut q = ask("How much is the Ironhand Edge N20?");
        q["stream"] = json!(stream);
        let (status, headers, text) = send(&s.router, post("/v1/chat/completions", q)).await;
        assert_eq!(
            (status.as_u16(), headers["x-aisle-route"].to_str().unwrap()),
            (200, "remote:big"),
            "stream {stream}: {text}"
        );
        assert!(text.contains("from remote"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_off_by_max_tokens_ends_the_loop_with_length_not_an_error() {
    let (_d, db) = database();
    let s = shop(catalog_tools(db));
    let mut q = ask("How much do you charge for the Ironhand Edge N20?");
    q["max_tokens"] = json!(20); // the call needs about 40 tokens; its name is out by 20
    let (status, _, text) = send(&s.router, post("/v1/chat/completions", q)).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    let calls = body["aisle_tools"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(
        (&calls[0]["valid"], &calls[0]["rows"]),
        (&json!(false), &json!(0)),
        "{body}"
    );
    assert!(calls[0]["error"].as_str().unwrap().contains("not JSON"), "{body}");
    assert_eq!(
        body["aisle_tools"]["rounds"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
}
