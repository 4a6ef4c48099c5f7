//! The engine end to end on fixture models: batched equals alone for random request mixes,
//! prefix caching, preemption, cancellation and deadlines, chunked prefill, n > 1, logprobs
//! and stop strings.

use crate::common;

use std::time::Duration;

use aisle::backend::{DeviceSpec, ExecutorOptions};
use aisle::engine::{
    Engine, EngineCore, Event, FinishReason, GenerationRequest, RequestOutput, ScheduledWork, SchedulerConfig,
};
use aisle::runtime::LoadedModel;
use aisle::sampling::SamplingParams;
use candle_core::DType;
use common::driver::{core, run, BS};
use common::fixture;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn alone(model: &LoadedModel, req: &GenerationRequest) -> RequestOutput {
    let mut c = core(model, 256, 64, 8);
    run(&mut c, &[(0, req.clone())]).0.remove(0)
}

fn random_request(rng: &mut StdRng, vocab: u32) -> GenerationRequest {
    let len = rng.random_range(1..=40);
    let sampled = rng.random_bool(0.5);
    GenerationRequest {
        prompt: (0..len).map(|_| rng.random_range(4..vocab)).collect(),
        max_tokens: rng.random_range(1..=24),
        sampling: SamplingParams {
            temperature: if sampled { 0.9 } else { 0.0 },
            top_p: 0.95,
            seed: Some(rng.random_range(0..1000)),
            ..SamplingParams::default()
        },
        ..GenerationRequest::default()
    }
}

#[test]
fn batched_equals_alone_for_random_mixes() {
    for name in ["llama", "qwen3"] {
        let model = LoadedModel::load_dir(&fixture(name)).unwrap();
        let mut rng = StdRng::seed_from_u64(42);
        for trial in 0..5 {
            let k = if trial == 0 { 32 } else { rng.random_range(1..=32) };
            let reqs: Vec<(usize, GenerationRequest)> = (0..k)
                .map(|_| (rng.random_range(0..8), random_request(&mut rng, 384)))
                .collect();
            // A budget of 48 tokens forces chunked prefills beside decodes.
            let mut c = core(&model, 512, 48, 32);
            let (together, _) = run(&mut c, &reqs);
            for (i, (out, (_, req))) in together.iter().zip(&reqs).enumerate() {
                let solo = alone(&model, req);
                assert_eq!(out.choices, solo.choices, "{name} trial {trial} request {i} of {k}");
            }
            assert_eq!(c.stats().free_blocks, 512, "no block leaked");
        }
    }
}

#[test]
fn shared_prefix_reuses_blocks_and_output_is_unchanged() {
    let model = LoadedModel::load_dir(&fixture("llama")).unwrap();
    let prefix: Vec<u32> = (10..22).collect(); // 3 full blocks of 4
    let req = |suffix: &[u32]| GenerationRequest {
        prompt: prefix.iter().chain(suffix).copied().collect(),
        max_tokens: 8,
        ignore_eos: true,
        ..GenerationRequest::default()
    };
    let (a, b) = (req(&[30, 31, 32]), req(&[40, 41]));
    let mut c = core(&model, 64, 64, 8);
    let first = run(&mut c, &[(0, a.clone())]).0.remove(0);
    assert_eq!(c.stats().prefix_cache_hits, 0);
    let second = run(&mut c, &[(0, b.clone())]).0.remove(0);
    assert_eq!(c.stats().prefix_cache_hits, 12, "the 3-block prefix was reused");
    assert_eq!(second.usage.cached_tokens, 12);
    assert_eq!(second.choices, alone(&model, &b).choices, "identical to a cold run");
    assert_eq!(first.choices, alone(&model, &a).choices);
}

#[test]
fn preemption_under_a_tiny_pool_keeps_outputs_and_leaks_nothing() {
    let model = LoadedModel::load_dir(&fixture("qwen2")).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let reqs: Vec<(usize, GenerationRequest)> = (0..6)
        .map(|i| {
            let mut r = random_request(&mut rng, 384);
            r.prompt.truncate(10);
            r.max_tokens = 20;
            r.ignore_eos = true;
            (i % 2, r)
        })
        .collect();
    let mut c = core(&model, 12, 64, 8); // 12 blocks of 4: two sequences at most at full length
    let (outs, _) = run(&mut c, &reqs);
    let stats = c.stats();
    assert!(stats.preemptions > 0, "the pool was meant to force preemption");
    assert_eq!(stats.free_blocks, stats.total_blocks);
    for (i, (out, (_, req))) in outs.iter().zip(&reqs).enumerate() {
        assert_eq!(out.choices, alone(&model, req).choices, "request {i}");
        assert_eq!(out.choices[0].tokens.len(), 20);
    }
}

