//! Aggregate decode throughput through the whole engine (scheduler, paged KV, sampling):
//! N concurrent greedy sequences, each with a 128-token context. Setup prefills every
//! sequence; the timed part is pure decode steps, so tokens/s = N × steps / time.
//!
//! Model: see `common::model_path` (the real SmolLM2-135M-Instruct GGUF when fetched). f32 and
//! bf16 dequantize a GGUF file's weights; `as-stored` keeps its formats (GGUF only).
//! Run: `cargo bench --bench engine`; `engine_json` times the same decode under a JSON-schema
//! grammar (masks computed every step) against none, and prints the mask time per token;
//! `engine_prompt_logprobs` times one 512-token prefill with and without prompt scoring.

use std::time::{Duration, Instant};

use aisle::backend::{DeviceSpec, ExecutorOptions, Quantize};
use aisle::engine::{EngineCore, GenerationRequest, SchedulerConfig};
use aisle::grammar::{Grammar, GrammarSpec, Grammars};
use aisle::runtime::LoadedModel;
use candle_core::DType;
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::sync::mpsc::unbounded_channel;

const CONTEXT: usize = 128;
const STEPS: usize = 8;
/// Shorter contexts for `engine_json`: its figure is the relative cost of the masks, and a
/// shorter context makes each step cheaper, so the masks' share larger (never flattering).
const JSON_CONTEXT: usize = 32;
/// More timed steps for `engine_json` (within `max_tokens` below): its figure is a difference
/// of two timings, and 8 steps leave it at the mercy of one slow step.
const JSON_STEPS: usize = 32;

/// A core with `seqs` sequences whose prompts are prefilled, each `CONTEXT - 1` tokens long.
fn prefilled(model: &LoadedModel, dtype: DType, quantize: Option<Quantize>, seqs: usize) -> EngineCore {
    prefilled_with(model, dtype, quantize, seqs, CONTEXT, None)
}

/// `prefilled` with `context`-token contexts, every sequence under `grammar` when given.
fn prefilled_with(
    model: &LoadedModel,
    dtype: DType,
    quantize: Option<Quantize>,
    seqs: usize,
    context: usize,
    grammar: Option<&Grammar>,
) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype,
        block_size: 16,
        num_blocks: seqs * (context + 64) / 16 + 8,
        quantize,
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: 2048,
        max_seqs: seqs,
        step_time_target: None,
        speculation: None,
    };
    let mut core = EngineCore::new(
        model.executor(&opts).expect("executor"),
        model.tokenizer.clone(),
        vec![],
        sched,
    );
    for i in 0..seqs {
        let (tx, rx) = unbounded_channel();
        std::mem::forget(rx); // keep the client "connected" without reading
        let prompt = (0..context - 1).map(|t| ((t * 31 + i * 7) % 300 + 4) as u32).collect();
        let req = GenerationRequest {
            prompt,
            max_tokens: 48, // > STEPS + 1 and JSON_STEPS + 1; the cache below holds CONTEXT + 64 tokens per sequence
            ignore_eos: true,
            grammar: grammar.cloned(),
            ..GenerationRequest::default()
        };
        core.add(i as u64, req, tx);
    }
    // Step until every sequence has finished its prefill and decodes one token per step.
    while core
        .step()
        .is_some_and(|s| s.seqs.len() < seqs || s.seqs.iter().any(|x| x.num_tokens > 1))
    {}
    assert_eq!(core.stats().running, seqs, "every sequence must be decoding");
    core
}

fn bench_decode(c: &mut Criterion) {
    let model = common::load_model();
    let mut g = c.benchmark_group("engine_decode");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, dtype, quantize) in common::formats(&model, &["as-stored", "f32", "bf16", "q8_0"]) {
        for seqs in [1usize, 8, 32] {
            g.throughput(Throughput::Elements((seqs * STEPS) as u64));
            g.bench_function(BenchmarkId::new(name, seqs), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut core = prefilled(&model, dtype, quantize, seqs);
                        let start = Instant::now();
                        for _ in 0..STEPS {
                            core.step();
                        }
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

/// A product record whose free-text field keeps every sequence inside the grammar (and its
/// widest masks: most of the vocabulary is allowed in a JSON string) for the timed steps.
fn product_grammar(model: &LoadedModel) -> Grammar {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"description": {"type": "string"}, "watts": {"type": "integer"}},
        "required": ["description", "watts"],
        "additionalProperties": false,
    });
    let grammars = Grammars::new(model.tokenizer.clone(), model.config.vocab_size, vec![]);
    grammars
        .compile(&GrammarSpec::JsonSchema(schema))
        .expect("schema compiles")
}

