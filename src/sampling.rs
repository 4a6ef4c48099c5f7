//! Choosing the next token from a logits row.
//!
//! Owns: per-sequence sampling parameters and random state (a seeded sequence draws the same
//! tokens whatever else runs beside it), logit processing (penalties, bias), truncation
//! (top-k, top-p, min-p), grammar masks and logprobs.
//! Must not: touch tensors or the tokenizer; it works on host `f32` rows.
//!
//! Order of processing, as in vLLM: logit bias → repetition penalty (HF: divide positive and
//! multiply negative logits of every prompt or output token) → presence/frequency penalties
//! (OpenAI: output tokens only) → grammar mask (disallowed tokens get −∞) → temperature → top-k → top-p → min-p → draw. Logprobs are
//! those of the model's raw distribution (log-softmax of the unprocessed logits).

use std::collections::HashMap;

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How to pick tokens. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// Keep tokens whose probability is at least `min_p` × the top probability (0 disables).
    pub min_p: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
    /// `Some(k)`: report the chosen token's logprob and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }
}

/// The chosen token's log-probability and the most likely alternatives, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// A prompt token scored by the model's prediction from the tokens before it: its
/// log-probability, its rank in that distribution (1 = most likely) and the most likely
/// alternatives, best first (vLLM's `prompt_logprobs` entries).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredToken {
    pub logprob: f32,
    pub rank: u32,
    pub top: Vec<(u32, f32)>,
}

/// Score `token` against one logits row (raw, unprocessed) with `k` alternatives.
pub fn score_token(row: &[f32], token: u32, k: usize) -> ScoredToken {
    let norm = log_sum_exp_wide(row);
    let x = row.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
    let rank = 1 + row.iter().filter(|&&y| y > x).count() as u32;
    let top = top_few(row, k.min(MAX_TOP_LOGPROBS))
        .into_iter()
        .map(|(i, y)| (i, (y as f64 - norm) as f32))
        .collect();
    ScoredToken {
        logprob: (x as f64 - norm) as f32,
        rank,
        top,
    }
}

/// The tokens a grammar allows next, as a bitset: token `i` is bit `i % 32` of word `i / 32`;
/// ids past the end are not allowed.
#[derive(Debug, Clone, Copy)]
pub struct TokenMask<'a>(pub &'a [u32]);

/// Tokens per mask word, and the lanes of the row scans below.
const LANES: usize = 32;