#[test]
fn long_prompt_is_chunked_and_decodes_never_stall() {
    let model = LoadedModel::load_dir(&fixture("mistral")).unwrap();
    let short = |p: Vec<u32>| GenerationRequest {
        prompt: p,
        max_tokens: 30,
        ignore_eos: true,
        ..Default::default()
    };
    let long = GenerationRequest {
        prompt: (5..45).collect(),
        max_tokens: 5,
        ignore_eos: true,
        ..Default::default()
    };
    let reqs = vec![(0, short(vec![5, 6, 7])), (0, short(vec![8, 9])), (3, long.clone())];
    let mut c = core(&model, 128, 8, 8);
    let (outs, steps) = run(&mut c, &reqs);
    let is_chunk = |s: &ScheduledWork| s.request == 2 && s.start < 40;
    let chunks: Vec<(usize, usize)> = steps
        .iter()
        .flatten()
        .filter(|s| is_chunk(s))
        .map(|s| (s.start, s.num_tokens))
        .collect();
    assert_eq!(
        chunks,
        vec![(0, 6), (6, 6), (12, 6), (18, 6), (24, 6), (30, 6), (36, 4)],
        "prefill split under the budget"
    );
    for step in &steps {
        assert!(
            step.iter().map(|s| s.num_tokens).sum::<usize>() <= 8,
            "budget respected: {step:?}"
        );
        if step.iter().any(is_chunk) {
            let runs = |r: u64| step.iter().any(|s| s.request == r);
            assert!(runs(0) && runs(1), "decodes ran beside the chunk");
        }
    }
    assert_eq!(
        outs[2].choices,
        alone(&model, &long).choices,
        "chunked output unchanged"
    );
}

#[test]
fn n_choices_share_the_prompt_and_match_separate_seeds() {
    let model = LoadedModel::load_dir(&fixture("llama3")).unwrap();
    let base = GenerationRequest {
        prompt: (20..37).collect(),
        max_tokens: 10,
        ignore_eos: true,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(11),
            ..SamplingParams::default()
        },
        ..Default::default()
    };
    let mut c = core(&model, 64, 64, 8);
    let (outs, _) = run(&mut c, &[(0, GenerationRequest { n: 3, ..base.clone() })]);
    assert_eq!(outs[0].choices.len(), 3);
    assert_eq!(
        c.stats().prefix_cache_hits,
        2 * 16,
        "choices 1 and 2 reuse the 4 full prompt blocks"
    );
    for i in 0..3 {
        let single = GenerationRequest {
            sampling: SamplingParams {
                seed: Some(11 + i as u64),
                ..base.sampling.clone()
            },
            ..base.clone()
        };
        assert_eq!(outs[0].choices[i], alone(&model, &single).choices[0], "choice {i}");
    }
    assert_ne!(outs[0].choices[0].tokens, outs[0].choices[1].tokens);
    assert_eq!(outs[0].usage.completion_tokens, 30);
}

#[test]
fn logprobs_and_stop_strings_through_the_engine() {
    let model = LoadedModel::load_dir(&fixture("mistral")).unwrap();
    let prompt = model.tokenizer.encode("The cordless drill has a", true).unwrap();
    let req = GenerationRequest {
        prompt: prompt.clone(),
        max_tokens: 30,
        stop: vec!["att mo".into()], // spans the tokens of "watt" and " motor"
        sampling: SamplingParams {
            logprobs: Some(5),
            ..SamplingParams::default()
        },
        ..Default::default()
    };
    let out = alone(&model, &req);
    let choice = &out.choices[0];
    assert_eq!(choice.text, " 750 w");
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    assert_eq!(choice.logprobs.len(), choice.tokens.len());
    for lp in &choice.logprobs {
        assert_eq!(lp.top.len(), 5);
        assert!(lp.logprob <= 0.0 && lp.top[0].1 >= lp.logprob);
        assert_eq!(lp.top[0].0, lp.token, "greedy picks the most likely token");
    }
    let no_stop = alone(&model, &GenerationRequest { stop: vec![], ..req });
    assert_eq!(no_stop.choices[0].text, " 750 watt motor and two 18 volt batteries.");
    assert_eq!(no_stop.choices[0].finish_reason, Some(FinishReason::Stop), "eos");
}

