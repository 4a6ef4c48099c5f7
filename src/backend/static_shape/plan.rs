//! Bucket plans: the fixed shapes a static-shape (ahead-of-time compiled) model exists in.
//!
//! Owns: the context-encoding buckets (prompt lengths) and token-generation buckets (KV
//! lengths attended), built like AWS NeuronX Distributed Inference's: powers of two from a
//! minimum up to the maximum length, the maximum itself last; and picking the smallest bucket
//! that fits.
//! Must not: run anything or know about sequences.

use serde::{Deserialize, Serialize};

use super::StaticError;

/// The compiled shapes of one model: `max_batch` slots of `max_len` positions each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPlan {
    /// Sequences held at once (token-generation batch size, KV slots).
    pub max_batch: usize,
    /// Positions per slot: the longest sequence, prompt plus output.
    pub max_len: usize,
    /// Context-encoding buckets (prompt tokens, right-padded), ascending.
    pub context: Vec<usize>,
    /// Token-generation buckets (KV positions attended), ascending.
    pub token: Vec<usize>,
}

/// Powers of two from `min` up to (not including) `max`, then `max`.
fn powers_of_two(min: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut b = min.max(1).next_power_of_two();
    while b < max {
        out.push(b);
        b *= 2;
    }
    out.push(max);
    out
}

impl BucketPlan {
    /// NxDI-style plan: both bucket lists are powers of two from `min_bucket` to `max_len`.
    pub fn powers_of_two(max_batch: usize, max_len: usize, min_bucket: usize) -> Result<Self, StaticError> {
        let plan = BucketPlan {
            max_batch,
            max_len,
            context: powers_of_two(min_bucket, max_len),
            token: powers_of_two(min_bucket, max_len),
        };
        plan.check()?;
        Ok(plan)
    }

    /// Reject plans the executor cannot drive (also used on plans read from a manifest).
    pub fn check(&self) -> Result<(), StaticError> {
        let bad = |why: String| Err(StaticError::Plan(why));
        if self.max_batch == 0 || self.max_len == 0 {
            return bad(format!(
                "max_batch {} and max_len {} must be positive",
                self.max_batch, self.max_len
            ));
        }
        for (name, list) in [("context", &self.context), ("token", &self.token)] {
            if list.is_empty() || list.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "{name} buckets {list:?} must be non-empty and strictly ascending"
                ));
            }
            if list.last() != Some(&self.max_len) {
                return bad(format!(
                    "the largest {name} bucket must be max_len {}, not {list:?}",
                    self.max_len
                ));
            }
        }
        Ok(())
    }

    /// Smallest context-encoding bucket holding a prompt of `n` tokens.
    pub fn context_bucket(&self, n: usize) -> Option<usize> {
        self.context.iter().copied().find(|&b| b >= n)
    }

    /// Smallest token-generation bucket holding `kv_len` attended positions.
    pub fn token_bucket(&self, kv_len: usize) -> Option<usize> {
        self.token.iter().copied().find(|&b| b >= kv_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_ending_at_max() {
        let p = BucketPlan::powers_of_two(4, 100, 16).unwrap();
        assert_eq!(p.context, vec![16, 32, 64, 100]);
        assert_eq!(p.token, vec![16, 32, 64, 100]);
        let p = BucketPlan::powers_of_two(1, 64, 5).unwrap();
        assert_eq!(p.context, vec![8, 16, 32, 64]);
        assert_eq!(BucketPlan::powers_of_two(1, 4, 16).unwrap().context, vec![4]);
    }

    #[test]
    fn smallest_fitting_bucket() {
        let p = BucketPlan::powers_of_two(2, 64, 8).unwrap();
        assert_eq!(p.context_bucket(1), Some(8));
        assert_eq!(p.context_bucket(8), Some(8));
        assert_eq!(p.context_bucket(9), Some(16));
        assert_eq!(p.token_bucket(33), Some(64));
        assert_eq!(p.token_bucket(65), None);
    }

    #[test]
    fn bad_plans_are_rejected() {
        let mut p = BucketPlan::powers_of_two(2, 64, 8).unwrap();
        p.context = vec![8, 8, 64];
        assert!(p.check().is_err());
        p.context = vec![8, 32];
        assert!(p.check().unwrap_err().to_string().contains("max_len"));
        assert!(BucketPlan::powers_of_two(0, 64, 8).is_err());
    }
}
