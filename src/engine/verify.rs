//! Verifying a decode's draft tokens from the logits rows of one forward pass over them.
//!
//! Owns: the accept/reject rule. Row `i` is the model's distribution after the decode's token
//! and draft tokens `0..i`. The choice's own sampler draws from row 0; while the drawn token
//! equals the next draft token, that draft token is accepted and the next row is drawn from
//! (its context now includes it); the first drawn token that differs, or the draw from the
//! row after the whole draft, is kept and ends the step.
//!
//! Why this is exact. A prompt-lookup draft is a point mass `q = δ(d)`. Standard speculative
//! rejection sampling accepts `d` with probability `min(1, p(d)/q(d)) = p(d)` and otherwise
//! draws from the residual `max(0, p − q)` normalised, i.e. `p` restricted to tokens `≠ d`, so
//! every token `x ≠ d` is emitted with probability `(1 − p(d)) · p(x)/(1 − p(d)) = p(x)`.
//! Drawing `x ~ p` and accepting iff `x = d` emits each token with exactly those
//! probabilities and accepts `d` with the same probability `p(d)`: it is the same rule. And it
//! draws once per emitted token from the same processed distribution (penalties, bias,
//! temperature, truncation) that plain decoding uses, so a seeded choice emits the very tokens
//! plain decoding would, and greedy output is the argmax chain unchanged.
//! Must not: see grammar-constrained choices (they never draft: a mask for a draft position
//! would need the grammar's state after the draft).

use super::EngineCore;
use crate::backend::StepOutput;
use crate::engine::scheduler::ScheduledSeq;
use crate::sampling::{Sampler, TokenLogprobs};

/// Draw from `rows` (row `i` follows draft token `i - 1`) as the rule above says; `output` is
/// the choice's output so far. Returns the kept tokens, in order: the accepted draft tokens and
/// one more.
pub fn accept_draft<'r>(
    sampler: &mut Sampler,
    rows: impl Iterator<Item = &'r [f32]>,
    draft: &[u32],
    prompt: &[u32],
    output: &[u32],
) -> Vec<(u32, Option<TokenLogprobs>)> {
    let mut context = output.to_vec();
    let mut kept = Vec::with_capacity(draft.len() + 1);
    for (i, row) in rows.take(draft.len() + 1).enumerate() {
        let (token, lp) = sampler.sample(row, prompt, &context, None);
        kept.push((token, lp));
        if draft.get(i) != Some(&token) {
            break;
        }
        context.push(token);
    }
    kept
}

impl EngineCore {
    /// The tokens a drafted decode keeps, from its rows starting at `first`; counts drafted
    /// and accepted tokens. Empty when its choice is gone.
    pub(super) fn verify(
        &mut self,
        s: &ScheduledSeq,
        draft: &[u32],
        out: &StepOutput,
        first: usize,
    ) -> Vec<(u32, Option<TokenLogprobs>)> {
        let Some(&(rid, c)) = self.owner.get(&s.id) else {
            return Vec::new();
        };
        let Some(state) = self.requests.get_mut(&rid) else {
            return Vec::new();
        };
        let choice = &mut state.choices[c];
        let rows = (first..first + s.num_tokens).map(|r| out.row(r));
        let kept = accept_draft(&mut choice.sampler, rows, draft, &state.req.prompt, &choice.tokens);
        self.draft_tokens += draft.len() as u64;
        self.accepted_tokens += kept.len().saturating_sub(1) as u64;
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    fn softmax(row: &[f32]) -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|&x| (x as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|x| x / sum).collect()
    }

    /// Pearson's χ² of observed counts against expected probabilities.
    fn chi2(counts: &[usize], p: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        let n = n as f64;
        counts
            .iter()
            .zip(p)
            .map(|(&c, &p)| (c as f64 - n * p).powi(2) / (n * p))
            .sum()
    }

    fn sampler(seed: u64) -> Sampler {
        Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        })
    }

    /// χ² critical value for 3 degrees of freedom at p = 0.001 (the seeds are fixed, so the
    /// test is deterministic; a wrong rule misses by orders of magnitude at this n).
    const CRITICAL_3DF: f64 = 16.27;

    #[test]
    fn sampled_verification_keeps_the_target_distribution_and_accepts_at_p_of_the_draft() {
        let rows: [[f32; 4]; 2] = [[1.0, 0.2, -0.5, 0.6], [0.0, 1.5, 0.3, -1.0]];
        let (p0, p1) = (softmax(&rows[0]), softmax(&rows[1]));
        let draft = [3u32];
        let n = 40_000;
        let (mut first, mut second, mut accepted) = ([0usize; 4], [0usize; 4], 0);
        for seed in 0..n {
            let kept = accept_draft(&mut sampler(seed), rows.iter().map(|r| &r[..]), &draft, &[], &[]);
            first[kept[0].0 as usize] += 1;
            if kept[0].0 == draft[0] {
                accepted += 1;
                assert_eq!(kept.len(), 2, "an accepted draft is followed by the next row's draw");
                second[kept[1].0 as usize] += 1;
            } else {
                assert_eq!(kept.len(), 1, "a rejection ends the step");
            }
        }
        assert!(chi2(&first, &p0) < CRITICAL_3DF, "first token: {first:?} vs {p0:?}");
        assert!(
            chi2(&second, &p1) < CRITICAL_3DF,
            "after acceptance: {second:?} vs {p1:?}"
        );
        let rate = accepted as f64 / n as f64;
        // Binomial standard deviation at n = 40,000 is about 0.0024.
        assert!((rate - p0[3]).abs() < 0.01, "acceptance {rate} vs p(draft) {}", p0[3]);
    }

    #[test]
    fn a_seeded_choice_keeps_exactly_the_tokens_plain_decoding_draws() {
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..8).map(|t| ((r * 5 + t * 3) % 7) as f32 * 0.4).collect())
            .collect();
        for seed in 0..200 {
            let mut plain = sampler(seed);
            let mut output = Vec::new();
            let mut expected = Vec::new();
            for row in &rows {
                let (t, _) = plain.sample(row, &[], &output, None);
                expected.push(t);
                output.push(t);
            }
            // A draft that agrees with plain decoding's first two tokens, then disagrees.
            let draft = [expected[0], expected[1], (expected[2] + 1) % 8];
            let kept = accept_draft(&mut sampler(seed), rows.iter().map(|r| &r[..]), &draft, &[], &[]);
            let kept: Vec<u32> = kept.into_iter().map(|(t, _)| t).collect();
            assert_eq!(kept, expected[..3], "seed {seed}");
        }
    }

    #[test]
    fn greedy_verification_follows_the_argmax_chain() {
        let rows = [[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]];
        let mut greedy = Sampler::new(SamplingParams::default());
        let rows = || rows.iter().map(|r| &r[..]);
        let kept: Vec<u32> = accept_draft(&mut greedy, rows(), &[1, 0], &[], &[])
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(kept, [1, 0, 2], "whole draft accepted, plus the row after it");
        let kept: Vec<u32> = accept_draft(&mut greedy, rows(), &[1, 2], &[], &[])
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(kept, [1, 0], "the second draft token loses to the argmax");
    }
}
