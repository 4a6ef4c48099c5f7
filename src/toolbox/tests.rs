use std::sync::Arc;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::*;

async fn stub() -> (String, tokio::task::JoinHandle<()>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let app = Router::new()
        .route(
            "/stock",
            post(|Json(a): Json<Value>| async move { Json(json!({"name": a["name"], "units": 3})) }),
        )
        .route(
            "/fail",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            post(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route(
            "/pair",
            post(move |Json(a): Json<Value>| {
                let b = barrier.clone();
                async move {
                    b.wait().await; // answers only once both calls are in flight
                    Json(json!([a]))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, server)
}

fn http(name: &str, url: String, timeout_ms: Option<u64>) -> HttpToolConfig {
    HttpToolConfig {
        name: name.into(),
        description: Some(format!("{name} tool")),
        url,
        parameters: Some(json!({"type": "object", "properties": {"name": {"type": "string"}}})),
        timeout_ms,
    }
}

fn catalog_box(dir: &std::path::Path) -> Toolbox {
    let cfg = ToolsConfig {
        catalog: Some(crate::catalog::tests::fixture(dir)),
        ..ToolsConfig::default()
    };
    Toolbox::new(&cfg).expect("toolbox")
}

#[tokio::test]
async fn catalog_tools_answer_in_compact_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tb = catalog_box(dir.path());
    assert_eq!(tb.names(), ["search_products", "get_product"]);
    let defs = tb.definitions();
    assert_eq!(
        defs[0]["function"]["parameters"]["properties"]["category"]["enum"],
        json!(["power drills", "electric kettles"])
    );
    let r = tb.call("get_product", r#"{"name": "ironhnad edge n20"}"#).await;
    assert_eq!((r.rows, r.error.as_deref()), (1, None));
    assert!(
        r.content.starts_with(r#"{"id":"SKU-1","name":"Ironhand Edge N20","#),
        "{}",
        r.content
    );
    let r = tb
        .call(
            "search_products",
            r#"{"query": "kettle", "sort": "price_asc", "limit": 1}"#,
        )
        .await;
    let v: Value = serde_json::from_str(&r.content).expect("json");
    assert_eq!(
        (v["total"].as_u64(), v["results"][0]["name"].as_str(), r.rows),
        (Some(2), Some("Caffio Velvet Q12"), 1)
    );
    let r = tb.call("get_product", r#"{"name": "Zentrix Pro X3"}"#).await;
    assert_eq!(
        (r.content.as_str(), r.rows, r.error),
        (r#"{"error":"not found"}"#, 0, None)
    );
}

#[tokio::test]
async fn fields_cut_rows_to_what_was_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tb = catalog_box(dir.path());
    let defs = tb.definitions();
    let enum_ = &defs[1]["function"]["parameters"]["properties"]["fields"]["items"]["enum"];
    assert_eq!(enum_[2], "price");
    assert!(
        enum_.as_array().is_some_and(|a| a.contains(&json!("wattage"))),
        "{enum_}"
    );
    let r = tb
        .call(
            "get_product",
            r#"{"name": "Ironhand Edge N20", "fields": ["price", "wattage", "price"]}"#,
        )
        .await;
    assert_eq!(
        (r.content.as_str(), r.valid),
        (
            r#"{"name":"Ironhand Edge N20","price":"$89.99","wattage":"450 W"}"#,
            true
        )
    );
    let r = tb
        .call(
            "search_products",
            r#"{"query": "kettle", "sort": "price_asc", "limit": 1, "fields": ["rating", "weight"]}"#,
        )
        .await;
    assert_eq!(
        r.content,
        r#"{"total":2,"results":[{"name":"Caffio Velvet Q12","rating":"4.9","weight":"1.4 kg"}]}"#
    );
    let r = tb
        .call(
            "get_product",
            r#"{"name": "Ironhand Edge N20", "fields": ["colour", "heel drop"]}"#,
        )
        .await;
    assert!(
        !r.valid && r.content.contains("unknown field `heel drop`"),
        "{}",
        r.content
    );
}

#[tokio::test]
async fn bad_calls_become_error_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tb = catalog_box(dir.path());
    for (name, args, says) in [
        ("get_price", "{}", "no tool named `get_price`"),
        ("get_product", "{\"name\": ", "not JSON"),
        ("search_products", r#"{"colour": "red"}"#, "unknown field `colour`"),
        ("search_products", r#"{"sort": "cheapest"}"#, "unknown variant"),
        ("get_product", "{}", "`name` or `id`"),
    ] {
        let r = tb.call(name, args).await;
        assert!(!r.valid, "{name} {args}");
        let e = r.error.unwrap_or_default();
        assert!(e.contains(says), "{name} {args}: {e}");
        let v: Value = serde_json::from_str(&r.content).expect("json");
        assert_eq!(v["error"].as_str(), Some(e.as_str()));
    }
}

#[tokio::test]
async fn http_tools_run_in_parallel_and_fail_softly() {
    let (base, _server) = stub().await;
    let cfg = ToolsConfig {
        http: vec![
            http("check_stock", format!("{base}/stock"), None),
            http("broken", format!("{base}/fail"), None),
            http("slow", format!("{base}/slow"), Some(200)),
            http("pair", format!("{base}/pair"), Some(20_000)),
        ],
        ..ToolsConfig::default()
    };
    let tb = Toolbox::new(&cfg).expect("toolbox");
    let r = tb.call("check_stock", r#"{"name": "Ironhand Edge N20"}"#).await;
    assert_eq!(r.content, r#"{"name":"Ironhand Edge N20","units":3}"#);
    let r = tb.call("broken", "{}").await;
    assert_eq!(r.error.as_deref(), Some("broken is not available right now"));
    let r = tb.call("slow", "{}").await;
    assert_eq!(r.error.as_deref(), Some("slow did not answer within 200 ms"));
    assert!(r.valid, "a valid call that timed out");
    // The stub answers `pair` only when two calls are in flight: run one after the other,
    // the first would wait until its timeout.
    let calls = vec![
        ("pair".to_string(), r#"{"n": 1}"#.to_string()),
        ("pair".to_string(), r#"{"n": 2}"#.to_string()),
    ];
    let rs = tb.call_all(&calls).await;
    let got: Vec<&str> = rs.iter().map(|r| r.content.as_str()).collect();
    assert_eq!(got, [r#"[{"n":1}]"#, r#"[{"n":2}]"#]);
    assert_eq!(rs[0].rows, 1);
}

#[test]
fn config_mistakes_are_named() {
    let cfg = |http: Vec<HttpToolConfig>| ToolsConfig {
        http,
        ..ToolsConfig::default()
    };
    let err = |c: ToolsConfig| Toolbox::new(&c).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(cfg(vec![])).contains("declares no tool"));
    assert!(err(cfg(vec![http("a b", "http://x".into(), None)])).contains("tool name"));
    assert!(err(cfg(vec![http("a", "ftp://x".into(), None)])).contains("http://"));
    assert!(err(cfg(vec![
        http("a", "http://x".into(), None),
        http("a", "http://y".into(), None)
    ]))
    .contains("two tools"));
    assert!(err(ToolsConfig {
        max_rounds: 0,
        ..cfg(vec![http("a", "http://x".into(), None)])
    })
    .contains("max_rounds"));
}
