//! The Neuron backend end to end against the fake libnrt (`tests/fake-nrt`, built here with
//! cargo): library loading and symbol lookup, manifest and NEFF checks, tensor binding, the
//! engine serving requests over fixed slots through NEFF calls, and every error path a
//! user can hit. Runs with `cargo test --features neuron`.
//!
//! The fake's "model" makes greedy decoding produce next = (sum of the sequence so far) mod
//! vocab, so a wrong slot, position, mask or lost KV state changes the tokens.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aisle::backend::neuron::manifest::{expected_io, GraphKind, Manifest};
use aisle::backend::neuron::nrt::{Runtime, Tensor};
use aisle::backend::neuron::{NeuronError, NeuronGraphs, NeuronOptions};
use aisle::backend::{BackendError, BucketPlan, Executor, StaticExecutor};
use aisle::config::Config;
use aisle::engine::{EngineCore, Event, GenerationRequest, RequestOutput, SchedulerConfig};
use aisle::runtime::LoadedModel;
use common::fixture;
use serde_json::json;

/// Build the fake library once and return its path.
fn fake_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "fake-nrt"])
            .current_dir(&root)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building tests/fake-nrt failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
        target.join("release/libfake_nrt.so")
    })
    .clone()
}

fn plan() -> BucketPlan {
    BucketPlan::powers_of_two(2, 32, 8).unwrap() // buckets 8, 16, 32
}

