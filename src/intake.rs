//! Intake: opt-out and group commit. Concurrent submits are queued to a writer that checks the
//! recipients' preferences for everything waiting (one lookup per customer in the batch, so on
//! PostgreSQL without Redis the check costs a query per commit, not per call), stores it all in
//! one transaction, then answers each caller — so durability costs one commit per batch, not one
//! per notification. A caller's answer is sent only after its rows are committed. (On SQLite a
//! group commit is cut between two calls when a unary Submit's express commit is waiting: see
//! [`Store::insert_calls`].)
//!
//! Fresh notifications skip the store's round trip when they can: a notification due now for a
//! customer whose actor has room in its window is stored already claimed and, after the commit,
//! handed straight to that actor (see [`crate::dispatch::handoff`]). For the rest, the customers
//! that received new notifications are woken after each commit, and their actors claim them.
//!
//! Intake also owns what happens to a notification before it is queued: pinning a templated
//! one to its template's version ([`pinning`]), and, with `--redis-url`, answering repeats of
//! idempotency keys Redis already knows without queueing them (see [`crate::idempotency`]).
//! The API only validates requests and hands them over.

pub(crate) mod pinning;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dispatch::Dispatcher;
use crate::dispatch::handoff::Slot;
use crate::idempotency::FastPath;
use crate::model::{ClaimToken, Claimed, EpochMillis, Inserted, NewNotification, now_millis};
use crate::preferences::Preferences;
use crate::store::{self, Commit, Store};
use crate::telemetry::metrics::{Metrics, StoreOp};
use crate::templates::Templates;
pub(crate) use pinning::{PinError, Pins};

/// Submissions that may wait for a writer before callers wait too (backpressure).
const QUEUE: usize = 4096;
/// A group-commit writer stops gathering calls into one transaction at this many notifications
/// (a bigger single batch is written alone). It bounds how long one commit holds SQLite's write
/// connection, which is what an express commit waits for. Measured with 2,000 and with 256
/// (with the restart change in `store::wal`): group commits holding it over 10 ms fell by about
/// half, and a unary Submit's p99 beside saturated intake from 29–46 ms to 27–36 ms, for 2% less
/// intake alone.
const MAX_ROWS_PER_COMMIT: usize = 256;
/// A call with at most this many notifications goes to the express writers: its caller waits
/// for nothing else, so it must not wait for a group commit of other callers' big batches.
const EXPRESS_ITEMS: usize = 10;
/// An express writer stops gathering calls into one commit at this many notifications (one
/// insert statement), so an express commit stays short even in a flood of unary Submits.
const MAX_ROWS_PER_EXPRESS_COMMIT: usize = 256;

/// Why a submission was not stored. Cloneable, because one failed commit answers many callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// The database could not be reached; nothing was stored. Worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database's storage is full; nothing was stored. Worth retrying once space is freed.
    #[error("database storage is full: {0}")]
    Full(String),
    /// The database refused the batch; nothing was stored.
    #[error("storing failed: {0}")]
    Storage(String),
    #[error("intake is shutting down")]
    ShuttingDown,
    /// The writer answered a different number of results than items were submitted: a bug.
    #[error("intake answered {answered} results for {submitted} items")]
    Mismatch { submitted: usize, answered: usize },
}

