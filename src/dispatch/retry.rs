//! The retry policy: exponential backoff with full jitter, `Retry-After` honoured, within a budget
//! of attempts and age. Pure arithmetic (the caller passes the time and the random draw), so tests
//! check it exactly.

use std::time::Duration;

use crate::model::{EpochMillis, OutcomeKind};

/// How failed attempts are retried. Every field has a documented default (see `Default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts (the first included) before a notification is FAILED. Default 12.
    pub max_attempts: u32,
    /// Age after which no further attempt is scheduled. Default 24 hours.
    pub max_age: Duration,
    /// Backoff ceiling before the first retry; doubles per attempt. Default 1 s.
    pub base_delay: Duration,
    /// Cap on any single backoff. Default 10 minutes.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// What follows a retryable failure of attempt number `attempts` of a notification created at
    /// `created_at`. `jitter` is a uniform draw from [0, 1): the delay is a random point below the
    /// exponential ceiling ("full jitter"), but never sooner than the customer's `Retry-After`.
    pub fn after_retryable(
        &self,
        attempts: u32,
        created_at: EpochMillis,
        now: EpochMillis,
        retry_after: Option<Duration>,
        error: &str,
        jitter: f64,
    ) -> OutcomeKind {
        if attempts >= self.max_attempts {
            return OutcomeKind::Failed {
                error: format!("gave up after {attempts} attempts: {error}"),
            };
        }
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
            .min(self.max_delay);
        let delay = ceiling
            .mul_f64(jitter.clamp(0.0, 1.0))
            .max(retry_after.unwrap_or_default());
        let due_at = now.saturating_add(millis(delay));
        if due_at.saturating_sub(created_at) > millis(self.max_age) {
            return OutcomeKind::Failed {
                error: format!(
                    "gave up after {attempts} attempts (retry budget of {:?} spent): {error}",
                    self.max_age
                ),
            };
        }
        OutcomeKind::Retry {
            due_at,
            error: error.to_owned(),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// "Now" for the retry budget (2023-11-14), with the notification created just now.
    const NOW: EpochMillis = 1_700_000_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_under_full_jitter_and_caps() {
        let due =
            |attempts, jitter| match policy().after_retryable(attempts, 0, 0, None, "e", jitter) {
                OutcomeKind::Retry { due_at, .. } => due_at,
                other => panic!("expected a retry, got {other:?}"),
            };
        assert_eq!(due(1, 0.999_999), 999);
        assert_eq!(due(3, 0.5), 2000);
        assert_eq!(due(4, 0.0), 0);
        let capped = RetryPolicy {
            max_attempts: 40,
            ..policy()
        };
        assert!(matches!(
            capped.after_retryable(30, 0, 0, None, "e", 0.999),
            OutcomeKind::Retry { due_at, .. } if due_at <= 60_000
        ));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let outcome =
            policy().after_retryable(1, 0, 10, Some(Duration::from_secs(30)), "busy", 0.1);
        assert_eq!(
            outcome,
            OutcomeKind::Retry {
                due_at: 30_010,
                error: "busy".into()
            }
        );
    }

    #[test]
    fn budget_of_attempts_and_age_ends_in_failure() {
        assert!(matches!(
            policy().after_retryable(5, 0, 0, None, "HTTP 503", 0.5),
            OutcomeKind::Failed { error } if error.contains("HTTP 503") && error.contains("5 attempts")
        ));
        assert!(matches!(
            policy().after_retryable(1, 0, 3_600_000, None, "down", 0.5),
            OutcomeKind::Failed { .. }
        ));
    }

    /// The policy honours any `Retry-After` a sink passes on (whole seconds up to `u64::MAX`, or
    /// the time until an HTTP date) as a floor, without overflow, within its budget: the next
    /// attempt is due no sooner than asked and no later than `max_age` after creation, or the
    /// notification fails.
    fn budgeted(retry_after: Option<Duration>) {
        let policy = RetryPolicy::default();
        match policy.after_retryable(1, NOW, NOW, retry_after, "e", 0.5) {
            OutcomeKind::Retry { due_at, .. } => {
                let asked = retry_after.map_or(0, millis);
                assert!(due_at >= NOW.saturating_add(asked));
                assert!(due_at - NOW <= millis(policy.max_age));
            }
            OutcomeKind::Failed { .. } => {
                assert!(retry_after.is_some_and(|d| d > policy.max_age));
            }
            other => panic!("a retryable failure became {other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(256)
        })]

        #[test]
        fn any_retry_after_is_a_floor_within_the_budget(
            retry_after in prop_oneof![
                Just(None),
                any::<u64>().prop_map(|s| Some(Duration::from_secs(s))),
                (0..200_000u64).prop_map(|s| Some(Duration::from_secs(s))),
                any::<(u64, u32)>().prop_map(|(s, n)| Some(Duration::new(s, n % 1_000_000_000))),
                Just(Some(Duration::MAX)),
            ],
        ) {
            budgeted(retry_after);
        }
    }
}
