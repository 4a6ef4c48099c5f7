//! Speculative decoding by prompt lookup on the real SmolLM2-135M-Instruct: answers that quote
//! a catalog record come out token for token as plain decoding gives them (greedy and seeded
//! sampling, with logprobs, beside other requests, across stop strings and `max_tokens`),
//! drafts are accepted on that workload, and a request that opts out drafts nothing.

use crate::common;

use aisle::backend::{DeviceSpec, ExecutorOptions, Quantize};
use aisle::chat_template::ChatMessage;
use aisle::engine::{EngineCore, GenerationRequest, PromptLookup, RequestOutput, SchedulerConfig};
use aisle::runtime::LoadedModel;
use aisle::sampling::SamplingParams;
use candle_core::DType;
use common::driver::run;
use serde_json::Value;

fn model() -> LoadedModel {
    LoadedModel::load(common::smollm2_gguf().to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

fn core(model: &LoadedModel, dtype: DType, quantize: Quantize, speculation: Option<PromptLookup>) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype,
        block_size: 16,
        num_blocks: 256,
        quantize: Some(quantize),
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: 512,
        max_seqs: 8,
        step_time_target: None,
        speculation,
    };
    let exec = model.executor(&opts).unwrap_or_else(|e| panic!("{e}"));
    EngineCore::new(exec, model.tokenizer.clone(), model.eos_token_ids(), sched)
}

const RECORD: &str = r#"{"sku": "DR-4521", "name": "Bosch PSB 1800 LI-2 Cordless Combi Drill", "brand": "Bosch", "power_w": 650, "battery": "18 V 2.0 Ah Li-ion", "price_eur": 89.99, "in_stock": true}"#;

/// Chat prompts whose answers copy from a tool result, as a grounded assistant's do.
fn grounded_prompts(m: &LoadedModel) -> Vec<Vec<u32>> {
    let asks = [
        format!("Catalog lookup result: {RECORD}\nWhat is the wattage of the Bosch PSB 1800 LI-2 Cordless Combi Drill? Quote the catalog."),
        format!("Tool result: {RECORD}\nRepeat the product's name, brand and battery exactly as the tool wrote them."),
        format!("Here is a catalog record: {RECORD}\nWrite it again as a bulleted list of its fields."),
    ];
    asks.iter()
        .map(|a| {
            let chat = [ChatMessage::new("user", a)];
            m.tokenizer.encode_chat(&chat, None).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

fn requests(prompts: &[Vec<u32>], sampling: SamplingParams) -> Vec<(usize, GenerationRequest)> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let req = GenerationRequest {
                prompt: p.clone(),
                sampling: sampling.clone(),
                // Different limits and a stop string, so drafts cross where output must end.
                max_tokens: 40 + 7 * i,
                stop: if i == 2 { vec!["Li-ion".into()] } else { Vec::new() },
                ..GenerationRequest::default()
            };
            (i % 2, req) // the second request arrives a step later, mid-decode of the first
        })
        .collect()
}

/// The outputs with and without speculation, and the drafted and accepted token counts.
fn both(
    m: &LoadedModel,
    dtype: DType,
    quantize: Quantize,
    reqs: &[(usize, GenerationRequest)],
) -> (Vec<RequestOutput>, Vec<RequestOutput>, u64, u64) {
    let (plain, _) = run(&mut core(m, dtype, quantize, None), reqs);
    let mut spec = core(m, dtype, quantize, Some(PromptLookup::default()));
    let (drafted, _) = run(&mut spec, reqs);
    let stats = spec.stats();
    (plain, drafted, stats.draft_tokens, stats.accepted_tokens)
}

fn texts(outs: &[RequestOutput]) -> Vec<&str> {
    outs.iter().map(|o| o.choices[0].text.as_str()).collect()
}

