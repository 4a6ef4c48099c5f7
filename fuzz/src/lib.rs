//! The fuzz targets' bodies, one function per untrusted input: `config.json` text, a
//! safetensors file, a GGUF file, a chat template. `fuzz_targets/*.rs` hand each to
//! libFuzzer (`cargo fuzz run TARGET -s none`); `tests/fuzz_replay.rs` runs the same functions
//! over the committed corpus and seeded mutations of it in CI.
//!
//! Each returns whether the input was accepted (parsed or loaded), for the replay's counts.
//!
//! Owns: driving each input through the loader paths a served model takes. Must not: catch
//! panics or hide errors; a panic, a hang or a runaway allocation here is the finding.

use std::path::PathBuf;

use aisle::chat_template::{ChatMessage, ChatTemplate};
use aisle::config::Config;
use aisle::runtime::LoadedModel;
use aisle::weights::Weights;
use candle_core::{DType, Device};

/// Elements read back per tensor at most (bounds the work per input, not the checks).
const MAX_READ: usize = 1 << 16;

/// `config.json` text: parse, resolve, bound-check, then use the numbers as the model does.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(cfg) = Config::from_json(text, "config.json") else {
        return false;
    };
    let _ = cfg.num_parameters();
    let _ = cfg.group_size();
    let _ = cfg.rope_inv_freq();
    true
}

/// A safetensors file: open and index it, then read every tensor whose shape its header
/// declares (as the loader reads one it asks for by shape).
pub fn safetensors(data: &[u8]) -> bool {
    let path = scratch("safetensors");
    if std::fs::write(&path, data).is_err() {
        return false;
    }
    let Ok(weights) = Weights::open_files(std::slice::from_ref(&path)) else {
        return false;
    };
    let _ = weights.check_layers(1);
    let _ = weights.describe_disk_types();
    for (name, shape) in declared_shapes(data) {
        if shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_some_and(|n| n <= MAX_READ)
        {
            let _ = weights.get(&name, &shape, DType::F32, &Device::Cpu);
        }
    }
    true
}

/// The `(name, shape)` pairs of a safetensors header, as far as it parses.
fn declared_shapes(data: &[u8]) -> Vec<(String, Vec<usize>)> {
    let len = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let header = len.and_then(|n| data.get(8..8usize.saturating_add(n.min(1 << 20) as usize)));
    let Some(json) = header.and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok()) else {
        return Vec::new();
    };
    let Some(map) = json.as_object() else { return Vec::new() };
    map.iter()
        .filter_map(|(name, v)| {
            let shape = v.get("shape")?.as_array()?;
            let dims = shape
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()?;
            Some((name.clone(), dims))
        })
        .collect()
}

/// A GGUF file: load it as a model (config, tokenizer and template from the metadata,
/// weights mapped), then tokenize, render the template and run one forward step.
pub fn gguf(data: &[u8]) -> bool {
    let path = scratch("gguf");
    if std::fs::write(&path, data).is_err() {
        return false;
    }
    let Ok(model) = LoadedModel::load_gguf(&path) else {
        return false;
    };
    let _ = model.tokenizer.encode("ab hi <|end|>", true);
    if let Some(src) = model.tokenizer.chat_template_source() {
        chat_template(src.as_bytes());
    }
    let opts = aisle::backend::ExecutorOptions {
        num_blocks: 4,
        ..Default::default()
    };
    if let Ok(mut exec) = model.executor(&opts) {
        let mut batch = aisle::batch::Batch::default();
        batch.push(&[0], 0, vec![0], aisle::batch::LogitsWanted::Last);
        let _ = exec.execute(&batch);
    }
    true
}

/// A chat template: compile it, then render a conversation with a tool call and tools.
pub fn chat_template(data: &[u8]) -> bool {
    let Ok(src) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(t) = ChatTemplate::new(src) else { return false };
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = Some(vec![serde_json::json!({
        "id": "call_1", "type": "function",
        "function": {"name": "get_product", "arguments": "{\"name\": \"drill\"}"}
    })]);
    let mut result = ChatMessage::new("tool", "{\"price\": \"$5\"}");
    result.tool_call_id = Some("call_1".into());
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "how much is the drill"),
        call,
        result,
        ChatMessage::new("assistant", "It is $5."),
        ChatMessage::new("user", "thanks"),
    ];
    let tools = serde_json::json!([{"type": "function", "function": {
        "name": "get_product", "description": "Look a product up",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}
    }}]);
    let full = t.render(&messages, Some(&tools), true, Some("<s>"), Some("</s>"));
    let _ = t.render(&messages[..2], None, false, None, None);
    full.is_ok()
}

/// A per-process file for inputs the loaders read from disk (they map files).
fn scratch(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("aisle-fuzz-{}.{ext}", std::process::id()))
}
