//! Retry timing for remote calls: exponential backoff with jitter, honouring `Retry-After`.
//!
//! Owns: pure functions of attempt number, server hint and a jitter sample. Must not: sleep or
//! decide whether a failure is retryable (the remote client does).

use std::time::Duration;

/// `Retry-After` as seconds (integer or fractional). HTTP-date values are not used by
/// OpenAI-compatible servers and yield `None` (fall back to backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Delay before retry number `attempt` (0-based): `base · 2^attempt` capped at `max`, scaled by
/// a jitter factor in [0.5, 1.0] from `jitter` ∈ [0, 1). A server's `Retry-After` wins when
/// given (it may exceed `max`; the caller's total timeout still bounds the request).
pub fn backoff(attempt: u32, base: Duration, max: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if let Some(hint) = retry_after {
        return hint;
    }
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_with_cap_and_jitter() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(0, base, max, None, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, base, max, None, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(2, base, max, None, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(9, base, max, None, 1.0), max);
    }

    #[test]
    fn retry_after_wins() {
        let d = backoff(
            0,
            Duration::from_millis(100),
            Duration::from_secs(1),
            parse_retry_after("2"),
            0.3,
        );
        assert_eq!(d, Duration::from_secs(2));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
