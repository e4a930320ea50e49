//! One customer's worker: claims that customer's due notifications in small batches and delivers
//! them, never more than its in-flight limit at once and never faster than its `max_rate_per_sec`.
//!
//! The worker holds only what it has claimed (at most its in-flight limit), so a customer with a
//! million queued notifications costs no more memory than one with ten: the backlog stays in the
//! store. Transactional notifications are claimed before bulk ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{Dispatcher, Wake};
use crate::model::{Customer, Lane, now_millis};
use crate::sink::SinkError;
use crate::store::{Claimed, Outcome, OutcomeKind};

/// How long to back off after the store fails, before claiming again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The per-customer delivery loop (see the module docs).
pub(super) struct CustomerWorker {
    dispatcher: Dispatcher,
    customer_id: String,
    wake: Arc<Wake>,
    /// One permit per delivery that may be in flight.
    slots: Arc<Semaphore>,
    pacer: Pacer,
}

impl CustomerWorker {
    pub(super) fn new(dispatcher: Dispatcher, customer_id: String, wake: Arc<Wake>) -> Self {
        let slots = Arc::new(Semaphore::new(
            dispatcher.inner.settings.max_in_flight_per_customer.max(1),
        ));
        Self {
            dispatcher,
            customer_id,
            wake,
            slots,
            pacer: Pacer::default(),
        }
    }

    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("customer_worker", customer_id = %self.customer_id);
        async move {
            tracing::debug!("worker started");
            while self.step().await {}
            tracing::debug!("worker stopped");
        }
        .instrument(span)
        .await;
    }

    /// One round: claim what may be sent now and start it. Returns false when the worker should end.
    async fn step(&mut self) -> bool {
        let stop = self.dispatcher.inner.stop.clone();
        if stop.is_cancelled() {
            return false;
        }
        self.wake.pending.store(false, Ordering::Release);
        let customer = match self.dispatcher.inner.directory.get(&self.customer_id).await {
            Ok(Some(customer)) => customer,
            Ok(None) => return !self.dispatcher.retire(&self.customer_id, &self.wake),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read customer settings");
                return self.pause(STORE_ERROR_PAUSE).await;
            }
        };
        if customer.paused {
            return self.wait_for_work().await;
        }
        let slots = tokio::select! {
            _ = stop.cancelled() => return false,
            slots = self.free_slots(&customer) => slots,
        };
        let claimed = match self.claim(slots.len()).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(error = %err, "claim failed");
                return self.pause(STORE_ERROR_PAUSE).await;
            }
        };
        if claimed.is_empty() {
            drop(slots);
            return self.wait_for_work().await;
        }
        for (notification, slot) in claimed.into_iter().zip(slots) {
            self.start_delivery(&customer, notification, slot).await;
        }
        true
    }

    /// Waits for at least one free delivery slot, then takes as many as are free, up to one
    /// second's worth at the customer's rate ceiling (so claimed rows don't wait long in memory).
    async fn free_slots(&self, customer: &Customer) -> Vec<OwnedSemaphorePermit> {
        let want = match customer.max_rate_per_sec {
            0 => usize::MAX,
            rate => usize::try_from(rate).unwrap_or(usize::MAX),
        };
        let Ok(first) = self.slots.clone().acquire_owned().await else {
            return Vec::new(); // the semaphore is never closed
        };
        let mut slots = vec![first];
        while slots.len() < want {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => slots.push(slot),
                Err(_) => break,
            }
        }
        slots
    }

    /// Claims up to `limit` due notifications: transactional first, bulk with what is left.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, crate::store::Error> {
        let inner = &self.dispatcher.inner;
        let now = now_millis();
        let lease_until =
            now.saturating_add(i64::try_from(inner.settings.lease.as_millis()).unwrap_or(i64::MAX));
        let mut claimed = Vec::with_capacity(limit);
        for lane in [Lane::Transactional, Lane::Bulk] {
            let room = limit - claimed.len();
            if room == 0 {
                break;
            }
            claimed.extend(
                inner
                    .store
                    .claim(&self.customer_id, lane, room, now, lease_until)
                    .await?,
            );
        }
        Ok(claimed)
    }

    /// Paces and spawns one delivery; the slot is released when the attempt's outcome is queued.
    async fn start_delivery(
        &mut self,
        customer: &Arc<Customer>,
        notification: Claimed,
        slot: OwnedSemaphorePermit,
    ) {
        let inner = &self.dispatcher.inner;
        if notification.expires_at.is_some_and(|at| at <= now_millis()) {
            inner
                .outcomes
                .record(outcome(&notification, OutcomeKind::Expired))
                .await;
            return;
        }
        self.pacer.wait(customer.max_rate_per_sec).await;
        let span = tracing::info_span!(
            "delivery",
            customer_id = %notification.customer_id,
            notification_id = %notification.id,
            attempt = notification.attempts,
        );
        let task = deliver(
            self.dispatcher.clone(),
            customer.clone(),
            notification,
            slot,
        );
        inner.tasks.spawn(task.instrument(span));
    }

    /// Sleeps until woken or idle for too long; an idle worker with nothing in flight exits.
    async fn wait_for_work(&self) -> bool {
        let inner = &self.dispatcher.inner;
        let woken = tokio::select! {
            _ = inner.stop.cancelled() => return false,
            _ = self.wake.notify.notified() => true,
            _ = tokio::time::sleep(inner.settings.idle_timeout) => false,
        };
        let idle =
            self.slots.available_permits() == inner.settings.max_in_flight_per_customer.max(1);
        woken || !idle || !self.dispatcher.retire(&self.customer_id, &self.wake)
    }

    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = self.dispatcher.inner.stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

/// Makes one attempt and queues its outcome.
async fn deliver(
    dispatcher: Dispatcher,
    customer: Arc<Customer>,
    notification: Claimed,
    _slot: OwnedSemaphorePermit,
) {
    let inner = &dispatcher.inner;
    let kind = match inner.sink.deliver(&customer, &notification).await {
        Ok(()) => {
            tracing::debug!("delivered");
            OutcomeKind::Delivered
        }
        Err(SinkError::Permanent { reason }) => {
            tracing::info!(error = %reason, "delivery failed permanently");
            OutcomeKind::Failed { error: reason }
        }
        Err(SinkError::Retryable {
            reason,
            retry_after,
        }) => {
            tracing::info!(error = %reason, "delivery attempt failed; will retry");
            inner.settings.retry.after_retryable(
                notification.attempts,
                notification.created_at,
                now_millis(),
                retry_after,
                &reason,
                rand::random::<f64>(),
            )
        }
    };
    inner.outcomes.record(outcome(&notification, kind)).await;
}

fn outcome(notification: &Claimed, kind: OutcomeKind) -> Outcome {
    Outcome {
        id: notification.id,
        claim: notification.claim,
        kind,
    }
}

/// Spaces sends evenly at the customer's rate ceiling, with no bursts.
#[derive(Debug, Default)]
struct Pacer {
    next: Option<Instant>,
}

impl Pacer {
    async fn wait(&mut self, rate_per_sec: u32) {
        if rate_per_sec == 0 {
            self.next = None;
            return;
        }
        let interval = Duration::from_secs(1) / rate_per_sec;
        let now = Instant::now();
        let at = self.next.map_or(now, |next| next.max(now));
        self.next = Some(at + interval);
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_sends_at_the_rate() {
        let mut pacer = Pacer::default();
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait(10).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        pacer.wait(0).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
