//! The step-time budget: how many prompt tokens a step may take while streams are decoding.
//!
//! Owns: a cost model of one engine step, `time ≈ decodes × decode_cost + prefill_tokens ×
//! prefill_cost`, fitted from the durations the engine reports after each step, and the prefill
//! cap that keeps a step with running decodes near a target time (so inter-token latency stays
//! bounded while long prompts arrive). Pure arithmetic on plain numbers: the engine measures the
//! wall clock and feeds it in; tests feed synthetic durations.
//! Must not: read the clock, know about sequences or batches, or cap a step that has no
//! decodes (nobody waits on it then, and a full chunk is the fastest way to a first token).
//!
//! Fitting: a pure-decode step sets the per-decode cost, a pure-prefill step the per-token
//! cost, each as an exponential moving average. A mixed step keeps their ratio and scales both
//! towards its measured total. Before both are known the unknown one is taken as the rest of
//! the mixed step's time.

use std::time::Duration;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.25;

/// Fewest prompt tokens a capped step still takes, so that prefill always progresses even when
/// the decodes alone exceed the target.
pub const MIN_PREFILL_CHUNK: usize = 32;

/// Per-unit costs of a step, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepCost {
    /// Per decoding sequence.
    decode_ms: Option<f64>,
    /// Per prompt token.
    prefill_ms: Option<f64>,
}

fn ema(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + ALPHA * (new - o),
        None => new,
    }
}

impl StepCost {
    pub fn decode_ms(&self) -> Option<f64> {
        self.decode_ms
    }

    pub fn prefill_ms(&self) -> Option<f64> {
        self.prefill_ms
    }

    /// Learn from one step that ran `decodes` single-token decodes and `prefill` prompt tokens
    /// in `elapsed`.
    pub fn observe(&mut self, prefill: usize, decodes: usize, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1e3;
        let (p, d) = (prefill as f64, decodes as f64);
        match (prefill, decodes, self.prefill_ms, self.decode_ms) {
            (0, 0, _, _) => {}
            (0, _, _, old) => self.decode_ms = Some(ema(old, ms / d)),
            (_, 0, old, _) => self.prefill_ms = Some(ema(old, ms / p)),
            (_, _, Some(pc), Some(dc)) => {
                let scale = ms / (p * pc + d * dc).max(f64::MIN_POSITIVE);
                self.prefill_ms = Some(ema(Some(pc), pc * scale));
                self.decode_ms = Some(ema(Some(dc), dc * scale));
            }
            (_, _, Some(pc), None) => self.decode_ms = Some((ms - p * pc).max(0.0) / d),
            (_, _, None, Some(dc)) => self.prefill_ms = Some((ms - d * dc).max(0.0) / p),
            (_, _, None, None) => {}
        }
    }

    /// Most prompt tokens a step with `decodes` running decodes may take to stay within
    /// `target`; `None` means no cap (no decodes, or no prefill cost measured yet). Never
    /// below [`MIN_PREFILL_CHUNK`].
    pub fn prefill_cap(&self, decodes: usize, target: Duration) -> Option<usize> {
        if decodes == 0 {
            return None;
        }
        let pc = self.prefill_ms.filter(|&c| c > 0.0)?;
        let spent = decodes as f64 * self.decode_ms.unwrap_or(0.0);
        let left = target.as_secs_f64() * 1e3 - spent;
        let tokens = if left > 0.0 { (left / pc).floor() } else { 0.0 };
        // `as` saturates: a tiny per-token cost cannot overflow.
        Some((tokens as usize).max(MIN_PREFILL_CHUNK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn no_cap_without_decodes_or_before_a_prefill_cost_is_known() {
        let mut c = StepCost::default();
        assert_eq!(c.prefill_cap(8, ms(75)), None);
        c.observe(0, 8, ms(16));
        assert_eq!(
            c.prefill_cap(8, ms(75)),
            None,
            "decode cost alone gives no per-token cost"
        );
        c.observe(100, 0, ms(50));
        assert_eq!(c.prefill_cap(0, ms(75)), None, "nothing decoding: no cap");
        assert!(c.prefill_cap(8, ms(75)).is_some());
    }

    #[test]
    fn the_cap_fills_what_the_decodes_leave_of_the_target() {
        let mut c = StepCost::default();
        c.observe(0, 10, ms(20)); // 2 ms per decode
        c.observe(200, 0, ms(100)); // 0.5 ms per prompt token
                                    // 75 ms − 10 × 2 ms = 55 ms → 110 tokens.
        assert_eq!(c.prefill_cap(10, ms(75)), Some(110));
        // 30 decodes take 60 ms: 15 ms → 30 tokens, raised to the minimum chunk.
        assert_eq!(c.prefill_cap(30, ms(75)), Some(MIN_PREFILL_CHUNK));
        assert_eq!(c.prefill_cap(50, ms(75)), Some(MIN_PREFILL_CHUNK));
    }

    #[test]
    fn mixed_steps_fill_in_the_unknown_cost_and_then_scale_both() {
        let mut c = StepCost::default();
        c.observe(100, 0, ms(50)); // 0.5 ms per token
        c.observe(100, 10, ms(70)); // the remaining 20 ms over 10 decodes
        assert_eq!(c.decode_ms(), Some(2.0));
        // A mixed step twice as slow as predicted moves both costs up by the same factor.
        c.observe(100, 10, ms(140));
        let (p, d) = (c.prefill_ms().unwrap_or(0.0), c.decode_ms().unwrap_or(0.0));
        assert!((p - 0.625).abs() < 1e-9 && (d - 2.5).abs() < 1e-9, "{p} {d}");
    }

    #[test]
    fn averages_follow_a_change_in_speed() {
        let mut c = StepCost::default();
        c.observe(100, 0, ms(100));
        for _ in 0..40 {
            c.observe(100, 0, ms(50));
        }
        let p = c.prefill_ms().unwrap_or(0.0);
        assert!((p - 0.5).abs() < 1e-3, "{p}");
    }
}
