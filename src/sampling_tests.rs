//! Unit tests for the sampler.

use super::*;

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed: Some(7),
        ..SamplingParams::default()
    }
}

fn draws(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
    let mut s = Sampler::new(p.clone());
    (0..n).map(|_| s.sample(logits, &[], &[], None).0).collect()
}

#[test]
fn greedy_picks_first_max() {
    let mut s = Sampler::new(SamplingParams::default());
    assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[], &[], None).0, 1);
}

#[test]
fn seeded_sampling_repeats_and_top_k_limits_choices() {
    let p = SamplingParams { top_k: 2, ..params() };
    let logits = [1.0, 2.0, 0.5, 1.9];
    let a = draws(&p, &logits, 64);
    assert_eq!(a, draws(&p, &logits, 64), "same seed, same draws");
    assert!(a.iter().all(|&t| t == 1 || t == 3), "{a:?}");
    assert!(a.contains(&1) && a.contains(&3));
    let all = draws(&params(), &logits, 400);
    assert!((0..4).all(|t| all.contains(&t)), "no truncation reaches every token");
}

#[test]
fn top_p_keeps_the_nucleus() {
    let p = SamplingParams { top_p: 0.5, ..params() };
    assert!(draws(&p, &[0.0, 0.0, 5.0, 0.0], 64).iter().all(|&t| t == 2));
    // A flat distribution over 1000 tokens needs the full-vocabulary fallback.
    let flat = vec![0.0f32; 1000];
    let d = draws(&SamplingParams { top_p: 0.9, ..params() }, &flat, 2000);
    assert!(d.iter().any(|&t| t >= 256), "nucleus wider than 256 candidates");
}

#[test]
fn min_p_drops_unlikely_tokens() {
    // Probabilities ∝ e^0, e^-1, e^-3: with min_p 0.3 only ids 0 and 1 (≥ 0.3 × top) remain.
    let p = SamplingParams { min_p: 0.3, ..params() };
    let d = draws(&p, &[0.0, -1.0, -3.0], 300);
    assert!(d.iter().all(|&t| t < 2) && d.contains(&1), "{d:?}");
    let d = draws(
        &SamplingParams {
            min_p: 0.3,
            top_k: 3,
            ..params()
        },
        &[0.0, -1.0, -3.0],
        300,
    );
    assert!(d.iter().all(|&t| t < 2), "min-p applies on the ranked path too");
}

#[test]
fn repetition_penalty_follows_hf() {
    let s = Sampler::new(SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::default()
    });
    let out = s.process(&[4.0, -4.0, 4.0, 1.0], &[0], &[1]);
    assert_eq!(out, vec![2.0, -8.0, 4.0, 1.0]);
}

#[test]
fn presence_and_frequency_penalties_follow_openai() {
    let s = Sampler::new(SamplingParams {
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..SamplingParams::default()
    });
    // Prompt tokens are not penalised; token 1 appeared twice in the output, token 2 once.
    let out = s.process(&[1.0, 1.0, 1.0, 1.0], &[3], &[1, 2, 1]);
    assert_eq!(out, vec![1.0, 1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25, 1.0]);
}

#[test]
fn logit_bias_can_force_or_ban_tokens() {
    let mut s = Sampler::new(SamplingParams {
        logit_bias: vec![(0, -100.0), (2, 100.0)],
        ..SamplingParams::default()
    });
    assert_eq!(s.sample(&[5.0, 1.0, 0.0], &[], &[], None).0, 2);
}

#[test]
fn logprobs_are_the_raw_distribution() {
    let mut s = Sampler::new(SamplingParams {
        logprobs: Some(2),
        repetition_penalty: 3.0,
        ..SamplingParams::default()
    });
    let logits = [2.0f32, 1.0, 0.0];
    let (token, lp) = s.sample(&logits, &[0], &[], None);
    let lp = lp.expect("logprobs requested");
    let norm = (2.0f32.exp() + 1.0f32.exp() + 1.0).ln();
    assert_eq!(token, 1, "penalty moved the choice");
    assert!((lp.logprob - (1.0 - norm)).abs() < 1e-6);
    assert_eq!(lp.top.len(), 2);
    assert_eq!(lp.top[0].0, 0);
    assert!((lp.top[0].1 - (2.0 - norm)).abs() < 1e-6);
    let mut s = Sampler::new(SamplingParams {
        logprobs: Some(50),
        ..SamplingParams::default()
    });
    assert_eq!(
        s.sample(&[0.0; 30], &[], &[], None).1.unwrap().top.len(),
        MAX_TOP_LOGPROBS
    );
}

