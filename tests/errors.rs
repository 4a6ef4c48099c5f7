//! Every bad-input case gets a clear error naming the file and what is wrong, never a panic:
//! missing file, malformed JSON, unknown architecture, missing tensor, wrong shape,
//! unsupported dtype, truncated or corrupt safetensors, broken shard index, bad template.

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::runtime::LoadedModel;
use candle_core::DType;
use common::fixture;
use safetensors::tensor::{Dtype, TensorView};

/// A writable copy of a fixture directory.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

/// Load the directory and build an executor; the error text of whichever step fails.
fn load_error(dir: &Path) -> String {
    let model = match LoadedModel::load_dir(dir) {
        Ok(m) => m,
        Err(e) => return e.to_string(),
    };
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype: DType::F32,
        block_size: 4,
        num_blocks: 8,
        ..Default::default()
    };
    match model.executor(&opts) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrite model.safetensors with `edit` applied to its (name → (dtype, shape, bytes)) map.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} should mention {p:?}");
    }
}

#[test]
fn missing_config_names_the_file() {
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert_contains(&load_error(dir.path()), &["config.json", "missing"]);
}

#[test]
fn missing_tokenizer_names_the_file() {
    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert_contains(&load_error(dir.path()), &["tokenizer.json", "missing"]);
}

#[test]
fn missing_weights_names_the_files() {
    let dir = copy_fixture("qwen2");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_contains(
        &load_error(dir.path()),
        &["model.safetensors", "model.safetensors.index.json"],
    );
}

#[test]
fn malformed_json_names_file_and_position() {
    let dir = copy_fixture("llama");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64,").unwrap();
    assert_contains(&load_error(dir.path()), &["config.json", "malformed JSON", "line 1"]);
    let dir = copy_fixture("llama");
    std::fs::write(dir.path().join("generation_config.json"), "[1,").unwrap();
    assert_contains(&load_error(dir.path()), &["generation_config.json", "malformed JSON"]);
    let dir = copy_fixture("llama");
    std::fs::write(dir.path().join("tokenizer_config.json"), "nope").unwrap();
    assert_contains(&load_error(dir.path()), &["tokenizer_config.json", "malformed JSON"]);
}

#[test]
fn unknown_architecture_lists_supported_ones() {
    let dir = copy_fixture("mistral");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"mistral\"", "\"gpt2\"");
    std::fs::write(&path, text).unwrap();
    assert_contains(
        &load_error(dir.path()),
        &["config.json", "unknown architecture `gpt2`", "qwen3"],
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture("qwen2");
    rewrite_weights(dir.path(), |m| {
        m.remove("model.layers.1.mlp.up_proj.weight");
    });
    assert_contains(
        &load_error(dir.path()),
        &[
            "missing tensor `model.layers.1.mlp.up_proj.weight`",
            "model.safetensors",
        ],
    );
}

