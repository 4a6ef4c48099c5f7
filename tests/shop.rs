//! The shipped shopping model (`models/shop-tiny`) and the `aisle eval` harness: the model
//! answers catalog questions correctly through the default `--model`, `aisle eval` holds an
//! accuracy floor on a held-out slice (so a numerics regression in the engine fails CI), the
//! HTTP path gives exactly the in-process answers, the LLM judge grades through
//! `response_format`, and bad datasets fail with clear messages. The grounded preview
//! (`models/shop-grounded`) runs the server's tool loop in `aisle eval` with every call valid.

use crate::common;

use std::path::PathBuf;

use std::sync::Arc;

use serde_json::{json, Value};

use aisle::eval::{self, RunOptions, Target};
use aisle::runtime::LoadedModel;
use aisle::server::AppState;
use common::aisle;

/// Floor on held-out key-fact accuracy for the CI slice (the full set measures higher; see the
/// model card). A broken kernel or cache drops far below it.
const ACCURACY_FLOOR: f64 = 0.85;
const SLICE: usize = 80;

fn shop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shop-tiny")
}

fn heldout() -> PathBuf {
    shop_dir().join("eval/heldout.jsonl")
}

fn catalog() -> Vec<Value> {
    let text = std::fs::read_to_string(shop_dir().join("catalog.json")).expect("catalog.json");
    let json: Value = serde_json::from_str(&text).expect("catalog parses");
    json["products"].as_array().expect("products").clone()
}

#[test]
fn generate_defaults_to_the_shop_model_and_knows_catalog_prices() {
    let products = catalog();
    for p in [&products[3], &products[150], &products[299]] {
        let name = p["name"].as_str().unwrap();
        let question = format!("How much is the {name}?");
        // No --model: the shipped model is the default.
        let (ok, stdout, stderr) = aisle(&["generate", "--chat", "--prompt", &question, "--max-tokens", "40"]);
        assert!(ok, "{stderr}");
        let price = format!("${}", p["price"].as_str().unwrap());
        assert!(stdout.contains(&price), "{question} -> {stdout:?}, expected {price}");
    }
}