#[test]
fn a_mask_limits_greedy_and_random_draws_before_truncation() {
    // Allowed: tokens 0 and 33 (word 1, bit 1); the best logit (token 5) is masked out.
    let words = [1u32, 2];
    let mask = TokenMask(&words);
    let mut logits = vec![0.0f32; 40];
    logits[5] = 10.0;
    logits[33] = 1.0;
    let mut greedy = Sampler::new(SamplingParams::default());
    assert_eq!(greedy.sample(&logits, &[], &[], Some(mask)).0, 33);
    let p = SamplingParams { top_k: 1, ..params() };
    assert_eq!(
        Sampler::new(p).sample(&logits, &[], &[], Some(mask)).0,
        33,
        "top-k counts allowed tokens only"
    );
    let mut s = Sampler::new(SamplingParams {
        logprobs: Some(1),
        ..params()
    });
    for _ in 0..64 {
        let (t, lp) = s.sample(&logits, &[], &[], Some(mask));
        assert!(t == 0 || t == 33, "{t}");
        assert_eq!(lp.unwrap().top[0].0, 5, "logprobs stay the model's own distribution");
    }
    assert!(!mask.allows(64), "ids past the mask are not allowed");
}

/// The reference: NaN as −∞, mask a copy to −∞, then the first index of the strict maximum
/// (starting from the first allowed index).
fn argmax_reference(row: &[f32], mask: Option<TokenMask>) -> u32 {
    let mut row: Vec<f32> = row
        .iter()
        .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
        .collect();
    for (i, x) in row.iter_mut().enumerate() {
        if mask.is_some_and(|m| !m.allows(i)) {
            *x = f32::NEG_INFINITY;
        }
    }
    let first = (0..row.len()).find(|&i| mask.is_none_or(|m| m.allows(i))).unwrap_or(0);
    let mut best = first;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn masked_argmax_equals_masking_a_copy() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..400 {
        let len: usize = [1, 31, 32, 33, 100, 1000][case % 6];
        // Few distinct values, so ties are common; some NaN and −∞.
        let row: Vec<f32> = (0..len)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                v => (v % 5) as f32,
            })
            .collect();
        let words: Vec<u32> = (0..len.div_ceil(32))
            .map(|_| match rng.random_range(0..4) {
                0 => 0,
                1 => u32::MAX,
                _ => rng.random(),
            })
            .collect();
        for mask in [None, Some(TokenMask(&words))] {
            assert_eq!(argmax_masked(&row, mask), argmax_reference(&row, mask), "case {case}");
        }
    }
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1, "the lowest index wins ties");
}

#[test]
fn prompt_scores_equal_an_exact_log_softmax() {
    // A vocabulary-sized row with a wide spread (and -inf entries), like real logits.
    let mut rng = StdRng::seed_from_u64(3);
    let mut row: Vec<f32> = (0..49_153).map(|_| rng.random::<f32>() * 40.0 - 25.0).collect();
    row[17] = f32::NEG_INFINITY;
    row[4_000] = 31.5;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let norm = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    for token in [0u32, 17, 4_000, 49_152] {
        let s = score_token(&row, token, 3);
        let exact = row[token as usize] as f64 - norm;
        if exact.is_finite() {
            assert!(
                (s.logprob as f64 - exact).abs() < 1e-6,
                "{token}: {} vs {exact}",
                s.logprob
            );
        } else {
            assert_eq!(s.logprob, f32::NEG_INFINITY);
        }
        let rank = 1 + row.iter().filter(|&&y| y > row[token as usize]).count() as u32;
        assert_eq!(s.rank, rank);
        assert_eq!(s.top[0].0, 4_000);
        assert!(s.top.windows(2).all(|w| w[0].1 >= w[1].1) && s.top.len() == 3);
    }
    for x in [0.0f32, -0.3, -1.0, -10.5, -80.0] {
        let rel = (exp_nonpositive(x) as f64 / (x as f64).exp() - 1.0).abs();
        assert!(rel < 5e-7, "exp({x}) off by {rel}");
    }
}

#[test]
#[ignore]
fn probe_score_parts() {
    let mut rng = StdRng::seed_from_u64(3);
    let row: Vec<f32> = (0..49_152).map(|_| rng.random::<f32>() * 40.0 - 25.0).collect();
    let t = std::time::Instant::now();
    let mut z = 0.0;
    for _ in 0..100 {
        z += log_sum_exp_wide(std::hint::black_box(&row));
    }
    eprintln!("lse {:?} {z}", t.elapsed() / 100);
    let t = std::time::Instant::now();
    let mut c = 0;
    for _ in 0..100 {
        let x = row[5];
        c += std::hint::black_box(&row).iter().filter(|&&y| y > x).count();
    }
    eprintln!("rank {:?} {c}", t.elapsed() / 100);
    let t = std::time::Instant::now();
    for _ in 0..100 {
        c += argmax(std::hint::black_box(&row)) as usize;
    }
    eprintln!("argmax {:?} {c}", t.elapsed() / 100);
}

#[test]
fn top_few_equals_top_entries() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut row: Vec<f32> = (0..5_000).map(|_| (rng.random::<f32>() * 8.0).round()).collect();
    row[9] = f32::NEG_INFINITY;
    for k in [1, 2, 5, 20] {
        assert_eq!(top_few(&row, k), top_entries(&row, k), "k = {k} (many ties)");
    }
    assert_eq!(top_few(&[1.0, 3.0], 5), vec![(1, 3.0), (0, 1.0)]);
}
