//! Fault injection for tests: named points in the store and the sinks that can be told to fail.
//!
//! Only with the `failpoints` cargo feature; without it [`check`] is an empty inline function
//! and the points cost nothing. The registry is process-wide (the points sit deep in code that
//! has no handle to pass one through), so tests that arm points run one at a time.
//!
//! | point | where | fails as |
//! |---|---|---|
//! | `store.insert` | intake's group commit, before anything is written | `Unavailable` |
//! | `store.insert.commit` | intake's commit, after the rows are written, before the commit; a commit of one key (a single statement, no transaction) just before its statement | `Unavailable` (the transaction rolls back; nothing is stored) |
//! | `store.claim` | claiming notifications for delivery | `Unavailable` |
//! | `store.outcome` | recording attempt outcomes | `Unavailable` |
//! | `store.lease_sweep` | returning expired leases to pending | `Unavailable` |
//! | `sink.send` | a delivery attempt, before anything is sent | a retryable error |

/// Names of the points, so callers and tests cannot misspell them.
pub mod point {
    pub const STORE_INSERT: &str = "store.insert";
    pub const STORE_INSERT_COMMIT: &str = "store.insert.commit";
    pub const STORE_CLAIM: &str = "store.claim";
    pub const STORE_OUTCOME: &str = "store.outcome";
    pub const STORE_LEASE_SWEEP: &str = "store.lease_sweep";
    pub const SINK_SEND: &str = "sink.send";
}

/// An injected failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failpoint {0} fired")]
pub struct Injected(pub &'static str);

/// `Err` when `point` is armed (and counts the firing down).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_point: &'static str) -> Result<(), Injected> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, check, disarm, fired};

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};

    use super::Injected;

    #[derive(Default)]
    struct Point {
        /// Firings left; `u64::MAX` means until disarmed.
        remaining: u64,
        fired: u64,
    }

    fn registry() -> std::sync::MutexGuard<'static, HashMap<&'static str, Point>> {
        static POINTS: OnceLock<Mutex<HashMap<&'static str, Point>>> = OnceLock::new();
        POINTS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `point` fail its next `times` evaluations (`u64::MAX`: until [`disarm`]ed).
    pub fn arm(point: &'static str, times: u64) {
        registry().insert(
            point,
            Point {
                remaining: times,
                fired: 0,
            },
        );
    }

    /// Stops `point` failing; returns how often it fired.
    pub fn disarm(point: &'static str) -> u64 {
        registry().remove(point).map_or(0, |p| p.fired)
    }

    /// How often `point` has fired since it was armed.
    pub fn fired(point: &'static str) -> u64 {
        registry().get(point).map_or(0, |p| p.fired)
    }

    /// `Err` when `point` is armed (and counts the firing down).
    pub fn check(point: &'static str) -> Result<(), Injected> {
        let mut points = registry();
        let Some(armed) = points.get_mut(point).filter(|p| p.remaining > 0) else {
            return Ok(());
        };
        if armed.remaining != u64::MAX {
            armed.remaining -= 1;
        }
        armed.fired += 1;
        Err(Injected(point))
    }
}
