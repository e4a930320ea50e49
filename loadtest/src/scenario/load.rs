//! The scenario's load: open-loop arrivals per customer and lane, at the scenario's rates
//! (multiplied during bursts), submitted by a pool of callers; and bulk campaigns submitted all
//! at once by callers of their own, as a marketing service would.
//!
//! Open loop: a generator creates each notification at its scheduled time whatever floodgate is
//! doing, and stamps it with that time, so a slow answer delays the stamp's measurement instead
//! of hiding it (no coordinated omission). Callers take whatever has arrived, up to a batch,
//! without waiting to fill one. Each call goes to the next running node (see [`Entrances`]). A
//! call that fails as a whole (floodgate down, as in the `crash` scenario, or its node killed) is
//! sent again with the same idempotency keys until it is answered — a
//! lost answer to a committed call then comes back as `duplicate` with the original id, so every
//! stored notification ends up in the [`Ledger`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Result;
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::submit_result::Outcome;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::entrances::Entrances;
use super::spec::{Scenario, SubmitWith};
use crate::caller::stamped_payload;
use crate::report;

/// How often the generator creates the notifications that came due.
const TICK: Duration = Duration::from_millis(5);
/// Size of every payload, stamp included.
const PAYLOAD_BYTES: usize = 200;
/// Recipients cycled through per customer.
const RECIPIENTS: u64 = 1_000;
/// Notifications per campaign SubmitBatch call (floodgate's maximum).
const CAMPAIGN_BATCH: usize = 1000;
/// Pause before a failed call is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(200);

/// One notification to submit.
#[derive(Debug, Clone, Copy)]
struct Item {
    customer: usize,
    lane: proto::Lane,
    /// Unique within the run; makes the idempotency key.
    n: u64,
    /// When it was due: its stamp, and where its submit latency counts from.
    scheduled: Instant,
}

/// One customer of the load: its id and what it is offered.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) id: String,
    /// Transactional and bulk notifications/s.
    pub(crate) rates: [f64; 2],
    /// A campaign: when, and how many bulk notifications.
    pub(crate) campaign: Option<(Duration, u64)>,
}

/// Everything the load did, per customer and in total.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// The ids floodgate returned, per customer: what it promised to deliver.
    accepted: Vec<Mutex<Vec<Box<str>>>>,
    /// Notifications created for each customer.
    offered: Vec<AtomicU64>,
    /// Accepted so far, all customers (for the progress line).
    accepted_total: AtomicU64,
    /// Items a resubmitted call found already stored (their answer had been lost).
    pub(crate) recovered: AtomicU64,
    /// Whole calls that failed and were sent again.
    pub(crate) resent_calls: AtomicU64,
    /// Items rejected, by gRPC code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Submit latency per item, from its scheduled time to the answer, in µs.
    submit_latency: Mutex<Histogram<u64>>,
}