#[test]
fn eval_in_process_holds_the_accuracy_floor_on_a_held_out_slice() {
    let (ok, stdout, stderr) = aisle(&[
        "eval",
        "--dataset",
        heldout().to_str().unwrap(),
        "--limit",
        &SLICE.to_string(),
        "--concurrency",
        "16",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints one JSON report");
    assert_eq!(report["items"], SLICE);
    assert_eq!(report["errors"], 0);
    let acc = report["key_fact_accuracy"].as_f64().unwrap();
    assert!(acc >= ACCURACY_FLOOR, "key-fact accuracy {acc} below {ACCURACY_FLOOR}");
    assert!(report["output_tokens"].as_u64().unwrap() > SLICE as u64 * 8);
    for key in ["latency_ms", "ttft_ms"] {
        let p = &report[key];
        assert!(
            p["p50"].as_f64().unwrap() > 0.0 && p["p50"].as_f64() <= p["p99"].as_f64(),
            "{key}: {p}"
        );
    }
    let groups: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["compare", "fact", "unknown"]);
}

#[test]
fn eval_table_and_min_accuracy_gate() {
    let (ok, stdout, stderr) = aisle(&["eval", "--limit", "12", "--min-accuracy", "0.5"]);
    assert!(ok, "{stderr}");
    for needle in ["key fact", "latency", "ttft", "req/s", "tok/s", "heldout.jsonl"] {
        assert!(stdout.contains(needle), "table lacks {needle:?}:\n{stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    let impossible = dir.path().join("impossible.jsonl");
    let line =
        r#"{"messages":[{"role":"user","content":"How much is the Voltrex Pro X3?"}],"expected":"no such fact zzz"}"#;
    std::fs::write(&impossible, format!("{line}\n")).unwrap();
    let results = dir.path().join("results.jsonl");
    let (ok, _, stderr) = aisle(&[
        "eval",
        "--dataset",
        impossible.to_str().unwrap(),
        "--min-accuracy",
        "0.5",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("below --min-accuracy 50.0%"), "{stderr}");
    let row: Value = serde_json::from_str(std::fs::read_to_string(&results).unwrap().trim()).unwrap();
    assert_eq!(row["key_fact"], false);
    assert!(!row["output"].as_str().unwrap().is_empty());
}

#[test]
fn bad_datasets_and_servers_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"expected\": \"x\"}\nnot json\n",
    )
    .unwrap();
    let (ok, _, stderr) = aisle(&["eval", "--dataset", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("bad.jsonl line 2"), "{stderr}");
    let (ok, _, stderr) = aisle(&["eval", "--dataset", "/nonexistent/x.jsonl"]);
    assert!(!ok && stderr.contains("/nonexistent/x.jsonl"), "{stderr}");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (ok, _, stderr) = aisle(&["eval", "--url", &format!("http://127.0.0.1:{port}"), "--limit", "2"]);
    assert!(!ok);
    assert!(
        stderr.contains("evaluation server") && stderr.contains("/v1/models"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_eval_gives_exactly_the_in_process_answers() {
    let model = LoadedModel::load_dir(&shop_dir()).expect("shop-tiny loads");
    let (url, engine) = common::serve_on_loopback(&model, "shop-tiny").await;

    let mut items = eval::load(&heldout()).unwrap();
    items.truncate(40);
    let opts = RunOptions {
        concurrency: 8,
        max_tokens: 64,
        progress: false,
    };
    let http = Target::http(&format!("{url}/v1"), None, None).await.unwrap();
    let (over_http, _) = eval::run(&http, &items, &opts).await;
    let (served, _engine2) = common::served(&model, 16, 512, 512, 32, std::time::Duration::ZERO);
    let state = AppState::new(common::server_config());
    state.set_model(served);
    let local = Target::App {
        app: aisle::server::app(state),
        model: "shop".into(),
    };
    let (in_process, _) = eval::run(&local, &items, &opts).await;
    for (h, l) in over_http.iter().zip(&in_process) {
        assert_eq!(h.error, None);
        assert_eq!(
            (&h.output, h.key_fact, h.completion_tokens),
            (&l.output, l.key_fact, l.completion_tokens),
            "{}",
            h.id
        );
        assert!(h.ttft_ms.is_some());
    }
    let hits = in_process.iter().filter(|r| r.key_fact).count() as f64;
    assert!(hits / items.len() as f64 >= ACCURACY_FLOOR);
    drop(engine);
}

fn grounded_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shop-grounded")
}

/// `aisle eval --json` of the grounded preview on the first `n` items of a dataset.
fn grounded_eval(dataset: &str, n: usize, extra: &[&str]) -> Value {
    let dir = grounded_dir();
    let path = dir.join("eval").join(dataset);
    let limit = n.to_string();
    let mut args = vec![
        "eval",
        "--model",
        dir.to_str().unwrap(),
        "--dataset",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(&["--limit", &limit, "--json"]);
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = aisle(&args);
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).expect("--json prints one JSON report")
}

/// Floor on the grounded preview's held-out slice: it measures 79.2% on these 120 items
/// (below the issue's target: see its model card); without the tool loop it scores 0.8%.
const GROUNDED_FLOOR: f64 = 0.70;

#[test]
fn the_grounded_preview_runs_the_tool_loop_in_eval_with_every_call_valid() {
    for (dataset, extra) in [("heldout.jsonl", vec![]), ("unseen.jsonl", vec!["--catalog"])] {
        let unseen = grounded_dir().join("eval/unseen_catalog.json");
        let extra: Vec<&str> = match extra.is_empty() {
            true => vec![],
            false => vec!["--catalog", unseen.to_str().unwrap()],
        };
        let report = grounded_eval(dataset, 120, &extra);
        assert_eq!(
            (report["items"].as_u64(), report["errors"].as_u64()),
            (Some(120), Some(0))
        );
        assert!(report["tool_calls"].as_u64().unwrap() >= 90, "{report}");
        assert_eq!(report["tool_calls_valid"], 1.0, "{report}");
        let rounds = report["rounds"]["mean"].as_f64().unwrap();
        assert!((1.5..=3.0).contains(&rounds), "rounds per answer {rounds}");
        if dataset == "heldout.jsonl" {
            let acc = report["key_fact_accuracy"].as_f64().unwrap();
            assert!(acc >= GROUNDED_FLOOR, "key-fact accuracy {acc} below {GROUNDED_FLOOR}");
        }
    }
}

/// A judge that checks it was asked with the rubric and a json_schema response format, and
/// grades `correct` exactly when the answer contains the reference's key fact.
async fn stub_judge() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::post;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(req): axum::Json<Value>| {
            let count = count.clone();
            async move {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(req["response_format"]["type"], "json_schema");
                assert_eq!(req["model"], "judge-1");
                let user = req["messages"][1]["content"].as_str().unwrap_or_default().to_string();
                let key = user
                    .split("Key fact: ")
                    .nth(1)
                    .and_then(|r| r.lines().next())
                    .unwrap_or("?");
                let answer = user.split("Assistant's answer: ").nth(1).unwrap_or_default();
                let verdict = if answer.to_lowercase().contains(&key.to_lowercase()) {
                    "correct"
                } else {
                    "incorrect"
                };
                let content = json!({"verdict": verdict, "reason": "stub"}).to_string();
                axum::Json(json!({"choices": [{"message": {"role": "assistant", "content": content}}]}))
            }
        }),
    );
    (common::serve_stub(app).await, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_judge_grades_every_answer_beside_key_fact_accuracy() {
    let (url, asked) = stub_judge().await;
    let out = tokio::task::spawn_blocking(move || {
        aisle(&[
            "eval",
            "--limit",
            "24",
            "--json",
            "--judge-url",
            &url,
            "--judge-model",
            "judge-1",
        ])
    })
    .await
    .unwrap();
    let (ok, stdout, stderr) = out;
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 24);
    assert_eq!(report["judge_errors"], 0);
    // The stub grades by the key fact, so the two accuracies agree item for item.
    assert_eq!(report["judge_accuracy"], report["key_fact_accuracy"], "{report}");
    for g in report["groups"].as_array().unwrap() {
        assert_eq!(g["judge_accuracy"], g["key_fact_accuracy"], "{g}");
    }
}