fn bench_constrained(c: &mut Criterion) {
    let model = common::load_model();
    let grammar = product_grammar(&model);
    let mut g = c.benchmark_group("engine_json");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for seqs in [1usize, 32] {
        for (name, grammar) in [("none", None), ("json_schema", Some(&grammar))] {
            g.throughput(Throughput::Elements((seqs * JSON_STEPS) as u64));
            let (mut masks, mut nanos) = (0u64, 0u64);
            g.bench_function(BenchmarkId::new(name, seqs), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut core = prefilled_with(
                            &model,
                            DType::F32,
                            Some(Quantize::Dequantize),
                            seqs,
                            JSON_CONTEXT,
                            grammar,
                        );
                        let before = core.stats();
                        let start = Instant::now();
                        for _ in 0..JSON_STEPS {
                            core.step();
                        }
                        total += start.elapsed();
                        let after = core.stats();
                        assert_eq!(after.running, seqs, "every sequence is still inside its grammar");
                        masks += after.grammar_masks - before.grammar_masks;
                        nanos += after.grammar_mask_nanos - before.grammar_mask_nanos;
                    }
                    total
                })
            });
            if masks > 0 {
                let per_step = nanos as f64 / (masks as f64 / seqs as f64) / 1e3;
                eprintln!("engine_json/{name}/{seqs}: masks {per_step:.0} µs per step for {seqs} sequences ({:.1} µs per token)", per_step / seqs as f64);
            }
        }
    }
    g.finish();
}

/// Tokens in `engine_prompt_logprobs`' prompt.
const SCORED_PROMPT: usize = 512;

/// A long-lived core for `SCORED_PROMPT`-token prefills, as a server holds one (buffers are
/// reused from step to step).
fn prefill_core(model: &LoadedModel) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::Cpu,
        dtype: DType::F32,
        block_size: 16,
        num_blocks: 4 * SCORED_PROMPT / 16,
        quantize: Some(Quantize::Dequantize),
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: 2048,
        max_seqs: 1,
        step_time_target: None,
        speculation: None,
    };
    EngineCore::new(
        model.executor(&opts).expect("executor"),
        model.tokenizer.clone(),
        vec![],
        sched,
    )
}

/// Seconds to prefill prompt number `i` (each differs from the start, so none hits the
/// prefix cache) and sample one token.
fn prefill_secs(core: &mut EngineCore, i: usize, prompt_logprobs: Option<usize>) -> f64 {
    let (tx, rx) = unbounded_channel();
    let req = GenerationRequest {
        prompt: (0..SCORED_PROMPT)
            .map(|t| ((t * 31 + i * 7) % 300 + 4) as u32)
            .collect(),
        max_tokens: 1,
        ignore_eos: true,
        prompt_logprobs,
        ..GenerationRequest::default()
    };
    core.add(i as u64, req, tx);
    let start = Instant::now();
    while core.has_work() {
        core.step();
    }
    let secs = start.elapsed().as_secs_f64();
    drop(rx);
    secs
}

/// The cost ratio measured in alternating pairs (scored, unscored) on one core, so the drift
/// of a shared machine hits both sides alike; prints the median of the per-pair ratios.
fn paired_ratio(model: &LoadedModel, k: usize) {
    const PAIRS: usize = 9;
    let mut core = prefill_core(model);
    prefill_secs(&mut core, 1000, Some(k)); // warm: buffers at their largest
    let (mut ratios, mut plain, mut scored) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let b = prefill_secs(&mut core, 2 * i, None);
        let a = prefill_secs(&mut core, 2 * i + 1, Some(k));
        ratios.push(a / b);
        plain.push(b);
        scored.push(a);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "prompt_logprobs={k} on a {SCORED_PROMPT}-token prompt: {:.3}x the unscored prefill (median of {PAIRS} pairs; {:.0} ms vs {:.0} ms)",
        median(&mut ratios),
        median(&mut scored) * 1e3,
        median(&mut plain) * 1e3
    );
}

/// The whole 512-token prefill (one step) with and without `prompt_logprobs`: scoring costs
/// the lm_head over every position and a log-softmax per row, in the same pass.
fn bench_prompt_logprobs(c: &mut Criterion) {
    let model = common::load_model();
    for k in [0, 1, 5] {
        paired_ratio(&model, k);
    }
    let mut g = c.benchmark_group("engine_prompt_logprobs");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(SCORED_PROMPT as u64));
    for (name, k) in [("none", None), ("k0", Some(0)), ("k1", Some(1)), ("k5", Some(5))] {
        let mut core = prefill_core(&model);
        let mut i = 0;
        g.bench_function(BenchmarkId::new(name, SCORED_PROMPT), |b| {
            b.iter_custom(|iters| {
                let mut total = 0.0;
                for _ in 0..iters {
                    i += 1;
                    total += prefill_secs(&mut core, i, k);
                }
                Duration::from_secs_f64(total)
            })
        });
    }
    g.finish();
}

criterion_group!(engine, bench_decode, bench_constrained, bench_prompt_logprobs);
criterion_main!(engine);
