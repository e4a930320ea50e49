//! The outcome writer: records attempt outcomes in batches, one transaction for many deliveries,
//! so completing a delivery costs a fraction of a database write.
//!
//! Losing an outcome is safe by construction: the row stays `in_flight` until its lease runs out,
//! and is then delivered again (at least once). So after a few failed tries a batch is dropped
//! with an error log rather than blocking deliveries forever.
//!
//! On PostgreSQL several writer tasks take batches from the one queue and write them at once
//! (see [`Store::outcome_writers`]). Their order does not matter: a row gets a second outcome only
//! after it was claimed again, which needs the first outcome written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, RwLock, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::ports::{Io, OutcomeQueue};
use crate::model::Outcome;
use crate::model::now_millis;
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, StoreOp};

/// Most outcomes written in one transaction.
const BATCH: usize = 1000;
/// Outcomes that may wait for the writer before senders wait too.
const QUEUE: usize = 16 * 1024;
/// Tries per batch before it is left to lease recovery.
const TRIES: u32 = 5;

/// Sending side of the outcome writer; cheap to clone. The writer stops once every clone is gone,
/// after writing what it was sent.
#[derive(Debug, Clone)]
pub struct OutcomeWriter {
    tx: mpsc::Sender<Entry>,
}

/// What the writer is sent: an outcome, or a request to answer once everything sent before it
/// is written.
#[derive(Debug)]
enum Entry {
    Outcome(Outcome),
    Flush(oneshot::Sender<()>),
}

impl OutcomeWriter {
    /// Starts the writer tasks; the handle finishes when the last of them has.
    pub fn spawn(store: Store, metrics: Arc<Metrics>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queue = Arc::new(Queue {
            rx: Mutex::new(rx),
            writing: RwLock::new(()),
        });
        let mut writers = JoinSet::new();
        for _ in 0..store.outcome_writers() {
            writers.spawn_on(
                write_loop(store.clone(), metrics.clone(), queue.clone()),
                store.writers_runtime(),
            );
        }
        let all = tokio::spawn(async move { while writers.join_next().await.is_some() {} });
        (Self { tx }, all)
    }

    /// Queues one outcome for writing.
    pub async fn record(&self, outcome: Outcome) {
        if self.tx.send(Entry::Outcome(outcome)).await.is_err() {
            writer_stopped();
        }
    }

    /// Outcomes waiting in the queue for a writer to take them. At its limit a finished delivery
    /// waits for room and keeps its customer's in-flight slot meanwhile, so this gauge tells an
    /// SRE when the store's writes, not the customer systems, are what holds deliveries back.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Returns once every outcome recorded before the call has been written (or given up on):
    /// a handover releases a bucket only after its last outcomes are in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Entry::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl OutcomeQueue for OutcomeWriter {
    fn try_record(&self, outcome: Outcome) -> Result<(), Outcome> {
        match self.tx.try_send(Entry::Outcome(outcome)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Entry::Outcome(outcome))) => Err(outcome),
            Err(_) => {
                writer_stopped();
                Ok(())
            }
        }
    }

    fn record(&self, outcome: Outcome) -> Io<'_, ()> {
        Box::pin(OutcomeWriter::record(self, outcome))
    }
}

/// An outcome sent after shutdown stopped the writer is dropped: its row's lease recovers it.
fn writer_stopped() {
    tracing::error!("outcome writer has stopped; the lease will recover this notification");
}

/// What the writer tasks share.
struct Queue {
    /// Taken by one writer at a time, to gather its next batch.
    rx: Mutex<mpsc::Receiver<Entry>>,
    /// Held shared while a batch is written, exclusively to answer flushes: a flush is answered
    /// once no batch taken before it is still being written, by whichever writer took it.
    writing: RwLock<()>,
}

async fn write_loop(store: Store, metrics: Arc<Metrics>, queue: Arc<Queue>) {
    let mut received = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    loop {
        let writing = {
            let mut rx = queue.rx.lock().await;
            if rx.recv_many(&mut received, BATCH).await == 0 {
                return;
            }
            // Taken before the queue is let go, so a flush another writer takes next waits
            // for this batch.
            queue.writing.read().await
        };
        for entry in received.drain(..) {
            match entry {
                Entry::Outcome(outcome) => batch.push(outcome),
                Entry::Flush(done) => flushes.push(done),
            }
        }
        if !batch.is_empty() {
            write_with_retries(&store, &metrics, &batch).await;
            batch.clear();
        }
        drop(writing);
        if !flushes.is_empty() {
            let _none_writing = queue.writing.write().await;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

async fn write_with_retries(store: &Store, metrics: &Metrics, batch: &[Outcome]) {
    for attempt in 1..=TRIES {
        let started = std::time::Instant::now();
        let written = store.record_outcomes(batch, now_millis()).await;
        metrics.store_latency(StoreOp::Outcomes, started.elapsed());
        match written {
            Ok(_) => return,
            Err(err) if attempt < TRIES => {
                tracing::warn!(error = %err, attempt, outcomes = batch.len(), "writing outcomes failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    outcomes = batch.len(),
                    "giving up writing outcomes; their leases will return them for redelivery"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClaimToken, NotificationId, OutcomeKind};

    fn delivered(id: i64) -> Outcome {
        Outcome {
            id: NotificationId(id),
            claim: ClaimToken::FIRST,
            kind: OutcomeKind::Delivered,
        }
    }

    #[tokio::test]
    async fn queued_counts_what_no_writer_has_taken_yet() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let writer = OutcomeWriter { tx };
        assert_eq!(writer.queued(), 0);
        for id in 1..=3 {
            writer.record(delivered(id)).await;
        }
        writer.try_record(delivered(4)).unwrap();
        assert_eq!(writer.queued(), 4);
        let mut taken = Vec::new();
        assert_eq!(rx.recv_many(&mut taken, 3).await, 3);
        assert_eq!(writer.queued(), 1);
    }
}