/// Write fake NEFFs for every bucket of `plan` (each passed through `edit`) and their manifest.
fn write_model(dir: &Path, cfg: &Config, plan: &BucketPlan, edit: impl Fn(GraphKind, usize, &mut serde_json::Value)) {
    use aisle::backend::neuron::manifest::DType;
    std::fs::create_dir_all(dir).unwrap();
    for (kind, stem, buckets) in [
        (GraphKind::ContextEncoding, "context", &plan.context),
        (GraphKind::TokenGeneration, "token", &plan.token),
    ] {
        for &bucket in buckets {
            let [inputs, outputs] = expected_io(kind, bucket, cfg, plan, DType::Float32);
            let spec = |s: &aisle::backend::neuron::manifest::TensorSpec, usage: &str| json!({"name": s.name, "usage": usage, "dtype": s.dtype.nrt(), "shape": s.shape});
            let tensors: Vec<_> = (inputs.iter().map(|s| spec(s, "input")))
                .chain(outputs.iter().map(|s| spec(s, "output")))
                .collect();
            let kind_name = if kind == GraphKind::ContextEncoding {
                "context_encoding"
            } else {
                "token_generation"
            };
            let mut neff = json!({"fake_neff": 1, "kind": kind_name, "vocab": cfg.vocab_size, "tensors": tensors});
            edit(kind, bucket, &mut neff);
            std::fs::write(dir.join(format!("{stem}_{bucket}.neff")), neff.to_string()).unwrap();
        }
    }
    let m = Manifest::for_neffs(dir, cfg, plan.clone(), DType::Float32).unwrap();
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

fn options(dir: &Path) -> NeuronOptions {
    NeuronOptions {
        manifest: dir.join("manifest.json"),
        libnrt: vec![fake_lib()],
        start_nc: -1,
        nc_count: -1,
    }
}

fn llama() -> LoadedModel {
    LoadedModel::load_dir(&fixture("llama")).expect("fixture")
}

/// The fake model's greedy continuation of `prompt`.
fn expected_tokens(prompt: &[u32], n: usize, vocab: usize) -> Vec<u32> {
    let mut seq: Vec<u32> = prompt.to_vec();
    for _ in 0..n {
        let sum: u64 = seq.iter().map(|&t| t as u64).sum();
        seq.push((sum % vocab as u64) as u32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn engine_serves_requests_through_neff_calls_over_fixed_slots() {
    let model = llama();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &model.config, &plan(), |_, _, _| {});
    let graphs = NeuronGraphs::load(&model.config, &options(dir.path())).expect("load");
    assert!(graphs.library().ends_with("libfake_nrt.so"));
    let exec = StaticExecutor::new(graphs, 4);
    assert!(exec.describe().contains("neuron"), "{}", exec.describe());
    let sched = SchedulerConfig {
        max_batched_tokens: 16,
        max_seqs: 8,
        step_time_target: None,
        speculation: None,
    };
    let mut core = EngineCore::new(Box::new(exec), model.tokenizer.clone(), vec![], sched);
    // Five requests, two slots: prompts across the 8/16 context buckets, decodes across
    // the 16/32 token buckets, slots reused three times.
    let prompts: Vec<Vec<u32>> = [3usize, 8, 9, 17, 1]
        .iter()
        .enumerate()
        .map(|(s, &n)| (0..n).map(|i| ((i * 13 + s * 7 + 5) % 384) as u32).collect())
        .collect();
    let mut rxs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = GenerationRequest {
            prompt: p.clone(),
            max_tokens: 31 - p.len(),
            ignore_eos: true,
            ..GenerationRequest::default()
        };
        core.add(i as u64, req, tx);
        rxs.push(rx);
    }
    let mut steps = 0;
    while core.has_work() {
        let summary = core.step().expect("a step runs");
        assert!(summary.seqs.len() <= 2, "more sequences than slots");
        steps += 1;
        assert!(steps < 500);
    }
    for (i, (mut rx, p)) in rxs.into_iter().zip(&prompts).enumerate() {
        let mut out = RequestOutput::default();
        while let Ok(e) = rx.try_recv() {
            assert!(!matches!(e, Event::Error(_)), "request {i}: {e:?}");
            out.apply(e).unwrap();
        }
        let want = expected_tokens(p, 31 - p.len(), 384);
        assert_eq!(out.choices[0].tokens, want, "request {i}");
    }
}

fn load_err(dir: &Path, cfg: &Config) -> NeuronError {
    match NeuronGraphs::load(cfg, &options(dir)) {
        Err(e) => e,
        Ok(_) => panic!("loading {} should fail", dir.display()),
    }
}

#[test]
fn load_errors_name_the_file_and_what_is_wrong() {
    let cfg = llama().config;
    let tmp = tempfile::tempdir().unwrap();
    // No manifest.
    let e = load_err(tmp.path(), &cfg).to_string();
    assert!(
        e.contains("cannot read the Neuron manifest") && e.contains("manifest.json"),
        "{e}"
    );
    // A NEFF changed after the manifest was written.
    let dir = tmp.path().join("tampered");
    write_model(&dir, &cfg, &plan(), |_, _, _| {});
    std::fs::write(dir.join("token_16.neff"), "{}").unwrap();
    let e = load_err(&dir, &cfg).to_string();
    assert!(e.contains("token_16.neff") && e.contains("sha256"), "{e}");
    // A NEFF whose tensors disagree with the manifest.
    let dir = tmp.path().join("shape");
    write_model(&dir, &cfg, &plan(), |kind, bucket, neff| {
        if kind == GraphKind::ContextEncoding && bucket == 8 {
            neff["tensors"][0]["shape"] = json!([1, 9]);
        }
    });
    let e = load_err(&dir, &cfg).to_string();
    assert!(e.contains("context_8.neff") && e.contains("input_ids"), "{e}");
    // A file the runtime cannot load, and a load that fails on the device.
    for (name, edit, want) in [
        ("garbage", json!("not a neff"), "nrt_load failed: NRT_INVALID (2)"),
        ("resource", json!({"fail_load": 4}), "nrt_load failed: NRT_RESOURCE (4)"),
    ] {
        let dir = tmp.path().join(name);
        write_model(&dir, &cfg, &plan(), |kind, bucket, neff| {
            if kind == GraphKind::TokenGeneration && bucket == 32 {
                match edit.as_object() {
                    Some(o) => neff.as_object_mut().unwrap().extend(o.clone()),
                    None => *neff = edit.clone(),
                }
            }
        });
        let e = load_err(&dir, &cfg).to_string();
        assert!(e.contains(want), "{name}: {e}");
    }
    // A manifest for another model (vocabulary 385).
    let dir = tmp.path().join("other");
    let mut other = cfg.clone();
    other.vocab_size = 385;
    write_model(&dir, &other, &plan(), |_, _, _| {});
    let e = load_err(&dir, &cfg).to_string();
    assert!(e.contains("do not match this model"), "{e}");
}

#[test]
fn execute_failures_surface_as_step_errors() {
    let model = llama();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &model.config, &plan(), |kind, _, neff| {
        if kind == GraphKind::TokenGeneration {
            neff["fail_execute"] = json!(1002);
        }
    });
    let mut exec = StaticExecutor::new(NeuronGraphs::load(&model.config, &options(dir.path())).unwrap(), 4);
    let mut b = aisle::batch::Batch::default();
    b.push(&[1, 2, 3], 0, vec![0], aisle::batch::LogitsWanted::Last);
    let out = exec.execute(&b).expect("context encoding runs");
    assert_eq!(aisle::sampling::argmax(out.row(0)), 6);
    let mut b = aisle::batch::Batch::default();
    b.push(&[6], 3, vec![0, 1], aisle::batch::LogitsWanted::Last);
    let e = exec.execute(&b).unwrap_err();
    assert!(matches!(e, BackendError::Neuron(_)));
    assert!(
        e.to_string().contains("nrt_execute failed: NRT_EXEC_BAD_INPUT (1002)"),
        "{e}"
    );
}

#[test]
fn runtime_binding_loads_symbols_and_moves_tensor_bytes() {
    let missing = PathBuf::from("/nonexistent/libnrt.so.1");
    let e = Runtime::open(std::slice::from_ref(&missing))
        .err()
        .expect("no library")
        .to_string();
    assert!(
        e.contains("/nonexistent/libnrt.so.1") && e.contains("AISLE_LIBNRT"),
        "{e}"
    );
    // A real shared library without the runtime's symbols.
    let e = Runtime::open(&[PathBuf::from("libm.so.6")])
        .err()
        .expect("not libnrt")
        .to_string();
    assert!(e.contains("libm.so.6") && e.contains("nrt_init"), "{e}");
    // The first loadable candidate wins.
    let rt = Runtime::open(&[missing, fake_lib()]).expect("fake libnrt");
    let t = Tensor::allocate(&rt, 0, 16, "probe").unwrap();
    t.write(&[1, 2, 3, 4], 8).unwrap();
    let mut buf = [0u8; 8];
    t.read(&mut buf, 8).unwrap();
    assert_eq!(buf, [1, 2, 3, 4, 0xAB, 0xAB, 0xAB, 0xAB]);
    let e = t.read(&mut buf, 12).unwrap_err().to_string();
    assert_eq!(e, "nrt_tensor_read failed: NRT_INVALID (2)");
}

#[test]
fn device_neuron_without_libnrt_fails_at_startup_with_the_fix() {
    let args = ["generate", "--device", "neuron", "--prompt", "hi", "--max-tokens", "1"];
    let (ok, _, err) = common::aisle_env(&args, &[("AISLE_LIBNRT", "/nonexistent/libnrt.so")]);
    assert!(!ok);
    for want in [
        "/nonexistent/libnrt.so",
        "/opt/aws/neuron/lib/libnrt.so.1",
        "aws-neuronx-runtime-lib",
        "AISLE_LIBNRT",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    let (ok, out, _) = common::aisle(&["inspect"]);
    assert!(ok && out.contains("neuron"), "{out}");
}
