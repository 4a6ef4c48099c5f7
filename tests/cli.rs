//! The `aisle` binary end to end on every fixture: `generate` streams the same text as
//! transformers' greedy decode (also on the static-shape executor), `inspect` reports the
//! right parameter count, `neuron-manifest` hashes NEFFs, and bad input exits non-zero with a
//! message.

use crate::common;

use common::{aisle, fixture, Golden, FAMILIES};

/// `generate` (with `extra` flags) on every golden prompt of `families` streams exactly
/// transformers' greedy text.
fn assert_greedy_text(families: &[&str], extra: &[&str]) {
    for name in families {
        let golden = Golden::load(name);
        let dir = fixture(name);
        for p in golden.prompts() {
            let mut args = vec!["generate", "--model", dir.to_str().unwrap(), "--prompt"];
            args.push(p["text"].as_str().unwrap());
            args.extend(["--max-tokens", "32", "--temperature", "0", "--ignore-eos"]);
            args.extend(extra);
            let (ok, stdout, stderr) = aisle(&args);
            assert!(ok, "{name} {extra:?}: {stderr}");
            let expected = p["f32_greedy_text_skip_special"].as_str().unwrap();
            assert_eq!(stdout, format!("{expected}\n"), "{name} {extra:?}: generated text");
            assert!(
                stderr.contains("tok/s") && stderr.contains("finish_reason: length"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn generate_streams_transformers_greedy_text() {
    assert_greedy_text(&FAMILIES, &[]);
}

#[test]
fn generate_on_the_static_shape_executor_streams_the_same_text() {
    let flags = [
        "--device",
        "cpu-static",
        "--max-batch",
        "2",
        "--max-len",
        "128",
        "--min-bucket",
        "8",
    ];
    assert_greedy_text(&["llama", "mistral", "qwen3"], &flags);
}

#[test]
fn generate_stops_at_eos_and_supports_chat_and_sampling() {
    let dir = fixture("mistral");
    let dir = dir.to_str().unwrap();
    // The trained fixture ends the sentence with <|im_end|>, an eos id: generation stops there.
    let (ok, stdout, stderr) = aisle(&[
        "generate",
        "--model",
        dir,
        "--prompt",
        "The cordless drill has a",
        "--temperature",
        "0",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, " 750 watt motor and two 18 volt batteries.\n");
    assert!(stderr.contains("finish_reason: stop"), "{stderr}");
    let run = |seed: &str| {
        aisle(&[
            "generate",
            "--model",
            dir,
            "--prompt",
            "Is the",
            "--chat",
            "--max-tokens",
            "12",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            seed,
        ])
    };
    let (a, b) = (run("7"), run("7"));
    assert!(a.0, "{}", a.2);
    assert_eq!(a.1, b.1, "same seed, same text");
}

#[test]
fn inspect_reports_config_and_parameter_count() {
    for name in FAMILIES {
        let golden = Golden::load(name);
        let (ok, stdout, stderr) = aisle(&["inspect", "--model", fixture(name).to_str().unwrap()]);
        assert!(ok, "{stderr}");
        let params = golden.json["num_parameters"].as_u64().unwrap();
        assert!(
            stdout.contains(&format!("parameters            {params} ")),
            "{name}: {stdout}"
        );
        assert!(stdout.contains("backends compiled in  cpu"));
        let family = if name == "llama3" { "llama" } else { name };
        assert!(stdout.contains(&format!("family                {family}")), "{stdout}");
    }
}

#[test]
fn bad_input_exits_with_a_message() {
    let (ok, _, stderr) = aisle(&["inspect", "--model", "/nonexistent/model"]);
    assert!(
        !ok && stderr.contains("error: model `/nonexistent/model` not found"),
        "{stderr}"
    );
    let dir = fixture("llama");
    let dir = dir.to_str().unwrap();
    let (ok, _, stderr) = aisle(&["generate", "--model", dir, "--prompt", "x", "--device", "cuda"]);
    assert!(!ok && stderr.contains("not compiled into this binary"), "{stderr}");
    let (ok, _, stderr) = aisle(&["generate", "--model", dir, "--prompt", "x", "--dtype", "int3"]);
    assert!(!ok && stderr.contains("unsupported dtype `int3`"), "{stderr}");
    // qwen2 adds no BOS, so an empty prompt has no tokens at all.
    let qwen = fixture("qwen2");
    let (ok, _, stderr) = aisle(&[
        "generate",
        "--model",
        qwen.to_str().unwrap(),
        "--prompt",
        "",
        "--max-tokens",
        "4",
    ]);
    assert!(!ok && stderr.contains("the prompt is empty"), "{stderr}");
    // A cause our error already quotes is not printed twice.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("config.json"), "{\"hidden_size\": -1}").unwrap();
    let (ok, _, stderr) = aisle(&["inspect", "--model", broken.path().to_str().unwrap()]);
    assert!(
        !ok && stderr.matches("invalid value: integer `-1`").count() == 1,
        "{stderr}"
    );
    // Built-in tools need a model that writes tool calls: refused at load, not a 400 per request.
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shop-tiny");
    let catalog = tiny.join("catalog.json");
    let (ok, _, stderr) = aisle(&[
        "serve",
        "--model",
        tiny.to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
        "--port",
        "0",
    ]);
    assert!(!ok && stderr.contains("has no tool-call format"), "{stderr}");
}

#[test]
fn neuron_manifest_lists_every_bucket_with_its_hash_and_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("llama");
    let args = |d: &std::path::Path| {
        let mut a: Vec<String> = ["neuron-manifest", "--model", dir.to_str().unwrap(), "--neff-dir"]
            .map(String::from)
            .to_vec();
        a.push(d.display().to_string());
        a.extend(["--max-batch", "2", "--max-len", "32", "--min-bucket", "8"].map(String::from));
        a
    };
    let run = |a: &[String]| aisle(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Missing NEFFs: the error names the first file it needed.
    let (ok, _, err) = run(&args(tmp.path()));
    assert!(!ok && err.contains("context_8.neff"), "{err}");
    for stem in ["context", "token"] {
        for b in [8, 16, 32] {
            std::fs::write(tmp.path().join(format!("{stem}_{b}.neff")), format!("{stem} {b}")).unwrap();
        }
    }
    let (ok, out, err) = run(&args(tmp.path()));
    assert!(ok, "{err}");
    assert!(out.contains("6 graphs"), "{out}");
    let text = std::fs::read_to_string(tmp.path().join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["plan"]["context"], serde_json::json!([8, 16, 32]));
    let g = &m["graphs"][1];
    assert_eq!(g["neff"], "context_16.neff");
    // sha256("context 16"), from sha256sum
    assert_eq!(
        g["sha256"],
        "dcafcb5469326a67f88e6d661ec3beb1dfb36d9b3fe027bca18e3287eb5be109"
    );
    assert_eq!(g["inputs"][3]["name"], "attention_mask");
    assert_eq!(g["inputs"][3]["shape"], serde_json::json!([1, 16, 16]));
    assert_eq!(g["outputs"][0]["shape"], serde_json::json!([1, 16, 384]));
}