#[test]
fn greedy_grounded_answers_are_token_for_token_those_of_plain_decoding() {
    let m = model();
    let prompts = grounded_prompts(&m);
    let greedy = SamplingParams {
        logprobs: Some(2),
        ..SamplingParams::default()
    };
    let reqs = requests(&prompts, greedy);
    for (dtype, quantize) in [(DType::F32, Quantize::Q8_0), (DType::F32, Quantize::Dequantize)] {
        let (plain, drafted, draft_tokens, accepted) = both(&m, dtype, quantize, &reqs);
        assert_eq!(
            drafted,
            plain,
            "{quantize:?}: outputs differ; texts {:?}",
            texts(&drafted)
        );
        // The answers quote the record: many drafts, a good share of them right.
        assert!(draft_tokens >= 20, "{quantize:?}: {draft_tokens} drafted");
        assert!(
            accepted * 3 >= draft_tokens,
            "{quantize:?}: {accepted} of {draft_tokens} accepted"
        );
    }
}

#[test]
fn seeded_sampled_answers_are_those_of_plain_decoding() {
    let m = model();
    let prompts = grounded_prompts(&m);
    let sampled = SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        repetition_penalty: 1.05,
        seed: Some(11),
        ..SamplingParams::default()
    };
    let reqs = requests(&prompts, sampled);
    let (plain, drafted, draft_tokens, accepted) = both(&m, DType::F32, Quantize::Q8_0, &reqs);
    assert_eq!(drafted, plain, "texts {:?}", texts(&drafted));
    assert!(accepted > 0 && draft_tokens > 0, "{accepted} of {draft_tokens}");
}

#[test]
fn a_request_that_opts_out_drafts_nothing() {
    let m = model();
    let prompts = grounded_prompts(&m);
    let mut reqs = requests(&prompts[..1], SamplingParams::default());
    reqs[0].1.speculative = false;
    let mut spec = core(&m, DType::F32, Quantize::Q8_0, Some(PromptLookup::default()));
    let (out, _) = run(&mut spec, &reqs);
    assert!(!out[0].choices[0].tokens.is_empty());
    assert_eq!(spec.stats().draft_tokens, 0);
}

/// The metric's value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
}

#[tokio::test]
async fn over_http_the_opt_out_changes_nothing_but_the_metrics_and_a_bad_value_is_a_400() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use common::http::{error_of, json_of, post, send};
    use serde_json::json;

    let m = model();
    let spec = core(&m, DType::F32, Quantize::Q8_0, Some(PromptLookup::default()));
    let (served, _engine) = aisle::server::start_engine(&m, spec, std::time::Duration::ZERO, "test".into());
    let state = aisle::server::AppState::new(common::server_config());
    state.set_model(served);
    let router = aisle::server::app(state);
    let ask = format!("Tool result: {RECORD}\nRepeat the product's name exactly.");
    let body = |speculative: Value| json!({"messages": [{"role": "user", "content": ask}], "max_tokens": 24, "temperature": 0, "speculative": speculative});
    let metrics = || async {
        let (_, _, text) = send(&router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        text
    };
    let (st, off) = json_of(&router, post("/v1/chat/completions", body(json!(false)))).await;
    assert_eq!(st, StatusCode::OK, "{off}");
    assert_eq!(
        metric(&metrics().await, "aisle:spec_decode_num_draft_tokens_total"),
        0.0
    );
    let (st, on) = json_of(&router, post("/v1/chat/completions", body(Value::Null))).await;
    assert_eq!(st, StatusCode::OK, "{on}");
    assert_eq!(on["choices"][0]["message"], off["choices"][0]["message"]);
    let text = metrics().await;
    let drafted = metric(&text, "aisle:spec_decode_num_draft_tokens_total");
    let accepted = metric(&text, "aisle:spec_decode_num_accepted_tokens_total");
    assert!(
        drafted > 0.0 && accepted > 0.0,
        "{drafted} drafted, {accepted} accepted"
    );
    let rate = metric(&text, "aisle:spec_decode_acceptance_rate");
    assert!((rate - accepted / drafted).abs() < 1e-9, "rate {rate}");
    let (st, e) = error_of(&router, post("/v1/chat/completions", body(json!("no")))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "speculative", "{e}");
}
