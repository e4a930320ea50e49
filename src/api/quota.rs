//! Limits on what one caller may ask of the store: the per-customer backlog quota and the
//! scheduling horizon.
//!
//! The backlog (pending and retrying notifications) of a customer whose system is down grows
//! for as long as callers keep submitting; without a quota one such customer can fill the disk
//! every other customer shares. Counting the backlog on every submit would cost an index scan
//! each time, so the count is read at most once per [`REFRESH`] per customer and what this
//! node admits meanwhile is added to it. Other nodes' submits show up at the next refresh: the
//! quota may be overshot by about one refresh of intake, never by more.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::model::{EpochMillis, NewNotification};
use crate::store::Store;

/// How long a customer's counted backlog is trusted before it is read again.
const REFRESH: Duration = Duration::from_secs(1);

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
            .is_some_and(|(at, _)| at.elapsed() < REFRESH);
        if !fresh {
            let (transactional, bulk) = store.backlog(customer_id).await?;
            // Bounded: only registered customers get here, and each has one entry.
            self.map().insert(
                customer_id.to_owned(),
                (Instant::now(), transactional + bulk),
            );
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
