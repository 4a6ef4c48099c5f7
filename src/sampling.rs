//! Choosing the next token from a logits row.
//!
//! Owns: per-sequence sampling parameters and random state (a seeded sequence draws the
//! same tokens whatever else runs beside it).
//! Must not: touch tensors or the tokenizer; it works on host `f32` rows.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// How to pick tokens. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
        }
    }
}

/// A sequence's sampler: its parameters and its own random stream.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// Index of the largest value; the lowest index wins ties (as `torch.argmax`).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Sampler { params, rng }
    }

    /// Pick the next token from one logits row (vocab).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        // Candidates sorted by logit, best first; NaNs sink to the end.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if p.top_k > 0 {
            idx.truncate(p.top_k);
        }
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| ((logits[i as usize] - max) / p.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        // Nucleus: the smallest prefix whose mass reaches top_p (at least one token).
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (n, &q) in probs.iter().enumerate() {
            cum += q;
            if cum >= p.top_p {
                keep = n + 1;
                break;
            }
        }
        let mass: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f32>() * mass;
        for (n, &q) in probs[..keep].iter().enumerate() {
            if r < q {
                return idx[n];
            }
            r -= q;
        }
        idx[keep - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_max() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn seeded_sampling_repeats_and_respects_top_k() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 2,
            seed: Some(7),
        };
        let logits = [1.0, 2.0, 0.5, 1.9];
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        assert!(
            a.iter().all(|&t| t == 1 || t == 3),
            "top-k 2 allows only ids 1 and 3: {a:?}"
        );
        assert!(a.contains(&1) && a.contains(&3));
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            seed: Some(1),
        };
        let mut s = Sampler::new(params);
        // id 2 alone carries > 50% of the mass.
        for _ in 0..32 {
            assert_eq!(s.sample(&[0.0, 0.0, 5.0, 0.0]), 2);
        }
    }
}