#[test]
fn wrong_shape_reports_expected_and_found() {
    let dir = copy_fixture("qwen2");
    rewrite_weights(dir.path(), |m| {
        let t = m.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        t.1 = vec![t.1[1], t.1[0]];
    });
    assert_contains(
        &load_error(dir.path()),
        &[
            "model.safetensors",
            "`model.layers.0.self_attn.k_proj.weight`",
            "shape [64, 32], expected [32, 64]",
        ],
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = copy_fixture("qwen2"); // bf16 on disk: 2-byte elements, same size as I16
    rewrite_weights(dir.path(), |m| {
        m.get_mut("model.norm.weight").unwrap().0 = Dtype::I16;
    });
    assert_contains(
        &load_error(dir.path()),
        &["model.safetensors", "`model.norm.weight`", "unsupported dtype I16"],
    );
}

#[test]
fn truncated_safetensors_is_detected_at_load() {
    let dir = copy_fixture("llama");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_contains(&load_error(dir.path()), &["model.safetensors", "truncated"]);
}

#[test]
fn garbage_safetensors_is_rejected() {
    let dir = copy_fixture("llama");
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    assert_contains(
        &load_error(dir.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn sharded_index_with_missing_shard_names_it() {
    let dir = copy_fixture("llama3");
    std::fs::remove_file(dir.path().join("model-00003-of-00007.safetensors")).unwrap();
    assert_contains(
        &load_error(dir.path()),
        &["model-00003-of-00007.safetensors", "cannot open"],
    );
    let dir = copy_fixture("llama3");
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
    assert_contains(&load_error(dir.path()), &["model.safetensors.index.json", "weight_map"]);
}

#[test]
fn bad_chat_template_is_reported() {
    let dir = copy_fixture("llama");
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}{{ m.content }",
    )
    .unwrap();
    assert_contains(&load_error(dir.path()), &["bad chat template"]);
}

#[test]
fn a_token_id_past_the_embedding_is_refused_at_load() {
    // 384 entries still, but `h` now has id 384: only a prompt containing "h" would reach it.
    let dir = copy_fixture("llama");
    let path = dir.path().join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["model"]["vocab"]["h"] = serde_json::json!(384);
    std::fs::write(&path, tok.to_string()).unwrap();
    assert_contains(
        &load_error(dir.path()),
        &["tokenizer.json", "token `h` has id 384", "vocab_size of 384"],
    );
}

#[test]
fn generation_defaults_out_of_range_are_refused_at_load() {
    for (edit, says) in [
        (r#""temperature": -1"#, "temperature must be between 0"),
        (r#""top_p": 2"#, "top_p must be between 0 and 1"),
        (r#""top_k": -5"#, "top_k must be 0 (off) or more"),
        (r#""repetition_penalty": 0"#, "repetition_penalty must be a positive"),
        (r#""max_new_tokens": 0"#, "max_new_tokens must be at least 1"),
        (
            r#""eos_token_id": [2, 1000000000]"#,
            "eos_token_id 1000000000 is outside",
        ),
        (r#""eos_token_id": ["x"]"#, "eos_token_id must be a token id"),
    ] {
        let dir = copy_fixture("llama");
        std::fs::write(dir.path().join("generation_config.json"), format!("{{{edit}}}")).unwrap();
        let e = load_error(dir.path());
        assert_contains(&e, &["generation_config.json", says]);
    }
}

#[test]
fn an_empty_tokenizer_vocabulary_is_refused() {
    let dir = copy_fixture("llama");
    let path = dir.path().join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tok["model"]["vocab"] = serde_json::json!({});
    tok["model"]["merges"] = serde_json::json!([]);
    std::fs::write(&path, tok.to_string()).unwrap();
    assert_contains(&load_error(dir.path()), &["tokenizer.json", "empty vocabulary"]);
}

#[test]
fn template_raise_exception_becomes_an_error() {
    let model = LoadedModel::load_dir(&fixture("llama")).unwrap();
    let msgs = [
        aisle::chat_template::ChatMessage::new("system", "a"),
        aisle::chat_template::ChatMessage::new("tool", "b"),
    ];
    let err = model.tokenizer.render_chat(&msgs, None, true).unwrap_err().to_string();
    assert_contains(&err, &["Only user and assistant roles are supported"]);
}

#[test]
fn unknown_model_spec_explains_offline_lookup() {
    let cache = tempfile::tempdir().unwrap();
    let mut hub = aisle::hub::HubOptions::from_vars(|_| None);
    (hub.cache_dir, hub.offline) = (cache.path().to_path_buf(), true);
    let err = LoadedModel::load_with("no-such-org/no-such-model-xyz", &hub)
        .err()
        .unwrap()
        .to_string();
    let cache_dir = cache.path().display().to_string();
    assert_contains(
        &err,
        &[
            "no-such-org/no-such-model-xyz",
            "not in the Hugging Face cache",
            &cache_dir,
            "HF_HUB_OFFLINE",
        ],
    );
    let err = LoadedModel::load_with("./no/such/dir", &hub).err().unwrap().to_string();
    assert_contains(&err, &["./no/such/dir", "no such file or directory", "hub id"]);
    let not_model = cache.path().join("notes.txt");
    std::fs::write(&not_model, "x").unwrap();
    let err = LoadedModel::load_with(not_model.to_str().unwrap(), &hub)
        .err()
        .unwrap()
        .to_string();
    assert_contains(&err, &["notes.txt", "not a model directory or a .gguf file"]);
}

#[test]
fn invalid_batches_are_errors_not_panics() {
    let model = LoadedModel::load_dir(&fixture("llama")).unwrap();
    let mut exec = common::executor(&model, DType::F32, 4);
    let mut b = aisle::batch::Batch::default();
    b.push(&[1, 2, 3], 0, vec![9], aisle::batch::LogitsWanted::Last);
    assert_contains(&exec.execute(&b).unwrap_err().to_string(), &["block id 9", "4 blocks"]);
    let mut b = aisle::batch::Batch::default();
    b.push(&[1, 2, 3, 4, 5], 0, vec![0], aisle::batch::LogitsWanted::Last);
    assert_contains(&exec.execute(&b).unwrap_err().to_string(), &["position 4", "block 1"]);
    let mut b = aisle::batch::Batch::default();
    b.push(&[100_000], 0, vec![0], aisle::batch::LogitsWanted::Last);
    assert_contains(&exec.execute(&b).unwrap_err().to_string(), &["token id 100000"]);
    assert_contains(
        &exec.execute(&aisle::batch::Batch::default()).unwrap_err().to_string(),
        &["empty batch"],
    );
}

#[test]
fn a_config_with_fewer_layers_than_the_weights_is_refused() {
    let dir = copy_fixture("llama");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .unwrap();
    assert_contains(
        &load_error(dir.path()),
        &[
            "model.safetensors",
            "model.layers.1.",
            "more layers than config.json's num_hidden_layers (1)",
        ],
    );
}

#[test]
fn shard_paths_must_stay_in_the_model_directory_and_names_be_unique() {
    let index = |dir: &Path| dir.join("model.safetensors.index.json");
    let edit_map = |dir: &Path, f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index(dir)).unwrap()).unwrap();
        f(v["weight_map"].as_object_mut().unwrap());
        std::fs::write(index(dir), v.to_string()).unwrap();
    };
    for escape in ["../model-00001-of-00007.safetensors", "/etc/passwd"] {
        let dir = copy_fixture("llama3");
        edit_map(dir.path(), &|m| {
            let first = m.keys().next().unwrap().clone();
            m.insert(first, escape.into());
        });
        assert_contains(
            &load_error(dir.path()),
            &["index.json", escape, "not a file name inside"],
        );
    }
    // A second shard holding the same tensors: a name in two shards is refused, not "last wins".
    let dir = copy_fixture("llama3");
    std::fs::copy(
        dir.path().join("model-00001-of-00007.safetensors"),
        dir.path().join("model-00001-copy.safetensors"),
    )
    .unwrap();
    edit_map(dir.path(), &|m| {
        m.insert("extra.weight".into(), "model-00001-copy.safetensors".into());
    });
    assert_contains(&load_error(dir.path()), &["is also in an earlier shard"]);
}

#[cfg(unix)]
#[test]
fn special_files_in_place_of_model_files_are_refused_without_blocking() {
    // A FIFO would block the open until a writer came; /dev/zero would never end.
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("config.json"))
        .status()
        .unwrap();
    assert!(made.success());
    assert_contains(&load_error(dir.path()), &["config.json", "not a regular file"]);
    let dir = copy_fixture("llama");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("tokenizer.json")).unwrap();
    assert_contains(&load_error(dir.path()), &["tokenizer.json", "not a regular file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_outgrows_the_context_is_refused_before_tokenizing() {
    // The messages are two bytes; the template adds 500 kB, far past what 256 positions hold.
    let dir = copy_fixture("mistral");
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ 'tent ' * 100000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
    )
    .unwrap();
    let model = LoadedModel::load_dir(dir.path()).unwrap();
    let (served, _engine) = common::served(&model, 4, 64, 64, 4, std::time::Duration::ZERO);
    let state = aisle::server::AppState::new(common::server_config());
    state.set_model(served);
    let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
    let (status, e) = common::http::error_of(
        &aisle::server::app(state),
        common::http::post("/v1/chat/completions", body),
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "context_length_exceeded");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("bytes of text cannot fit"), "{message}");
}