#[test]
fn cancelled_and_timed_out_requests_free_their_blocks() {
    let model = LoadedModel::load_dir(&fixture("llama")).unwrap();
    // 5 ms per step: a dropped stream's remaining 199 tokens take at least a second, so the
    // drop lands mid-request however the test thread is scheduled (without a delay, a loaded
    // machine once let a request finish all 200 tokens before its client left).
    let engine = Engine::spawn_with_delay(core(&model, 256, 64, 16), Duration::from_millis(5));
    let h = engine.handle();
    let req = |timeout: Option<Duration>| GenerationRequest {
        prompt: (10..30).collect(),
        max_tokens: 200,
        ignore_eos: true,
        timeout,
        ..Default::default()
    };
    let mut keep = Vec::new();
    for i in 0..6 {
        let mut s = h.submit(req(None)).unwrap();
        if i % 2 == 0 {
            assert_eq!(s.blocking_next(), Some(Event::Started));
            assert!(matches!(s.blocking_next(), Some(Event::Token { .. })));
            drop(s); // client leaves mid-stream
        } else {
            keep.push(s);
        }
    }
    let timed = h
        .submit(req(Some(Duration::from_millis(2))))
        .unwrap()
        .collect_blocking()
        .unwrap();
    assert_eq!(timed.choices[0].finish_reason, Some(FinishReason::Timeout));
    assert!(timed.choices[0].tokens.len() < 200);
    for s in keep {
        let out = s.collect_blocking().unwrap();
        assert_eq!(out.choices[0].tokens.len(), 200);
    }
    let bad = h
        .submit(GenerationRequest {
            prompt: vec![],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(bad.collect_blocking().unwrap_err().to_string(), "the prompt is empty");
    let stats = h.stats().unwrap();
    assert_eq!(
        (stats.requests, stats.free_blocks, stats.cancelled),
        (0, stats.total_blocks, 3),
        "the three dropped streams were cancelled, the rest ran: {stats:?}"
    );
    drop(h);
    engine.shutdown();
}

/// An engine whose executor is the static-shape one (`cpu-static`): `max_batch` slots of
/// 128 positions, buckets from 8.
fn static_core(model: &LoadedModel, max_batch: usize) -> EngineCore {
    let opts = ExecutorOptions {
        device: DeviceSpec::CpuStatic,
        dtype: DType::F32,
        block_size: BS,
        static_shape: aisle::backend::StaticOptions {
            max_batch,
            max_len: 128,
            min_bucket: 8,
        },
        ..Default::default()
    };
    let sched = SchedulerConfig {
        max_batched_tokens: 48,
        max_seqs: 32,
        step_time_target: None,
        speculation: None,
    };
    EngineCore::new(
        model.executor(&opts).unwrap(),
        model.tokenizer.clone(),
        model.eos_token_ids(),
        sched,
    )
}

#[test]
fn static_shape_executor_serves_continuous_batches_over_fixed_slots() {
    for name in ["llama", "mistral"] {
        let model = LoadedModel::load_dir(&fixture(name)).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let reqs: Vec<(usize, GenerationRequest)> = (0..12)
            .map(|i| {
                let mut r = random_request(&mut rng, 384);
                r.n = 1 + i % 3 / 2; // some requests sample two choices
                (rng.random_range(0..8), r)
            })
            .collect();
        let (want, _) = run(&mut core(&model, 512, 48, 32), &reqs);
        let mut c = static_core(&model, 3);
        let (got, steps) = run(&mut c, &reqs);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.choices, w.choices, "{name} request {i}");
        }
        // Never more sequences than slots; prompts whole (no chunks), then one token a step.
        assert!(steps.iter().all(|s| s.len() <= 3), "{name}: more sequences than slots");
        let whole = |w: &ScheduledWork| w.start == 0 || w.num_tokens == 1;
        assert!(steps.iter().flatten().all(whole), "{name}: a chunked prompt");
        assert!(steps.iter().any(|s| s.len() == 3), "{name}: slots never all busy");
        assert_eq!(c.stats().running, 0);
    }
}
