//! Prompt scoring (`prompt_logprobs`, `echo` with `logprobs`, `max_tokens: 0`) against
//! transformers: every prompt token's logprob equals log-softmax of HF's prompt logits
//! (tests/fixtures/*/golden.*) within 1e-4 in f32, computed in the engine's own prefill,
//! whether the prompt runs whole, chunked, beside other requests or after a prefix-cache hit.

use crate::common;

use aisle::engine::{GenerationRequest, RequestOutput};
use aisle::runtime::LoadedModel;
use common::driver::{core, run};
use common::{fixture, Golden, FAMILIES};

const TOL: f64 = 1e-4;

fn scoring(prompt: Vec<u32>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt,
        max_tokens,
        prompt_logprobs: Some(2),
        ..GenerationRequest::default()
    }
}

/// The worst |logprob difference| of an output's prompt 0 against HF; ranks must match.
fn check(out: &RequestOutput, golden: &[(f64, u32)], what: &str) -> f64 {
    let scores = &out.prompt_logprobs[0];
    assert_eq!(scores.len(), golden.len() + 1, "{what}: one entry per prompt token");
    assert!(scores[0].is_none(), "{what}: nothing predicts the first token");
    let mut worst = 0.0f64;
    for (j, (s, &(lp, rank))) in scores[1..].iter().zip(golden).enumerate() {
        let s = s
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: token {} has no score", j + 1));
        let d = (s.logprob as f64 - lp).abs();
        assert!(d <= TOL, "{what}: token {} logprob {} vs HF {lp}", j + 1, s.logprob);
        assert_eq!(s.rank, rank, "{what}: token {} rank", j + 1);
        assert_eq!(s.top.len(), 2, "{what}: two alternatives");
        assert!(
            s.top[0].1 >= s.top[1].1 && s.top[0].1 >= s.logprob,
            "{what}: best first"
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn prompt_logprobs_equal_transformers_whole_and_chunked() {
    for name in FAMILIES {
        let model = LoadedModel::load_dir(&fixture(name)).expect("fixture");
        let g = Golden::load(name);
        let mut worst = 0.0f64;
        for i in 0..g.prompts().len() {
            let ids = g.ids(i, "input_ids");
            let hf = g.prompt_scores(i);
            // Whole prompt in one step, scoring only (max_tokens 0: no token, finish length).
            let (outs, _) = run(&mut core(&model, 64, 256, 4), &[(0, scoring(ids.clone(), 0))]);
            worst = worst.max(check(&outs[0], &hf, &format!("{name} p{i} whole")));
            assert!(outs[0].choices[0].tokens.is_empty(), "max_tokens 0 samples nothing");
            assert_eq!(outs[0].choices[0].finish_reason.map(|r| r.as_str()), Some("length"));
            // Chunked by a 3-token budget, beside a plain request, then generating.
            let other = GenerationRequest {
                prompt: ids[..4].to_vec(),
                max_tokens: 6,
                ..GenerationRequest::default()
            };
            let (outs, steps) = run(
                &mut core(&model, 64, 3, 4),
                &[(0, other.clone()), (0, scoring(ids.clone(), 3))],
            );
            assert!(steps.len() > 2, "the prompt ran in chunks");
            worst = worst.max(check(&outs[1], &hf, &format!("{name} p{i} chunked")));
            assert_eq!(outs[1].choices[0].tokens.len(), 3);
            let (alone, _) = run(&mut core(&model, 64, 256, 4), &[(0, other)]);
            assert_eq!(outs[0].choices, alone[0].choices, "a scored neighbour changes nothing");
        }
        println!("{name}: max |prompt logprob difference| vs transformers = {worst:.2e}");
    }
}

#[test]
fn a_prefix_cache_hit_does_not_lose_prompt_scores() {
    let model = LoadedModel::load_dir(&fixture("llama")).expect("fixture");
    let g = Golden::load("llama");
    let ids = g.ids(0, "input_ids");
    let hf = g.prompt_scores(0);
    let warm = GenerationRequest {
        prompt: ids.clone(),
        max_tokens: 2,
        ..GenerationRequest::default()
    };
    // The same prompt again once the first is done: its full blocks are in the prefix cache.
    let again = GenerationRequest { ..warm.clone() };
    let mut c = core(&model, 64, 256, 4);
    let (outs, _) = run(&mut c, &[(0, warm.clone()), (4, again)]);
    assert!(outs[1].usage.cached_tokens > 0, "the plain repeat hits the cache");
    let mut c = core(&model, 64, 256, 4);
    let (outs, _) = run(&mut c, &[(0, warm), (4, scoring(ids.clone(), 2))]);
    check(&outs[1], &hf, "after a cache hit");
    assert_eq!(
        outs[1].usage.cached_tokens, 0,
        "a scored prompt recomputes its cached blocks"
    );
    assert_eq!(outs[1].choices[0].tokens, outs[0].choices[0].tokens);
}

#[test]
fn n_choices_share_one_scored_prompt() {
    let model = LoadedModel::load_dir(&fixture("qwen2")).expect("fixture");
    let g = Golden::load("qwen2");
    let ids = g.ids(0, "input_ids");
    let req = GenerationRequest {
        n: 3,
        ..scoring(ids, 4)
    };
    let (outs, _) = run(&mut core(&model, 64, 256, 4), &[(0, req)]);
    check(&outs[0], &g.prompt_scores(0), "n = 3");
    assert_eq!(outs[0].prompt_logprobs.len(), 1, "scored once");
    assert_eq!(outs[0].choices.len(), 3);
}
