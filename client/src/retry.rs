//! When and how long to wait before calling again. Only UNAVAILABLE is retried: it is what tonic
//! answers when no connection could be made or one broke, and what the server answers when it
//! cannot serve right now, so the same call may well succeed a moment later. Every other code is
//! an answer about the request itself, and repeating the request cannot change it.

use std::time::Duration;

/// How a [`Client`](crate::Client) retries calls answered UNAVAILABLE.
///
/// The pause before retry `n` is `initial_backoff × 2ⁿ⁻¹`, capped at `max_backoff`, then jittered
/// to a random point between half and all of it, so that many callers cut off by the same
/// restart do not all come back in the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all, the first included: 1 never retries.
    pub max_attempts: u32,
    /// The pause before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// The longest pause between two attempts (before jitter).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts from 100 ms up to 5 s apart: at most about 11 s of waiting, enough to ride
    /// out a server restart, short enough that a caller learns of an outage quickly.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One attempt and no retry: for callers that retry at their own level.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The pause before retry number `retry` (1 for the first retry), jittered.
    pub fn backoff(&self, retry: u32) -> Duration {
        let full = self.ceiling(retry);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::random::<f64>())
    }

    /// The pause before retry `retry` before jitter: doubling from `initial_backoff`, capped.
    fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// Whether a failed call may be made again as it was.
pub(crate) fn is_retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_within_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        for retry in 1..=6 {
            let full = policy.ceiling(retry);
            let pauses: Vec<Duration> = (0..200).map(|_| policy.backoff(retry)).collect();
            assert!(pauses.iter().all(|p| *p >= full / 2 && *p <= full));
            // Jittered: 200 draws are not all the same pause.
            assert!(
                pauses.iter().any(|p| *p != pauses[0]),
                "no jitter at {retry}"
            );
        }
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn only_unavailable_is_retried() {
        assert!(is_retryable(&tonic::Status::unavailable("restarting")));
        for status in [
            tonic::Status::invalid_argument("bad"),
            tonic::Status::unauthenticated("no token"),
            tonic::Status::deadline_exceeded("slow"),
        ] {
            assert!(!is_retryable(&status), "{status:?}");
        }
    }
}