impl TokenMask<'_> {
    pub fn allows(&self, token: usize) -> bool {
        self.word(token / LANES) >> (token % LANES) & 1 == 1
    }

    /// The bits of tokens `LANES * w ..`; none past the mask's end.
    fn word(&self, w: usize) -> u32 {
        self.0.get(w).copied().unwrap_or(0)
    }

    /// Set every disallowed entry of `row` to −∞, a word of the mask at a time.
    fn apply(&self, row: &mut [f32]) {
        for (w, chunk) in row.chunks_mut(LANES).enumerate() {
            let bits = self.word(w);
            if bits == u32::MAX {
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                if bits >> j & 1 == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
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
    argmax_masked(row, None)
}

/// `argmax` over the tokens `mask` allows (all when `None`), without copying the row: the
/// lowest index wins ties, NaN never wins, and with nothing above −∞ the first allowed index
/// (0 when there is none).
pub fn argmax_masked(row: &[f32], mask: Option<TokenMask>) -> u32 {
    let bits = |w: usize| mask.map_or(u32::MAX, |m| m.word(w));
    // Lane-wise maxima: no reduction across lanes inside the loop, so it vectorizes.
    let mut acc = [f32::NEG_INFINITY; LANES];
    for (w, chunk) in row.chunks(LANES).enumerate() {
        let b = bits(w);
        for (j, (&x, a)) in chunk.iter().zip(acc.iter_mut()).enumerate() {
            let x = if b >> j & 1 == 1 { x } else { f32::NEG_INFINITY };
            *a = if x > *a { x } else { *a };
        }
    }
    let max = acc
        .into_iter()
        .fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    let allowed = |i: usize| bits(i / LANES) >> (i % LANES) & 1 == 1;
    row.iter()
        .enumerate()
        .position(|(i, &x)| (x == max || max == f32::NEG_INFINITY) && allowed(i))
        .unwrap_or(0) as u32
}

/// log-softmax normaliser: `max + ln Σ exp(x - max)`.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}

/// Lanes of the scoring loops below: independent accumulators, so they vectorize.
const WIDE: usize = 16;

/// `log_sum_exp` for scoring every row of a prompt: lane-wise (vectorizable) with a polynomial
/// exp; lanes sum `BLOCK` terms in f32, then fold into f64, so a 50k-entry row loses nothing
/// to rounding (each f32 partial sum holds at most 64 terms of at most 1).
fn log_sum_exp_wide(row: &[f32]) -> f64 {
    const BLOCK: usize = WIDE * 64;
    let mut hi = [f32::NEG_INFINITY; WIDE];
    let chunks = row.chunks_exact(WIDE);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (h, &x) in hi.iter_mut().zip(chunk) {
            *h = if x > *h { x } else { *h };
        }
    }
    let max = hi
        .into_iter()
        .chain(tail.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return max as f64;
    }
    let mut total = 0f64;
    for block in row.chunks(BLOCK) {
        let mut acc = [0f32; WIDE];
        let chunks = block.chunks_exact(WIDE);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (a, &x) in acc.iter_mut().zip(chunk) {
                *a += exp_nonpositive(x - max);
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
        total += tail.iter().map(|&x| exp_nonpositive(x - max) as f64).sum::<f64>();
    }
    max as f64 + total.ln()
}

/// e^x for x ≤ 0 (what a row minus its maximum holds): 2^(x·log2 e) split into 2^n · 2^f with
/// |f| ≤ 0.5, 2^f by its degree-7 Taylor polynomial (relative error about 1e-7, one f32 ulp),
/// 2^n built in the exponent bits. Only float and integer lane arithmetic, so it vectorizes.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer in the low bits
    let x = if x < -87.0 { -87.0 } else { x };
    let r = x * std::f32::consts::LOG2_E + ROUND;
    let n = r - ROUND;
    let f = x * std::f32::consts::LOG2_E - n;
    // n = r's low mantissa bits (two's complement); 2^n has exponent field n + 127 ≥ 1.
    let n_bits = r.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    const C: [f32; 7] = [
        1.525_273_4e-5,
        1.540_353_1e-4,
        1.333_355_8e-3,
        9.618_129e-3,
        5.550_411e-2,
        2.402_265e-1,
        std::f32::consts::LN_2,
    ];
    let p = C.iter().fold(0.0f32, |p, &c| p * f + c) * f + 1.0;
    p * two_n
}

/// `top_entries` for a small `k` (logprob alternatives, ≤ 20) in one pass without an index
/// vector: a sorted buffer of the best so far, which most entries fail to enter at the first
/// comparison. Same order as `top_entries` (value descending, lower index first on ties).
fn top_few(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() || (best.len() == k && x <= best[k - 1].1) {
            continue;
        }
        let at = best.partition_point(|&(_, y)| y >= x);
        best.insert(at, (i as u32, x));
        best.truncate(k);
    }
    best
}

