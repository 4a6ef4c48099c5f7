//! The shipped shopping model (`models/shop-tiny`) and the `aisle eval` harness: the model
//! answers catalog questions correctly through the default `--model`, `aisle eval` holds an
//! accuracy floor on a held-out slice (so a numerics regression in the engine fails CI), the
//! HTTP path gives exactly the in-process answers, and bad datasets fail with clear messages.

mod common;

use std::path::PathBuf;

use serde_json::Value;

use aisle::eval::{self, RunOptions, Target};
use aisle::runtime::LoadedModel;
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
    let local = Target::Local {
        engine: engine.handle(),
        tokenizer: model.tokenizer.clone(),
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
