use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How long to wait before attempt `attempt + 1`, after `attempt` failed:
/// exponential from `base_ms` with jitter, capped at `max_ms`. A handler's
/// own `retry_after` wins.
pub fn backoff_delay(attempt: u32, base_ms: u32, max_ms: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after;
    }
    let max = Duration::from_millis(u64::from(max_ms));
    let nth = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(u64::from(base_ms)))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(nth)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_bounded_jitter() {
        for attempt in 1..=4u32 {
            let floor = Duration::from_millis(100 * 2u64.pow(attempt - 1));
            for _ in 0..50 {
                let d = backoff_delay(attempt, 100, 60_000, None);
                assert!(d >= floor && d < floor * 2, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn is_capped_and_retry_after_wins() {
        assert_eq!(backoff_delay(30, 100, 5_000, None), Duration::from_millis(5_000));
        assert_eq!(backoff_delay(1, 100, 5_000, Some(Duration::from_secs(9))), Duration::from_secs(9));
    }
}
