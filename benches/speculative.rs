//! Speculative decoding by prompt lookup against plain decoding, one request at a time (b=1)
//! through the whole engine: greedy answers to chat prompts that quote a catalog record (what
//! a grounded assistant writes after a tool call), and open questions as the control where
//! drafts rarely match. Both sides generate the same tokens (the identity is tested in
//! `tests/speculative.rs`), so tokens/s compare like for like.
//!
//! Timing: each prompt runs plain then speculative on two long-lived cores, in alternating
//! pairs, so a shared machine's drift hits both; prints tokens/s of each side over all
//! prompts, the speed-up, and the draft acceptance rate.
//! Run: `cargo bench --bench speculative` (format by `AISLE_BENCH_FORMATS`, default q8_0;
//! `AISLE_SPEC_TOKENS=k` drafts at most k tokens per step, default 4).

use std::time::Instant;

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::chat_template::ChatMessage;
use aisle::engine::{EngineCore, Event, GenerationRequest, PromptLookup, SchedulerConfig};
use aisle::runtime::LoadedModel;
use candle_core::DType;
use tokio::sync::mpsc::unbounded_channel;
mod common;

const RECORDS: [&str; 4] = [
    r#"{"sku": "DR-4521", "name": "Bosch PSB 1800 LI-2 Cordless Combi Drill", "brand": "Bosch", "power_w": 650, "battery": "18 V 2.0 Ah Li-ion", "price_eur": 89.99, "in_stock": true}"#,
    r#"{"sku": "KT-0193", "name": "Russell Hobbs Honeycomb Electric Kettle 1.7 L", "brand": "Russell Hobbs", "power_w": 3000, "colour": "white", "price_eur": 34.50, "in_stock": false}"#,
    r#"{"sku": "VC-7710", "name": "Dyson V8 Absolute Cordless Vacuum Cleaner", "brand": "Dyson", "power_w": 425, "runtime_min": 40, "price_eur": 349.00, "in_stock": true}"#,
    r#"{"sku": "MW-2204", "name": "Panasonic NN-ST45KW Solo Microwave Oven 32 L", "brand": "Panasonic", "power_w": 1000, "programs": 6, "price_eur": 119.99, "in_stock": true}"#,
];

/// Questions about a record; `{}` is the tool result.
const GROUNDED: [&str; 3] = [
    "Catalog lookup result: {}\nWhat is the product's wattage and price? Quote the product name exactly.",
    "Tool result: {}\nWrite the record again as a bulleted list, one field per line.",
    "The catalog returned: {}\nTell the customer the full product name, the brand and whether it is in stock.",
];

const OPEN: [&str; 4] = [
    "Write a short poem about autumn leaves.",
    "Explain why the sky is blue in a few sentences.",
    "Give three tips for keeping a kitchen clean.",
    "What should I look for when buying running shoes?",
];

const MAX_TOKENS: usize = 128;

fn core(
    model: &LoadedModel,
    dtype: DType,
    quantize: Option<aisle::backend::Quantize>,
    spec: Option<PromptLookup>,
) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype,
        block_size: 16,
        num_blocks: 128,
        quantize,
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: 512,
        max_seqs: 4,
        step_time_target: None,
        speculation: spec,
    };
    let exec = model.executor(&opts).expect("executor");
    EngineCore::new(exec, model.tokenizer.clone(), model.eos_token_ids(), sched)
}

/// Generate one greedy answer; (tokens generated, seconds from submission to the last one).
fn answer(core: &mut EngineCore, id: u64, prompt: &[u32]) -> (usize, f64) {
    let (tx, mut rx) = unbounded_channel();
    let req = GenerationRequest {
        prompt: prompt.to_vec(),
        max_tokens: MAX_TOKENS,
        ..GenerationRequest::default()
    };
    let start = Instant::now();
    core.add(id, req, tx);
    while core.has_work() {
        core.step();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut tokens = 0;
    while let Ok(e) = rx.try_recv() {
        tokens += matches!(e, Event::Token { .. }) as usize;
    }
    (tokens, secs)
}

fn prompts(model: &LoadedModel, grounded: bool) -> Vec<Vec<u32>> {
    let texts: Vec<String> = match grounded {
        true => GROUNDED
            .iter()
            .flat_map(|q| RECORDS.iter().map(move |r| q.replace("{}", r)))
            .collect(),
        false => OPEN.iter().map(|s| s.to_string()).collect(),
    };
    texts
        .iter()
        .map(|t| {
            model
                .tokenizer
                .encode_chat(&[ChatMessage::new("user", t)], None)
                .expect("encode")
        })
        .collect()
}

/// One workload, paired; prints the figures.
fn measure(
    model: &LoadedModel,
    name: &str,
    format: (&str, DType, Option<aisle::backend::Quantize>),
    lookup: PromptLookup,
) {
    let (fname, dtype, quantize) = format;
    let mut plain = core(model, dtype, quantize, None);
    let mut spec = core(model, dtype, quantize, Some(lookup));
    let list = prompts(model, name == "grounded");
    answer(&mut plain, 0, &list[0]); // warm: buffers at their largest
    answer(&mut spec, 0, &list[0]);
    let (d0, a0) = (spec.stats().draft_tokens, spec.stats().accepted_tokens);
    let (mut tokens, mut t_plain, mut t_spec) = (0, 0.0, 0.0);
    for (i, p) in list.iter().enumerate() {
        let (n, a) = answer(&mut plain, i as u64 + 1, p);
        let (m, b) = answer(&mut spec, i as u64 + 1, p);
        assert_eq!(n, m, "speculation changed the answer's length");
        tokens += n;
        t_plain += a;
        t_spec += b;
    }
    let s = spec.stats();
    let (drafted, accepted) = (s.draft_tokens - d0, s.accepted_tokens - a0);
    println!(
        "{fname} {name} b=1 ({} prompts, {tokens} tokens): plain {:.1} tok/s, speculative {:.1} tok/s, {:.2}x; \
         {accepted} of {drafted} draft tokens accepted ({:.0}%), k={} n-gram {}..{}",
        list.len(),
        tokens as f64 / t_plain,
        tokens as f64 / t_spec,
        t_plain / t_spec,
        100.0 * accepted as f64 / drafted.max(1) as f64,
        lookup.num_tokens,
        lookup.min_ngram,
        lookup.max_ngram,
    );
}

fn main() {
    let model = common::load_model();
    let mut formats = common::formats(&model, &["q8_0", "f32", "bf16", "q4_k"]);
    if std::env::var_os("AISLE_BENCH_FORMATS").is_none() {
        formats.retain(|f| f.0 == "q8_0");
    }
    let lookup = PromptLookup {
        num_tokens: std::env::var("AISLE_SPEC_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PromptLookup::default().num_tokens),
        ..PromptLookup::default()
    };
    for f in formats {
        measure(&model, "grounded", f, lookup);
        measure(&model, "open", f, lookup);
    }
}
