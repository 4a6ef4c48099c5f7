//! `aisle bench-serve` and the `aisle::loadtest` library behind it, against the shipped model
//! served by the real router on loopback: every request completes with the asked-for token
//! counts, timings are recorded, and the CLI prints a table or JSON and fails clearly.

use crate::common;

use std::sync::Arc;

use aisle::loadtest::{self, BenchReport, LoadOptions, Server};
use aisle::runtime::LoadedModel;

/// The shipped model behind the router on a loopback port; returns its base URL.
async fn serve_shop_tiny() -> (String, aisle::engine::Engine) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shop-tiny");
    let model = LoadedModel::load_dir(&dir).expect("shop-tiny loads");
    common::serve_on_loopback(&model, "shop-tiny").await
}

fn options() -> LoadOptions {
    LoadOptions {
        num_prompts: 24,
        concurrency: 4,
        request_rate: None,
        input_len: 32,
        input_spread: 0.5,
        output_len: 16,
        token_range: (100, 1000),
        seed: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_run_completes_every_request_with_timings() {
    let (url, engine) = serve_shop_tiny().await;
    let opts = options();
    let prompts = loadtest::plan(&opts).unwrap();
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lens.iter().all(|&n| (16..=48).contains(&n)), "{lens:?}");
    assert!(lens.iter().any(|&n| n != lens[0]), "lengths must vary with a spread");
    let server = Server::connect(&url, None, None).await.unwrap();
    assert_eq!(server.model, "shop-tiny");
    let (timings, duration) = loadtest::run(Arc::new(server), prompts, &opts).await;
    for (t, &n) in timings.iter().zip(&lens) {
        assert_eq!(t.error, None);
        assert_eq!((t.prompt_tokens, t.output_tokens), (n, 16));
        assert!(t.ttft.is_some_and(|f| f <= t.e2e));
        assert!(t.itl.len() <= 15, "at most one gap per token after the first");
    }
    let report = BenchReport::new(&opts, &timings, duration);
    assert_eq!((report.completed, report.failed), (24, 0));
    assert_eq!(report.total_output_tokens, 24 * 16);
    assert_eq!(report.total_input_tokens, lens.iter().sum::<usize>());
    assert!(report.ttft_ms.p50 > 0.0 && report.ttft_ms.p50 <= report.ttft_ms.p99);
    assert!(report.e2el_ms.p50 >= report.ttft_ms.p50);
    assert!(report.output_throughput > 0.0 && report.request_throughput > 0.0);
    let table = report.table();
    for needle in [
        "Successful requests:",
        "Time to First Token",
        "Inter-token Latency",
        "P99 (ms):",
    ] {
        assert!(table.contains(needle), "{table}");
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_json_and_writes_the_result_file() {
    let (url, engine) = serve_shop_tiny().await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("bench.json");
    let file_arg = file.to_str().unwrap().to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        common::aisle(&[
            "bench-serve",
            "--url",
            &url,
            "--num-prompts",
            "6",
            "--concurrency",
            "2",
            "--input-len",
            "20",
            "--output-len",
            "8",
            "--json",
            "--result-file",
            &file_arg,
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(json["completed"], 6);
    assert_eq!(json["total_output_tokens"], 48);
    for key in ["ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"] {
        assert!(json[key]["p90"].is_number(), "{key}");
    }
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["completed"], 6);
    drop(engine);
}

#[test]
fn cli_errors_are_clear() {
    let (ok, _, stderr) = common::aisle(&["bench-serve", "--url", "http://127.0.0.1:9", "--token-range", "5-1"]);
    assert!(!ok && stderr.contains("empty token range 5-1"), "{stderr}");
    let (ok, _, stderr) = common::aisle(&["bench-serve", "--url", "http://127.0.0.1:9", "--num-prompts", "2"]);
    assert!(!ok && stderr.contains("server http://127.0.0.1:9"), "{stderr}");
    let (ok, _, stderr) = common::aisle(&["bench-serve", "--url", "x", "--token-range", "abc"]);
    assert!(!ok && stderr.contains("LO-HI"), "{stderr}");
}