/// The `k` largest entries of `row` as (index, value), best first.
fn top_entries(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    if k == 1 {
        let i = argmax(row); // one pass, no index vector (prompt scoring asks for this per row)
        return vec![(i, row[i as usize])];
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, by_value);
    idx.truncate(k);
    idx.sort_unstable_by(by_value);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Apply bias and penalties to a copy of `logits`. `prompt` and `output` are the
    /// sequence's tokens so far.
    pub fn process(&self, logits: &[f32], prompt: &[u32], output: &[u32]) -> Vec<f32> {
        let p = &self.params;
        let mut row = logits.to_vec();
        for &(id, bias) in &p.logit_bias {
            if let Some(x) = row.get_mut(id as usize) {
                *x += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; row.len()];
            for &t in prompt.iter().chain(output) {
                if let Some(s) = seen.get_mut(t as usize) {
                    *s = true;
                }
            }
            for (x, _) in row.iter_mut().zip(&seen).filter(|(_, &s)| s) {
                *x = if *x > 0.0 {
                    *x / p.repetition_penalty
                } else {
                    *x * p.repetition_penalty
                };
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in output {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                if let Some(x) = row.get_mut(t as usize) {
                    *x -= p.frequency_penalty * c as f32 + p.presence_penalty;
                }
            }
        }
        row
    }

    /// Whether bias or penalties change the logits (otherwise they are used in place).
    fn processes(&self) -> bool {
        let p = &self.params;
        !p.logit_bias.is_empty()
            || p.repetition_penalty != 1.0
            || p.presence_penalty != 0.0
            || p.frequency_penalty != 0.0
    }

    /// Pick the next token (one `mask` allows, when given); with `logprobs` requested also
    /// return them. The mask must allow at least one token.
    pub fn sample(
        &mut self,
        logits: &[f32],
        prompt: &[u32],
        output: &[u32],
        mask: Option<TokenMask>,
    ) -> (u32, Option<TokenLogprobs>) {
        let greedy = self.params.temperature <= 0.0 || self.params.top_k == 1;
        let token = match (greedy, self.processes()) {
            (true, false) => argmax_masked(logits, mask),
            (true, true) => argmax_masked(&self.process(logits, prompt, output), mask),
            (false, processes) => {
                let mut row = match processes {
                    true => self.process(logits, prompt, output),
                    false => logits.to_vec(),
                };
                if let Some(m) = mask {
                    m.apply(&mut row);
                }
                self.draw(&row)
            }
        };
        let logprobs = self.params.logprobs.map(|k| {
            let norm = log_sum_exp(logits);
            TokenLogprobs {
                token,
                logprob: logits[token as usize] - norm,
                top: top_entries(logits, k.min(MAX_TOP_LOGPROBS))
                    .into_iter()
                    .map(|(i, x)| (i, x - norm))
                    .collect(),
            }
        });
        (token, logprobs)
    }

    /// Temperature, truncation and a random draw over the processed row.
    fn draw(&mut self, row: &[f32]) -> u32 {
        let p = &self.params;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weight = |x: f32| ((x - max) / p.temperature).exp(); // ∝ probability, top token = 1
        if p.top_k == 0 && p.top_p >= 1.0 {
            // No ranking needed: one linear pass (min-p keeps weights ≥ min_p × top weight).
            let weights: Vec<f32> = row
                .iter()
                .map(|&x| weight(x))
                .map(|w| if w >= p.min_p { w } else { 0.0 })
                .collect();
            return self.pick(&weights, |i| i as u32);
        }
        // Ranked candidates. Without top-k, try the best 256 first: enough unless the nucleus
        // is wider, in which case rank the whole vocabulary.
        let mut cand = top_entries(row, if p.top_k > 0 { p.top_k } else { 256 });
        let mut weights: Vec<f32> = cand.iter().map(|&(_, x)| weight(x)).collect();
        let total: f32 = if p.top_k > 0 {
            weights.iter().sum()
        } else {
            row.iter().map(|&x| weight(x)).sum()
        };
        if p.top_k == 0 && cand.len() < row.len() && weights.iter().sum::<f32>() < p.top_p * total {
            cand = top_entries(row, row.len());
            weights = cand.iter().map(|&(_, x)| weight(x)).collect();
        }
        let mut keep = weights.len();
        let mut cum = 0.0;
        for (n, w) in weights.iter().enumerate() {
            cum += w / total;
            if cum >= p.top_p {
                keep = n + 1;
                break;
            }
        }
        keep = keep.min(weights.iter().take_while(|&&w| w >= p.min_p).count().max(1));
        weights.truncate(keep);
        self.pick(&weights, |n| cand[n].0)
    }

    /// Draw an index with probability proportional to `weights` and map it to a token id.
    fn pick(&mut self, weights: &[f32], token: impl Fn(usize) -> u32) -> u32 {
        let mass: f32 = weights.iter().sum();
        let mut r = self.rng.random::<f32>() * mass;
        let mut last = 0;
        for (n, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            if r < w {
                return token(n);
            }
            r -= w;
            last = n;
        }
        token(last)
    }
}

#[cfg(test)]
#[path = "sampling_tests.rs"]
mod tests;
