//! The real SmolLM2-135M-Instruct, loaded from its Q4_1 GGUF (scripts/fetch_models.sh),
//! against goldens transformers computed from the same file (dequantized to f32;
//! tests/fixtures/smollm2-gguf/golden.json, scripts/make_gguf_golden.py): the chat template
//! renders as transformers renders it, text encodes to the original tokenizer's ids, and an
//! f32 run gives the same greedy continuations and top-20 logprobs.

use crate::common;

use aisle::backend::DeviceSpec;
use aisle::chat_template::ChatMessage;
use aisle::runtime::LoadedModel;
use candle_core::DType;
use common::real::{golden, greedy_runs, ids, log_softmax, measure};
use serde_json::Value;

/// Largest |Aisle − transformers| allowed on a top-20 logprob in f32 (both sum the same
/// dequantized weights in a different order; 7.1e-5 measured on the native backend).
const F32_LOGPROB_TOL: f64 = 5e-4;

fn model() -> LoadedModel {
    LoadedModel::load(common::smollm2_gguf().to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    let list = v.as_array().expect("messages");
    list.iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn the_chat_template_from_the_gguf_renders_as_transformers_renders_it() {
    let (g, m) = (golden(), model());
    let chats: Vec<&Value> = g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "chat")
        .collect();
    assert!(chats.len() >= 3);
    for p in chats {
        let text = m.tokenizer.render_chat(&messages(&p["messages"]), None, true).unwrap();
        assert_eq!(text, p["text"].as_str().unwrap());
        let encoded = m.tokenizer.encode_chat(&messages(&p["messages"]), None).unwrap();
        assert_eq!(encoded, ids(&p["input_ids"]), "chat ids");
    }
}

/// The original tokenizer's ids for every text. transformers' own GGUF conversion drops
/// the digit split, so its ids differ exactly where whitespace runs precede a digit.
#[test]
fn text_encodes_to_the_original_tokenizers_ids() {
    let (g, m) = (golden(), model());
    let texts = g["tokenizer_texts"].as_array().unwrap();
    let chars: usize = texts.iter().map(|t| t["text"].as_str().unwrap().chars().count()).sum();
    assert!(chars > 3000, "{chars} characters");
    let whitespace_digit = regex_lite_whitespace_digit;
    for t in texts {
        let text = t["text"].as_str().unwrap();
        assert_eq!(
            m.tokenizer.encode(text, false).unwrap(),
            ids(&t["original"]),
            "{text:?}"
        );
        let converted_differs = t["original"] != t["transformers_gguf"];
        assert_eq!(converted_differs, whitespace_digit(text), "{text:?}");
    }
    for p in g["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            m.tokenizer.encode(text, false).unwrap(),
            ids(&p["input_ids"]),
            "{text:?}"
        );
    }
}

/// Two or more whitespace characters, then a digit.
fn regex_lite_whitespace_digit(text: &str) -> bool {
    let c: Vec<char> = text.chars().collect();
    c.windows(3)
        .any(|w| w[0].is_whitespace() && w[1].is_whitespace() && w[2].is_ascii_digit())
}

/// Greedy continuations and top-20 logprobs on `device` in f32 with every weight
/// dequantized (`--quantize none`); returns the largest logprob difference.
fn check_f32(device: DeviceSpec) -> f64 {
    let (g, m) = (golden(), model());
    let runs = greedy_runs(&m, device, DType::F32, Some(aisle::backend::Quantize::Dequantize));
    let mut worst = 0f64;
    for (i, (p, (tokens, logits))) in g["prompts"].as_array().unwrap().iter().zip(runs).enumerate() {
        assert_eq!(
            tokens,
            ids(&p["greedy"]),
            "prompt {i} ({} tokens)",
            ids(&p["input_ids"]).len()
        );
        for (step, top) in p["top_logprobs"].as_object().unwrap() {
            let lp = log_softmax(&logits[step.parse::<usize>().unwrap()]);
            for pair in top.as_array().unwrap() {
                let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap());
                worst = worst.max((lp[id] - want).abs());
            }
        }
    }
    assert!(worst < F32_LOGPROB_TOL, "top-20 logprobs differ by up to {worst}");
    worst
}

#[test]
fn native_cpu_f32_matches_transformers_token_for_token() {
    let worst = check_f32(DeviceSpec::Cpu);
    eprintln!("native cpu f32: top-20 logprobs within {worst:.2e} of transformers");
}

#[test]
fn reference_forward_f32_matches_transformers_token_for_token() {
    let worst = check_f32(DeviceSpec::CpuReference);
    eprintln!("cpu-reference f32: top-20 logprobs within {worst:.2e} of transformers");
}

/// The file's own formats (Q4_1 layers as exact q4_k panels, Q8_0 embeddings as q8_0) with
/// int8 activations, and bf16 activations on dequantized weights: close to the f32 goldens,
/// not equal (the README's accuracy table has the figures).
#[test]
fn as_stored_and_bf16_runs_stay_close_to_transformers() {
    use aisle::backend::Quantize;
    for (dtype, q, tol) in [
        (DType::F32, None, 1.0),
        (DType::F32, Some(Quantize::Q8_0), 1.0),
        (DType::BF16, Some(Quantize::Dequantize), 1.0),
    ] {
        let (worst, agree, total, first) = measure(&model(), dtype, q);
        assert!(worst < tol, "{dtype:?} {q:?}: step-0 logprobs off by {worst}");
        assert!(first, "{dtype:?} {q:?}: a clear first greedy token differs");
        assert!(agree * 2 >= total, "{dtype:?} {q:?}: greedy agreement {agree}/{total}");
    }
}
