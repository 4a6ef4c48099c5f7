//! Hostile and broken GGUF files get a clear error naming the file and the key or tensor,
//! never a panic or a huge allocation. Files are written by a minimal GGUF writer here, from
//! one valid tiny llama model, one defect at a time.

use std::path::PathBuf;

use aisle::runtime::LoadedModel;

enum V {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(&'static str),
    Strs(Vec<&'static str>),
    I32s(Vec<i32>),
}

/// A tensor: name, ggml dims (innermost first), ggml type, offset into the data section.
struct T {
    name: &'static str,
    dims: Vec<u64>,
    kind: u32,
    offset: u64,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &V) {
    let put = |out: &mut Vec<u8>, kind: u32| out.extend(kind.to_le_bytes());
    match v {
        V::U32(x) => {
            put(out, 4);
            out.extend(x.to_le_bytes());
        }
        V::F32(x) => {
            put(out, 6);
            out.extend(x.to_le_bytes());
        }
        V::Bool(b) => {
            put(out, 7);
            out.push(*b as u8);
        }
        V::Str(s) => {
            put(out, 8);
            string(out, s);
        }
        V::Strs(list) => {
            put(out, 9);
            out.extend(8u32.to_le_bytes());
            out.extend((list.len() as u64).to_le_bytes());
            list.iter().for_each(|s| string(out, s));
        }
        V::I32s(list) => {
            put(out, 9);
            out.extend(5u32.to_le_bytes());
            out.extend((list.len() as u64).to_le_bytes());
            list.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
    }
}

fn write(kv: &[(&str, V)], tensors: &[T], data_len: usize, alignment: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        string(&mut out, k);
        value(&mut out, v);
    }
    for t in tensors {
        string(&mut out, t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.kind.to_le_bytes());
        out.extend(t.offset.to_le_bytes());
    }
    let a = alignment.max(1) as usize;
    out.resize(out.len().div_ceil(a) * a, 0);
    let floats = data_len / 4;
    out.extend((0..floats).flat_map(|i| (((i % 7) as f32 - 3.0) / 10.0).to_le_bytes()));
    out
}

/// The tiny model: hidden 8, 2 heads of 4, 1 kv head, ffn 16, 1 layer, 4 tokens.
fn metadata() -> Vec<(&'static str, V)> {
    vec![
        ("general.architecture", V::Str("llama")),
        ("general.alignment", V::U32(32)),
        ("llama.block_count", V::U32(1)),
        ("llama.embedding_length", V::U32(8)),
        ("llama.feed_forward_length", V::U32(16)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.attention.head_count_kv", V::U32(1)),
        ("llama.context_length", V::U32(64)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.rope.freq_base", V::F32(10000.0)),
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.pre", V::Str("gpt-2")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a", "b", "ab", "<|end|>"])),
        ("tokenizer.ggml.token_type", V::I32s(vec![1, 1, 1, 3])),
        ("tokenizer.ggml.merges", V::Strs(vec!["a b"])),
        ("tokenizer.ggml.eos_token_id", V::U32(3)),
        ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        (
            "tokenizer.chat_template",
            V::Str("{% for m in messages %}{{ m['content'] }}{% endfor %}"),
        ),
    ]
}

/// Every tensor as f32, laid out back to back; returns them and the data length.
fn tensors() -> (Vec<T>, usize) {
    let shapes: [(&'static str, Vec<u64>); 11] = [
        ("token_embd.weight", vec![8, 4]),
        ("output_norm.weight", vec![8]),
        ("blk.0.attn_norm.weight", vec![8]),
        ("blk.0.attn_q.weight", vec![8, 8]),
        ("blk.0.attn_k.weight", vec![8, 4]),
        ("blk.0.attn_v.weight", vec![8, 4]),
        ("blk.0.attn_output.weight", vec![8, 8]),
        ("blk.0.ffn_norm.weight", vec![8]),
        ("blk.0.ffn_gate.weight", vec![8, 16]),
        ("blk.0.ffn_up.weight", vec![8, 16]),
        ("blk.0.ffn_down.weight", vec![16, 8]),
    ];
    let mut offset = 0;
    let list = shapes
        .into_iter()
        .map(|(name, dims)| {
            let t = T {
                name,
                kind: 0,
                offset,
                dims: dims.clone(),
            };
            offset += dims.iter().product::<u64>() * 4;
            t
        })
        .collect();
    (list, offset as usize)
}

fn save(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf_errors");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Write the model with `edit` applied to its metadata and tensors, load it, return the error.
fn load_error(name: &str, edit: impl FnOnce(&mut Vec<(&'static str, V)>, &mut Vec<T>)) -> String {
    let (mut kv, (mut ts, len)) = (metadata(), tensors());
    edit(&mut kv, &mut ts);
    let path = save(name, &write(&kv, &ts, len, 32));
    match LoadedModel::load(path.to_str().unwrap()) {
        Ok(_) => panic!("{name}: loaded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(path.to_str().unwrap()),
                "{name}: message does not name the file: {msg}"
            );
            msg
        }
    }
}

fn set(kv: &mut [(&'static str, V)], key: &str, v: V) {
    kv.iter_mut().find(|(k, _)| *k == key).expect(key).1 = v;
}

#[test]
fn the_valid_tiny_model_loads_and_runs() {
    let (kv, (ts, len)) = (metadata(), tensors());
    let path = save("valid", &write(&kv, &ts, len, 32));
    let m = LoadedModel::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config.num_layers, 1);
    assert!(m.config.tie_word_embeddings);
    assert_eq!(m.tokenizer.encode("ab", false).unwrap(), vec![2]);
    // A vector reads whole (output_norm starts at float 32 of the data section).
    let norm = m.weights.vec_f32("model.norm.weight", &[8]).unwrap();
    let want: Vec<f32> = (32..40).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
    assert_eq!(norm, want);
    let opts = aisle::backend::ExecutorOptions {
        num_blocks: 4,
        ..Default::default()
    };
    let mut exec = m.executor(&opts).unwrap();
    let mut batch = aisle::batch::Batch::default();
    batch.push(&[0, 1, 2], 0, vec![0], aisle::batch::LogitsWanted::Last);
    assert_eq!(exec.execute(&batch).unwrap().logits.len(), 4);
}

#[test]
fn a_truncated_file_names_the_tensor_that_does_not_fit() {
    let (kv, (ts, len)) = (metadata(), tensors());
    let bytes = write(&kv, &ts, len, 32);
    let path = save("truncated", &bytes[..bytes.len() - 100]);
    let msg = LoadedModel::load(path.to_str().unwrap())
        .err()
        .expect("error")
        .to_string();
    assert!(
        msg.contains("blk.0.ffn_down.weight") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn header_defects_are_errors_not_panics() {
    let bad_magic = {
        let (kv, (ts, len)) = (metadata(), tensors());
        let mut b = write(&kv, &ts, len, 32);
        b[..4].copy_from_slice(b"GGUX");
        b
    };
    let msg = LoadedModel::load(save("magic", &bad_magic).to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("not a valid GGUF file"), "{msg}");

    // Refused before candle's reader, which would divide by it (found by libFuzzer).
    let msg = load_error("alignment0", |kv, _| set(kv, "general.alignment", V::U32(0)));
    assert!(msg.contains("`general.alignment` is 0"), "{msg}");

    let msg = load_error("duplicate", |_, ts| ts[4].name = "blk.0.attn_q.weight");
    assert!(msg.contains("duplicate tensor names"), "{msg}");

    let msg = load_error("hugedims", |_, ts| ts[0].dims = vec![1 << 40, 1 << 40]);
    assert!(msg.contains("token_embd.weight"), "{msg}");

    let msg = load_error("offset", |_, ts| ts[3].offset = u64::MAX - 8);
    assert!(msg.contains("blk.0.attn_q.weight"), "{msg}");

    let msg = load_error("unknown_tensor", |_, ts| ts[3].name = "blk.0.attn_qkv.weight");
    assert!(
        msg.contains("blk.0.attn_qkv.weight") && msg.contains("name table"),
        "{msg}"
    );

    let msg = load_error("bad_type", |_, ts| ts[1].kind = 99);
    assert!(msg.contains("not a valid GGUF file"), "{msg}");
}

#[test]
fn metadata_defects_name_their_key() {
    let msg = load_error("arch", |kv, _| set(kv, "general.architecture", V::Str("gpt5")));
    assert!(msg.contains("architecture `gpt5` is not supported"), "{msg}");

    let msg = load_error("no_layers", |kv, _| kv.retain(|(k, _)| *k != "llama.block_count"));
    assert!(msg.contains("llama.block_count") && msg.contains("missing"), "{msg}");

    let msg = load_error("layers_type", |kv, _| set(kv, "llama.block_count", V::Str("one")));
    assert!(msg.contains("llama.block_count"), "{msg}");

    let msg = load_error("pre", |kv, _| set(kv, "tokenizer.ggml.pre", V::Str("nonesuch")));
    assert!(msg.contains("pre-tokenizer `nonesuch`"), "{msg}");

    let msg = load_error("tok_model", |kv, _| set(kv, "tokenizer.ggml.model", V::Str("bert")));
    assert!(msg.contains("tokenizer model `bert`"), "{msg}");

    let msg = load_error("eos_range", |kv, _| set(kv, "tokenizer.ggml.eos_token_id", V::U32(99)));
    assert!(
        msg.contains("tokenizer.ggml.eos_token_id") && msg.contains("outside"),
        "{msg}"
    );

    let msg = load_error("types_len", |kv, _| {
        set(kv, "tokenizer.ggml.token_type", V::I32s(vec![1]))
    });
    assert!(msg.contains("1 token types for 4 tokens"), "{msg}");

    let msg = load_error("template", |kv, _| {
        set(kv, "tokenizer.chat_template", V::Str("{% for %}"))
    });
    assert!(msg.contains("chat template"), "{msg}");

    let msg = load_error("rotary", |kv, _| kv.push(("llama.rope.dimension_count", V::U32(2))));
    assert!(msg.contains("llama.rope.dimension_count"), "{msg}");

    let msg = load_error("heads", |kv, _| set(kv, "llama.attention.head_count_kv", V::U32(3)));
    assert!(msg.contains("num_key_value_heads"), "{msg}");
}

#[test]
fn a_fifo_in_place_of_the_file_is_refused_without_blocking() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf_errors/fifo.gguf");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    let ok = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    let msg = LoadedModel::load(path.to_str().unwrap())
        .err()
        .expect("error")
        .to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
}