impl Ledger {
    /// An empty ledger for `customers` customers.
    pub(crate) fn shared(customers: usize) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            accepted: (0..customers).map(|_| Mutex::new(Vec::new())).collect(),
            offered: (0..customers).map(|_| AtomicU64::new(0)).collect(),
            accepted_total: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            resent_calls: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            submit_latency: Mutex::new(report::new_histogram()?),
        }))
    }

    /// The ids accepted for customer `i`.
    pub(crate) fn accepted(&self, i: usize) -> Vec<Box<str>> {
        lock(&self.accepted[i]).clone()
    }

    pub(crate) fn accepted_count(&self, i: usize) -> u64 {
        lock(&self.accepted[i]).len() as u64
    }

    pub(crate) fn accepted_total(&self) -> u64 {
        self.accepted_total.load(Ordering::Relaxed)
    }

    pub(crate) fn offered(&self, i: usize) -> u64 {
        self.offered[i].load(Ordering::Relaxed)
    }

    pub(crate) fn offered_total(&self) -> u64 {
        self.offered.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    pub(crate) fn error_total(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    pub(crate) fn submit_latency(&self) -> Histogram<u64> {
        lock(&self.submit_latency).clone()
    }

    /// Books one call's answer.
    fn book(&self, items: &[Item], answer: &proto::SubmitBatchResponse, answered: Instant) {
        let mut latency = lock(&self.submit_latency);
        for (item, result) in items.iter().zip(&answer.results) {
            match &result.outcome {
                Some(Outcome::Accepted(accepted)) => {
                    if accepted.duplicate {
                        self.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    lock(&self.accepted[item.customer])
                        .push(accepted.notification_id.as_str().into());
                    self.accepted_total.fetch_add(1, Ordering::Relaxed);
                    let us = answered
                        .saturating_duration_since(item.scheduled)
                        .as_micros();
                    latency.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                }
                Some(Outcome::Error(error)) => {
                    let code = format!("{:?}", tonic::Code::from(error.code));
                    *lock(&self.errors).entry(code).or_default() += 1;
                }
                None => *lock(&self.errors).entry("no outcome".into()).or_default() += 1,
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the whole load from `start` until `start + scenario.duration`; returns once every
/// submitted call is answered (or `give_up` passes for calls that keep failing).
pub(crate) async fn run(
    scenario: &Scenario,
    targets: Arc<Vec<Target>>,
    entrances: Entrances,
    epoch: Instant,
    start: Instant,
    give_up: Instant,
    ledger: Arc<Ledger>,
) -> Arc<Ledger> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let context = Arc::new(Context {
        mode: scenario.submit,
        targets: targets.clone(),
        run_id,
        epoch,
        give_up,
        ledger: ledger.clone(),
        entrances,
    });
    let (sender, receiver) = mpsc::unbounded_channel();
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let batch = match scenario.submit {
        SubmitWith::Batch => scenario.batch_size,
        SubmitWith::Submit => 1,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..scenario.callers {
        tasks.spawn(caller(receiver.clone(), batch, context.clone()));
    }
    for (customer, target) in targets.iter().enumerate() {
        if let Some((at, count)) = target.campaign {
            tasks.spawn(campaign(customer, start + at, count, context.clone()));
        }
    }
    generate(scenario, &targets, &ledger, start, sender).await;
    while tasks.join_next().await.is_some() {}
    ledger
}

/// What every caller needs besides its client.
struct Context {
    mode: SubmitWith,
    targets: Arc<Vec<Target>>,
    run_id: String,
    epoch: Instant,
    give_up: Instant,
    ledger: Arc<Ledger>,
    entrances: Entrances,
}

impl Context {
    fn request(&self, item: &Item) -> proto::SubmitRequest {
        proto::SubmitRequest {
            customer_id: self.targets[item.customer].id.clone(),
            idempotency_key: format!("{}-{}", self.run_id, item.n),
            recipient: format!("user-{}", item.n % RECIPIENTS),
            lane: item.lane as i32,
            payload: stamped_payload(self.epoch, item.scheduled, PAYLOAD_BYTES),
            send_at: None,
            expires_at: None,
            ..Default::default()
        }
    }

    /// Submits `items` in one call — Submit for a single item in submit mode, SubmitBatch
    /// otherwise — to the next node, sending it again (to the node after) while it fails as a
    /// whole.
    async fn submit(&self, items: &[Item]) {
        let requests: Vec<_> = items.iter().map(|item| self.request(item)).collect();
        loop {
            match self.call(&requests).await {
                Ok(answer) => {
                    self.ledger.book(items, &answer, Instant::now());
                    return;
                }
                Err(status) if Instant::now() >= self.give_up => {
                    let code = format!("call {:?}", status.code());
                    *lock(&self.ledger.errors).entry(code).or_default() += items.len() as u64;
                    return;
                }
                Err(_) => {
                    self.ledger.resent_calls.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RESEND_AFTER).await;
                }
            }
        }
    }
}

impl Context {
    /// One call, its answer as a batch answer either way. A single Submit's item-level
    /// rejection (a bad item, not a failed call) becomes that item's error.
    async fn call(
        &self,
        requests: &[proto::SubmitRequest],
    ) -> Result<proto::SubmitBatchResponse, tonic::Status> {
        let channel = self
            .entrances
            .next()
            .ok_or_else(|| tonic::Status::unavailable("no floodgate node is running"))?;
        let mut client = DispatcherClient::new(channel);
        let outcome = match (self.mode, requests) {
            (SubmitWith::Submit, [request]) => match client.submit(request.clone()).await {
                Ok(answer) => Outcome::Accepted(answer.into_inner()),
                Err(status) if is_item_error(status.code()) => Outcome::Error(proto::ItemError {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }),
                Err(status) => return Err(status),
            },
            _ => {
                let request = proto::SubmitBatchRequest {
                    requests: requests.to_vec(),
                };
                return Ok(client.submit_batch(request).await?.into_inner());
            }
        };
        Ok(proto::SubmitBatchResponse {
            results: vec![proto::SubmitResult {
                outcome: Some(outcome),
            }],
        })
    }
}

/// Codes that reject the notification itself: sending it again cannot help.
fn is_item_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::AlreadyExists
    )
}

/// Creates every notification at its time until the load phase ends, then closes the queue.
async fn generate(
    scenario: &Scenario,
    targets: &[Target],
    ledger: &Ledger,
    start: Instant,
    queue: mpsc::UnboundedSender<Item>,
) {
    let end = start + scenario.duration.0;
    let lanes = [proto::Lane::Transactional, proto::Lane::Bulk];
    let mut credit = vec![[0.0f64; 2]; targets.len()];
    let mut n: u64 = 0;
    tokio::time::sleep_until(start).await;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = start;
    loop {
        let now = ticker.tick().await.min(end);
        let factor = scenario.burst_factor(now - start);
        let elapsed = (now - last).as_secs_f64();
        last = now;
        for (customer, target) in targets.iter().enumerate() {
            for (lane, rate) in target.rates.iter().enumerate() {
                let due = &mut credit[customer][lane];
                *due += rate * factor * elapsed;
                while *due >= 1.0 {
                    *due -= 1.0;
                    ledger.offered[customer].fetch_add(1, Ordering::Relaxed);
                    let item = Item {
                        customer,
                        lane: lanes[lane],
                        n,
                        scheduled: now,
                    };
                    n += 1;
                    if queue.send(item).is_err() {
                        return;
                    }
                }
            }
        }
        if now >= end {
            return;
        }
    }
}

/// One caller: takes what has arrived, up to `batch` items, and submits it; until the queue is
/// closed and empty.
async fn caller(
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>>,
    batch: usize,
    context: Arc<Context>,
) {
    let mut items = Vec::with_capacity(batch);
    loop {
        items.clear();
        if queue.lock().await.recv_many(&mut items, batch).await == 0 {
            return;
        }
        context.submit(&items).await;
    }
}

/// A campaign: `count` bulk notifications for one customer, submitted from `at` in calls of
/// [`CAMPAIGN_BATCH`], one after another, each stamped with its own send time.
async fn campaign(customer: usize, at: Instant, count: u64, context: Arc<Context>) {
    tokio::time::sleep_until(at).await;
    // Numbered apart from the generator's notifications.
    let first = (u64::MAX / 2) + customer as u64 * (1 << 32);
    let mut sent = 0;
    while sent < count {
        let now = Instant::now();
        let size = (count - sent).min(CAMPAIGN_BATCH as u64);
        let items: Vec<Item> = (sent..sent + size)
            .map(|i| Item {
                customer,
                lane: proto::Lane::Bulk,
                n: first + i,
                scheduled: now,
            })
            .collect();
        context.ledger.offered[customer].fetch_add(size, Ordering::Relaxed);
        context.submit(&items).await;
        sent += size;
    }
}