impl From<&store::Error> for IntakeError {
    fn from(err: &store::Error) -> Self {
        match err {
            store::Error::Unavailable(_) => IntakeError::Unavailable(err.to_string()),
            store::Error::Full(_) => IntakeError::Full(err.to_string()),
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

/// Front of the group-commit queues, with the template registry notifications are pinned
/// against and the idempotency fast path; cheap to clone.
#[derive(Debug, Clone)]
pub struct Intake {
    /// To the group-commit writers.
    tx: mpsc::Sender<Job>,
    /// To the express writers: calls of at most [`EXPRESS_ITEMS`] notifications.
    express: mpsc::Sender<Job>,
    templates: Arc<Templates>,
    /// With `--redis-url`: repeats Redis knows are answered without a commit.
    fast_path: Option<Arc<FastPath>>,
}

#[derive(Debug)]
struct Job {
    items: Vec<NewNotification>,
    reply: Reply,
}

/// Where a caller's results go.
type Reply = oneshot::Sender<Result<Vec<Inserted>, IntakeError>>;

impl Intake {
    /// Starts `writers` group-commit writer tasks (PostgreSQL commits several transactions in
    /// parallel; on SQLite a second one gathers while the first commits), and as many express
    /// writers for small calls, whose commits go before the group commits at SQLite's write
    /// connection (see [`Commit::Express`]). Small calls get writers of their own because a
    /// writer answers nobody until its whole commit is done: a unary Submit queued with 800
    /// rows of batches would wait for all of them.
    pub fn spawn(
        store: Store,
        dispatcher: Dispatcher,
        writers: usize,
        metrics: Arc<Metrics>,
        preferences: Arc<Preferences>,
        templates: Arc<Templates>,
        fast_path: Option<Arc<FastPath>>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let (express, express_rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            store,
            dispatcher,
            metrics,
            preferences,
            commit: Commit::Group,
        };
        let express_writer = Writer {
            commit: Commit::Express,
            ..writer.clone()
        };
        let express_rx = Arc::new(Mutex::new(express_rx));
        let runtime = writer.store.writers_runtime().clone();
        let handles = (0..writers.max(1))
            .flat_map(|_| {
                [
                    runtime.spawn(writer.clone().run(rx.clone())),
                    runtime.spawn(express_writer.clone().run(express_rx.clone())),
                ]
            })
            .collect();
        let intake = Self {
            tx,
            express,
            templates,
            fast_path,
        };
        (intake, handles)
    }

    /// Template pinning for one call (a batch shares it, so each template is read once).
    pub fn pins(&self) -> Pins<'_> {
        Pins::new(&self.templates)
    }

    /// Stores `items` durably in one group commit (which also applies the recipients'
    /// opt-outs); one result per item, in order. With the fast path, repeats it already knows
    /// are answered from it, and the keys the database accepts are remembered for next time,
    /// without the caller waiting for that.
    pub async fn submit(&self, items: Vec<NewNotification>) -> Result<Vec<Inserted>, IntakeError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let Some(fast_path) = &self.fast_path else {
            return self.commit(items).await;
        };
        let entries = fast_path.entries(&items);
        let known = fast_path.known(&entries).await;
        let mut unknown = Vec::new();
        let mut unknown_entries = Vec::new();
        for ((item, entry), id) in items.into_iter().zip(entries).zip(&known) {
            if id.is_none() {
                unknown.push(item);
                unknown_entries.push(entry);
            }
        }
        let submitted = unknown.len();
        let stored = match unknown.is_empty() {
            true => Vec::new(),
            false => self.commit(unknown).await?,
        };
        let answered = stored.len();
        fast_path.remember_later(unknown_entries, stored.clone());
        let mut stored = stored.into_iter();
        known
            .into_iter()
            .map(|id| match id {
                Some(id) => Ok(Inserted::Duplicate(id)),
                None => stored.next().ok_or(IntakeError::Mismatch {
                    submitted,
                    answered,
                }),
            })
            .collect()
    }

    /// Queues `items` for the next group commit (an express one for a small call) and waits
    /// for their results.
    async fn commit(&self, items: Vec<NewNotification>) -> Result<Vec<Inserted>, IntakeError> {
        let (reply, answer) = oneshot::channel();
        let queue = match items.len() <= EXPRESS_ITEMS {
            true => &self.express,
            false => &self.tx,
        };
        queue
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
    /// Which commits this writer makes: group commits, or small express ones ahead of them.
    commit: Commit,
}

impl Writer {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
        let max_rows = match self.commit {
            Commit::Group => MAX_ROWS_PER_COMMIT,
            Commit::Express => MAX_ROWS_PER_EXPRESS_COMMIT,
        };
        while let Some(jobs) = next_batch(&rx, max_rows).await {
            let (mut items, callers) = take_items(jobs);
            let stored = match self.preferences.suppress_refused(&mut items).await {
                Ok(()) => {
                    let calls: Vec<usize> = callers.iter().map(|(count, _)| *count).collect();
                    self.insert(items, &calls).await
                }
                Err(err) => {
                    tracing::warn!(error = %err, "preferences unreadable; nothing in the batch was stored");
                    (Vec::new(), Some(IntakeError::from(&err)))
                }
            };
            answer(callers, stored);
        }
    }

    /// One group commit (which may be cut between calls, see [`Store::insert_calls`]), then
    /// the handoffs and wakes it makes possible. Returns the results of the calls stored, and
    /// why the rest were not.
    async fn insert(
        &self,
        mut items: Vec<NewNotification>,
        calls: &[usize],
    ) -> (Vec<Inserted>, Option<IntakeError>) {
        let now = now_millis();
        let mut reservations = self.reserve(&items, now);
        let handoff: Vec<bool> = reservations.iter().map(Option::is_some).collect();
        let lease_until = now.saturating_add(self.dispatcher.lease_ms());
        let started = std::time::Instant::now();
        let stored = self
            .store
            .insert_calls(self.commit, &items, calls, &handoff, now, lease_until)
            .await;
        self.metrics
            .store_latency(StoreOp::Insert, started.elapsed());
        self.metrics.commit_rows(items.len());
        let done = stored.results.len();
        let failed = stored.failed.map(|err| {
            tracing::warn!(error = %err, "group commit failed; its calls not committed before the failure were not acknowledged");
            for (item, slot) in items[done..].iter().zip(reservations.drain(done..)) {
                if let Some(slot) = slot {
                    slot.unreserve(item.lane);
                }
            }
            IntakeError::from(&err)
        });
        items.truncate(done);
        wake_customers(&self.dispatcher, &items, &stored.results, &handoff);
        self.hand_over(items, reservations, &stored.results, now);
        (stored.results, failed)
    }

    /// For each item that may go straight to its actor (due now, not suppressed), that actor's
    /// slot with a credit taken; `None` for the rest.
    fn reserve(&self, items: &[NewNotification], now: EpochMillis) -> Vec<Option<Arc<Slot>>> {
        let handoffs = self.dispatcher.handoffs();
        items
            .iter()
            .map(|item| {
                let due_now = item.send_at.is_none_or(|at| at <= now);
                (due_now && item.suppressed.is_none())
                    .then(|| handoffs.reserve(&item.customer_id, item.channel, item.lane))
                    .flatten()
            })
            .collect()
    }

    /// Gives each reserved, newly stored item to its actor (stored claimed, claim token 1); a
    /// reservation whose item was a duplicate is returned. What an actor can no longer take
    /// (it stopped meanwhile) goes back to pending through the dispatcher.
    fn hand_over(
        &self,
        items: Vec<NewNotification>,
        reservations: Vec<Option<Arc<Slot>>>,
        results: &[Inserted],
        now: EpochMillis,
    ) {
        let mut by_slot: HashMap<*const Slot, (Arc<Slot>, Vec<Claimed>)> = HashMap::new();
        for ((item, slot), result) in items.into_iter().zip(reservations).zip(results) {
            let Some(slot) = slot else { continue };
            let Inserted::New(id) = *result else {
                slot.unreserve(item.lane);
                continue;
            };
            by_slot
                .entry(Arc::as_ptr(&slot))
                .or_insert_with(|| (slot.clone(), Vec::new()))
                .1
                .push(claimed_at_intake(item, id, now));
        }
        for (slot, notifications) in by_slot.into_values() {
            let count = notifications.len() as u64;
            match slot.hand(notifications) {
                Ok(()) => self.metrics.handed_off(count),
                Err(refused) => self.dispatcher.hand_back(refused),
            }
        }
    }
}

/// A notification stored already claimed by intake, as its actor receives it.
fn claimed_at_intake(
    item: NewNotification,
    id: crate::model::NotificationId,
    now: EpochMillis,
) -> Claimed {
    Claimed {
        id,
        claim: ClaimToken::FIRST,
        attempts: 1,
        customer_id: item.customer_id,
        recipient: item.recipient,
        lane: item.lane,
        channel: item.channel,
        payload: item.payload,
        created_at: now,
        expires_at: item.expires_at,
        template: item.template,
    }
}

/// The jobs' items in one list (moved, not copied), and each caller's reply with its count.
fn take_items(jobs: Vec<Job>) -> (Vec<NewNotification>, Vec<(usize, Reply)>) {
    let mut items = Vec::with_capacity(jobs.iter().map(|job| job.items.len()).sum());
    let callers = jobs
        .into_iter()
        .map(|job| {
            let count = job.items.len();
            items.extend(job.items);
            (count, job.reply)
        })
        .collect();
    (items, callers)
}

/// Waits for one job, then takes whatever else is already queued, up to `max_rows`. The
/// receiver lock is held only while gathering, so another writer can gather while this one writes.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>, max_rows: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.items.len();
    let mut jobs = vec![first];
    while rows < max_rows {
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

/// Wakes the customers with newly stored notifications that were not handed over, once per
/// customer, channel and lane.
fn wake_customers(
    dispatcher: &Dispatcher,
    items: &[NewNotification],
    results: &[Inserted],
    handed: &[bool],
) {
    let mut woken = HashSet::new();
    for ((item, result), handed) in items.iter().zip(results).zip(handed) {
        if matches!(result, Inserted::New(_))
            && !handed
            && item.suppressed.is_none()
            && woken.insert((item.customer_id.as_str(), item.channel, item.lane))
        {
            dispatcher.wake_lane(&item.customer_id, item.channel, item.lane);
        }
    }
}

/// Splits the batch's results back to the callers, in order: each caller whose call was
/// stored gets its results, the others the error. A caller that gave up waiting simply finds
/// nothing to read; its rows are stored all the same.
fn answer(callers: Vec<(usize, Reply)>, (results, failed): (Vec<Inserted>, Option<IntakeError>)) {
    let mut results = results.into_iter();
    let mut stored = results.len();
    for (count, reply) in callers {
        let answer = match (stored.checked_sub(count), &failed) {
            (Some(left), _) => {
                stored = left;
                Ok(results.by_ref().take(count).collect())
            }
            (None, Some(err)) => Err(err.clone()),
            (None, None) => Err(IntakeError::Mismatch {
                submitted: count,
                answered: stored,
            }),
        };
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NotificationId;

    #[test]
    fn callers_of_a_cut_commit_hear_what_became_of_their_own_call() {
        let (replies, answers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        let callers = [2, 1, 2].into_iter().zip(replies).collect();
        let stored = (1..=3)
            .map(|id| Inserted::New(NotificationId(id)))
            .collect();
        let failed = IntakeError::Unavailable("disk gone".into());
        answer(callers, (stored, Some(failed)));

        let mut answers = answers.into_iter().map(|mut rx| rx.try_recv().unwrap());
        let ids = |answer: Result<Vec<Inserted>, IntakeError>| -> Vec<i64> {
            answer
                .unwrap()
                .into_iter()
                .map(|inserted| match inserted {
                    Inserted::New(id) => id.0,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(ids(answers.next().unwrap()), [1, 2]);
        assert_eq!(ids(answers.next().unwrap()), [3]);
        assert!(matches!(
            answers.next().unwrap(),
            Err(IntakeError::Unavailable(_))
        ));
    }
}
