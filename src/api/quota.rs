//! Limits on what one caller may ask of the store: the per-customer backlog quota and the
//! scheduling horizon.
//!
//! The backlog (pending and retrying notifications) of a customer whose system is down grows
//! for as long as callers keep submitting; without a quota one such customer can fill the disk
//! every other customer shares. Counting the backlog on every submit would cost an index scan
//! each time, so a count is kept per customer and what this node admits is added to it. The
//! count is read again once per [`RECOUNT`], and once per [`RECHECK`] while it is at the limit
//! (so a customer whose system catches up is admitted again within a second). On one node the
//! kept count never falls below the truth (deliveries only shrink a backlog), so the quota holds
//! exactly; with several nodes on one database, the others' submits show up at the next count,
//! so the quota may be overshot by up to [`RECOUNT`] of their intake.
//! A count never reads past the limit, so one costs at most `limit` index entries however large
//! the backlog (counting a million every second per customer was once most of a busy node's
//! reads, and its sorter most of its memory).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::model::{EpochMillis, NewNotification};
use crate::store::Store;

/// How long the count of a customer at the limit is trusted.
const RECHECK: Duration = Duration::from_secs(1);
/// How long the count of a customer below the limit is trusted.
const RECOUNT: Duration = Duration::from_secs(10);

/// The per-customer backlog quota; `None` is unlimited.
#[derive(Debug)]
pub struct BacklogQuota {
    limit: Option<u64>,
    /// customer id → (when counted, backlog then plus what this node admitted since). std
    /// Mutex: held only for map operations, never across an `.await`.
    counted: Mutex<HashMap<String, (Instant, u64)>>,
}

impl BacklogQuota {
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            counted: Mutex::default(),
        }
    }

    /// Admits one more notification for `customer_id`, or refuses it with RESOURCE_EXHAUSTED
    /// when the customer's backlog is at the quota.
    pub async fn admit(&self, store: &Store, customer_id: &str) -> Result<(), Error> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let fresh = self
            .map()
            .get(customer_id)
            .is_some_and(|&(at, backlog)| at.elapsed() < trust_for(backlog, limit));
        if !fresh {
            let backlog = store.backlog_up_to(customer_id, limit).await?;
            // Bounded: only registered customers get here, and each has one entry.
            self.map()
                .insert(customer_id.to_owned(), (Instant::now(), backlog));
        }
        let mut map = self.map();
        let backlog = &mut map
            .entry(customer_id.to_owned())
            .or_insert((Instant::now(), 0))
            .1;
        if *backlog >= limit {
            return Err(Error::ResourceExhausted(format!(
                "customer {customer_id:?} has {backlog} notifications waiting, the most allowed \
                 (--max-backlog-per-customer {limit}); try again once its system catches up"
            )));
        }
        *backlog += 1;
        Ok(())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u64)>> {
        self.counted.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long a count of `backlog` is trusted under a quota of `limit`.
fn trust_for(backlog: u64, limit: u64) -> Duration {
    if backlog >= limit { RECHECK } else { RECOUNT }
}

/// Refuses a `send_at` or `expires_at` further ahead than `horizon`: a year-9999 schedule is a
/// mistake, and a row nobody will deliver for decades only takes space.
pub fn within_horizon(
    notification: &NewNotification,
    horizon: Duration,
    now: EpochMillis,
) -> Result<(), Error> {
    let latest = now.saturating_add(i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX));
    for (field, at) in [
        ("send_at", notification.send_at),
        ("expires_at", notification.expires_at),
    ] {
        if at.is_some_and(|at| at > latest) {
            return Err(Error::invalid(
                field,
                format!(
                    "is more than {} ahead (--max-schedule-ahead)",
                    humantime::format_duration(horizon)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_at_the_limit_is_checked_again_soonest() {
        assert_eq!(trust_for(0, 1_000), RECOUNT);
        assert_eq!(trust_for(999, 1_000), RECOUNT);
        assert_eq!(trust_for(1_000, 1_000), RECHECK);
        assert_eq!(trust_for(u64::MAX, 1_000), RECHECK);
    }
}
