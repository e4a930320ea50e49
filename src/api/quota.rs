//! Limits on what one caller may ask of the store: the per-customer backlog quota and the
//! scheduling horizon.
//!
//! The backlog (pending and retrying notifications) of a customer whose system is down grows
//! for as long as callers keep submitting; without a quota one such customer can fill the disk
//! every other customer shares. Counting the backlog on every submit would cost an index scan
//! each time, so a count is kept per customer and what this node admits is added to it. The
//! count is read again once per `RECOUNT`, and once per `RECHECK` while it is at the limit
//! (so a customer whose system catches up is admitted again within a second). On one node the
//! kept count never falls below the truth (deliveries only shrink a backlog), so the quota holds
//! exactly; with several nodes on one database, the others' submits show up at the next count,
//! so the quota may be overshot by up to `RECOUNT` of their intake.
//! A count never reads past the limit, so one costs at most `limit` index entries however large
//! the backlog (counting a million every second per customer was once most of a busy node's
//! reads, and its sorter most of its memory).
//!
//! Only a customer's first submit since the node started waits for a count. Later recounts run
//! in a background task, one per customer at a time, while submits go on against the kept count
//! (on one node never below the truth, so nothing is admitted that the quota would refuse). Had
//! every submit that found the count stale counted for itself, a large backlog would mean many
//! concurrent counts of up to `limit` index entries, and that customer's callers waiting on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    /// customer id → its kept count. Shared with the background recounts. std Mutex: held only
    /// for map operations, never across an `.await`.
    counted: Arc<Mutex<HashMap<String, Count>>>,
}

/// What is known of one customer's backlog.
#[derive(Debug, Clone, Copy)]
struct Count {
    /// When the store was last counted.
    at: Instant,
    /// The backlog then, plus what this node admitted since.
    backlog: u64,
    /// A background recount is under way; no other starts meanwhile.
    recounting: bool,
}

impl Count {
    /// A count just read from the store.
    fn counted(backlog: u64) -> Self {
        Self {
            at: Instant::now(),
            backlog,
            recounting: false,
        }
    }
}

/// What [`BacklogQuota::admit`] must do before it can decide.
enum Next {
    /// The kept count will do.
    Decide,
    /// Nothing is known yet: count now.
    CountFirst,
    /// The kept count will do, and it is time to recount in the background.
    Recount,
}

impl BacklogQuota {
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            counted: Arc::default(),
        }
    }

    /// Admits one more notification for `customer_id`, or refuses it with RESOURCE_EXHAUSTED
    /// when the customer's backlog is at the quota.
    pub async fn admit(&self, store: &Store, customer_id: &str) -> Result<(), Error> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        match self.next_step(customer_id, limit) {
            Next::Decide => {}
            Next::CountFirst => {
                let backlog = store.backlog_up_to(customer_id, limit).await?;
                // Bounded: only registered customers get here, and each has one entry.
                lock(&self.counted).insert(customer_id.to_owned(), Count::counted(backlog));
            }
            Next::Recount => self.recount_in_background(store, customer_id, limit),
        }
        let mut map = lock(&self.counted);
        let backlog = &mut map
            .entry(customer_id.to_owned())
            .or_insert(Count::counted(0))
            .backlog;
        if *backlog >= limit {
            return Err(Error::ResourceExhausted(format!(
                "customer {customer_id:?} has {backlog} notifications waiting, the most allowed \
                 (--max-backlog-per-customer {limit}); try again once its system catches up"
            )));
        }
        *backlog += 1;
        Ok(())
    }

    /// Decides, under one lock, whether a count is needed; marks a recount as under way so
    /// that concurrent submits do not start another.
    fn next_step(&self, customer_id: &str, limit: u64) -> Next {
        let mut map = lock(&self.counted);
        let Some(count) = map.get_mut(customer_id) else {
            return Next::CountFirst;
        };
        if count.recounting || count.at.elapsed() < trust_for(count.backlog, limit) {
            return Next::Decide;
        }
        count.recounting = true;
        Next::Recount
    }

    /// Counts `customer_id`'s backlog in a task and replaces the kept count with it. A failed
    /// count leaves the kept one, and the next submit tries again.
    fn recount_in_background(&self, store: &Store, customer_id: &str, limit: u64) {
        let (store, counted, customer) =
            (store.clone(), self.counted.clone(), customer_id.to_owned());
        tokio::spawn(async move {
            let result = store.backlog_up_to(&customer, limit).await;
            let mut map = lock(&counted);
            let Some(count) = map.get_mut(&customer) else {
                return;
            };
            match result {
                Ok(backlog) => *count = Count::counted(backlog),
                Err(err) => {
                    count.recounting = false;
                    tracing::warn!(
                        customer = %customer,
                        error = %err,
                        "counting a backlog for its quota failed; the kept count stays"
                    );
                }
            }
        });
    }
}

fn lock(counted: &Mutex<HashMap<String, Count>>) -> MutexGuard<'_, HashMap<String, Count>> {
    counted.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[tokio::test]
    async fn a_stale_count_never_makes_a_submit_wait() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("quota.db").display());
        let store = Store::connect(&url, &crate::store::StoreOptions::default())
            .await
            .unwrap();
        let quota = BacklogQuota::new(Some(100));
        // The first submit counts the store (empty: 0) and is admitted.
        quota.admit(&store, "acme").await.unwrap();
        let long_ago = Instant::now().checked_sub(RECOUNT).unwrap();
        lock(&quota.counted).get_mut("acme").unwrap().at = long_ago;

        // Stale now: each submit decides on the kept count at once (a single poll), and the
        // recount runs meanwhile in its own task.
        for _ in 0..10 {
            let admitted = tokio::time::timeout(Duration::ZERO, quota.admit(&store, "acme")).await;
            assert!(
                matches!(admitted, Ok(Ok(()))),
                "a stale count made a submit wait"
            );
        }
        let kept = lock(&quota.counted)["acme"];
        assert_eq!((kept.backlog, kept.recounting), (11, true));

        // The recount lands: the store holds nothing, so the kept 11 becomes 0.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = lock(&quota.counted)["acme"];
            if !count.recounting {
                assert_eq!(count.backlog, 0);
                assert!(count.at > long_ago);
                break;
            }
            assert!(Instant::now() < deadline, "the recount never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
