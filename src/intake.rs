//! Intake: opt-out and group commit. Concurrent submits are queued to a writer that checks the
//! recipients' preferences for everything waiting (one lookup per customer in the batch, so on
//! PostgreSQL without Redis the check costs a query per commit, not per call), stores it all in
//! one transaction, then answers each caller — so durability costs one commit per batch, not one
//! per notification. A caller's answer is sent only after its rows are committed.
//!
//! After each commit the customers that received new notifications are woken.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dispatch::Dispatcher;
use crate::model::{NewNotification, now_millis};
use crate::preferences::Preferences;
use crate::store::{self, Inserted, Store};
use crate::telemetry::metrics::{Metrics, StoreOp};

/// Submissions that may wait for a writer before callers wait too (backpressure).
const QUEUE: usize = 4096;
/// Notifications a writer gathers into one transaction, at most (a bigger single batch is
/// written alone).
const MAX_ROWS_PER_COMMIT: usize = 2000;

/// Why a submission was not stored. Cloneable, because one failed commit answers many callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// The database could not be reached; nothing was stored. Worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the batch; nothing was stored.
    #[error("storing failed: {0}")]
    Storage(String),
    #[error("intake is shutting down")]
    ShuttingDown,
}

impl From<&store::Error> for IntakeError {
    fn from(err: &store::Error) -> Self {
        match err {
            store::Error::Unavailable(_) => IntakeError::Unavailable(err.to_string()),
            _ => IntakeError::Storage(err.to_string()),
        }
    }
}

impl From<&crate::preferences::Error> for IntakeError {
    fn from(err: &crate::preferences::Error) -> Self {
        match err {
            crate::preferences::Error::Store(err) => err.into(),
            // Without the cache an opt-out could be missed: store nothing, the caller retries.
            crate::preferences::Error::Cache(_) => IntakeError::Unavailable(err.to_string()),
        }
    }
}

/// Front of the group-commit queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Intake {
    tx: mpsc::Sender<Job>,
}

#[derive(Debug)]
struct Job {
    items: Vec<NewNotification>,
    reply: oneshot::Sender<Result<Vec<Inserted>, IntakeError>>,
}

impl Intake {
    /// Starts `writers` writer tasks. SQLite has one writer anyway, so one task suffices there;
    /// PostgreSQL commits several transactions in parallel.
    pub fn spawn(
        store: Store,
        dispatcher: Dispatcher,
        writers: usize,
        metrics: Arc<Metrics>,
        preferences: Arc<Preferences>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let writer = Writer {
            store,
            dispatcher,
            metrics,
            preferences,
        };
        let handles = (0..writers.max(1))
            .map(|_| tokio::spawn(writer.clone().run(rx.clone())))
            .collect();
        (Self { tx }, handles)
    }

    /// Stores `items` durably; one result per item, in order.
    pub async fn submit(&self, items: Vec<NewNotification>) -> Result<Vec<Inserted>, IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { items, reply })
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        answer.await.map_err(|_| IntakeError::ShuttingDown)?
    }
}

/// What each writer task holds.
#[derive(Debug, Clone)]
struct Writer {
    store: Store,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    /// Opted-out recipients' notifications are stored SUPPRESSED.
    preferences: Arc<Preferences>,
}

impl Writer {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
        while let Some(jobs) = next_batch(&rx).await {
            let mut items: Vec<NewNotification> = jobs
                .iter()
                .flat_map(|job| job.items.iter().cloned())
                .collect();
            let result = match self.preferences.suppress_refused(&mut items).await {
                Ok(()) => self.insert(&items).await,
                Err(err) => {
                    tracing::warn!(error = %err, "preferences unreadable; nothing in the batch was stored");
                    Err(IntakeError::from(&err))
                }
            };
            if let Ok(results) = &result {
                wake_customers(&self.dispatcher, &items, results);
            }
            answer(jobs, result);
        }
    }

    /// One group commit.
    async fn insert(&self, items: &[NewNotification]) -> Result<Vec<Inserted>, IntakeError> {
        let started = std::time::Instant::now();
        let result = self.store.insert_notifications(items, now_millis()).await;
        self.metrics
            .store_latency(StoreOp::Insert, started.elapsed());
        self.metrics.commit_rows(items.len());
        result.map_err(|err| {
            tracing::warn!(error = %err, "group commit failed; nothing in it was acknowledged");
            IntakeError::from(&err)
        })
    }
}

/// Waits for one job, then takes whatever else is already queued, up to the row limit. The
/// receiver lock is held only while gathering, so another writer can gather while this one writes.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.items.len();
    let mut jobs = vec![first];
    while rows < MAX_ROWS_PER_COMMIT {
        match rx.try_recv() {
            Ok(job) => {
                rows += job.items.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

fn wake_customers(dispatcher: &Dispatcher, items: &[NewNotification], results: &[Inserted]) {
    let mut woken = HashSet::new();
    for (item, result) in items.iter().zip(results) {
        if matches!(result, Inserted::New(_))
            && item.suppressed.is_none()
            && woken.insert((item.customer_id.as_str(), item.channel, item.lane))
        {
            dispatcher.wake_lane(&item.customer_id, item.channel, item.lane);
        }
    }
}

/// Splits the batch's results back to the callers, in order. A caller that gave up waiting
/// simply finds nothing to read; its rows are stored all the same.
fn answer(jobs: Vec<Job>, result: Result<Vec<Inserted>, IntakeError>) {
    match result {
        Ok(results) => {
            let mut results = results.into_iter();
            for job in jobs {
                let mine = results.by_ref().take(job.items.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(err) => {
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}
