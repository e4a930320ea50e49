//! The callers every experiment runs: what a call sends, how a caller paces itself, and what it
//! records. Each caller keeps its own tally, merged at the end, so callers share nothing hot
//! but a few counters for the progress line.
//!
//! Callers are independent loops, each with one call in flight. Closed loop (no schedule), a
//! caller sends its next call as soon as the previous one is answered: that finds the ceiling.
//! Open loop ([`schedule`]), each caller follows a fixed schedule and latency is measured from the
//! *scheduled* send time, so a slow answer cannot hide the calls it delayed (no coordinated
//! omission): that gives honest percentiles below the ceiling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::submit_result::Outcome;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::client::AuthedChannel;

/// Which RPC carries the notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// One notification per `Dispatcher.Submit` call.
    Submit,
    /// `--batch-size` notifications per `Dispatcher.SubmitBatch` call.
    Batch,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Submit => "submit",
            Mode::Batch => "batch",
        }
    }
}

/// Parses a `--rate`: a finite number above zero.
pub(crate) fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a positive rate")),
    }
}

/// Callers sharing a probe's schedule (unary Submits timed beside a load). One would be a queue
/// of its own: once a Submit took longer than the schedule's period, every later one would be
/// measured late by the sum.
pub(crate) const PROBE_CALLERS: usize = 16;

/// Recipients cycled through, so the inbox index sees realistic fan-out rather than one hot key.
const RECIPIENTS: u64 = 10_000;

/// Caller `i`'s open-loop ticker: `rate` calls/s in total over `callers` callers, the callers'
/// phases staggered evenly so the total is smooth. `Burst`: a caller that fell behind catches up
/// at once instead of dropping its missed sends, so slow answers never lower the offered rate.
pub(crate) fn schedule(start: Instant, rate: f64, callers: usize, i: usize) -> Result<Interval> {
    let period = Duration::try_from_secs_f64(callers as f64 / rate)
        .ok()
        .filter(|period| !period.is_zero())
        .with_context(|| format!("--rate {rate} cannot be spread over {callers} callers"))?;
    let phase = period.mul_f64(i as f64 / callers as f64);
    let mut ticker = tokio::time::interval_at(start + phase, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    Ok(ticker)
}

/// The JSON object every payload is: `head`, then padding up to `bytes` bytes (or none, if the
/// object is already that long).
fn json_payload(head: &str, bytes: usize) -> Vec<u8> {
    const PAD: &str = r#""pad":""#;
    const TAIL: &str = r#""}"#;
    let pad = bytes.saturating_sub(head.len() + PAD.len() + TAIL.len());
    format!("{head}{PAD}{}{TAIL}", "x".repeat(pad)).into_bytes()
}

/// The fixed start of an unstamped payload.
const PLAIN_HEAD: &str = r#"{"loadtest":true,"#;

/// The payload of a stamped notification: when it was (due to be) sent, in µs since `epoch`, as
/// `{"t_us":…}`, so a receiver can take the end-to-end latency from the webhook alone.
pub(crate) fn stamped_payload(epoch: Instant, sent: Instant, bytes: usize) -> Vec<u8> {
    let t_us = micros(sent.saturating_duration_since(epoch));
    json_payload(&format!(r#"{{"t_us":{t_us},"#), bytes)
}

/// When counting happens: calls completed in `from..until` count; none start after `until`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: Instant,
    pub(crate) until: Instant,
}

/// Counts what `counter` gains inside the window, in the background.
pub(crate) fn count_between(counter: Arc<AtomicU64>, window: Window) -> JoinHandle<u64> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.from).await;
        let before = counter.load(Ordering::Relaxed);
        tokio::time::sleep_until(window.until).await;
        counter.load(Ordering::Relaxed) - before
    })
}

/// What goes into each payload.
enum Payload {
    /// The same bytes every time: cheapest, for measuring intake alone.
    Fixed(Vec<u8>),
    /// Each payload carries its send time (see [`stamped_payload`]).
    Stamped { epoch: Instant, bytes: usize },
}

/// What every call sends. Notification `n` (numbered across all callers) goes to customer
/// `n mod customers`, with the key `<run>-<n>`: unique across callers and across runs.
pub(crate) struct Plan {
    mode: Mode,
    batch_size: usize,
    /// Makes the keys unique across runs against the same database (`--target`).
    run_id: String,
    customers: Vec<String>,
    payload: Payload,
    /// Notifications to send in all; `None` sends until the window closes.
    total: Option<u64>,
    /// When every notification falls due; `None` for at once.
    send_at: Option<prost_types::Timestamp>,
    /// The number of the next notification.
    next: AtomicU64,
}

impl Plan {
    /// A plan for `customers`, with `batch_size` ignored in submit mode.
    pub(crate) fn new(
        mode: Mode,
        batch_size: usize,
        customers: Vec<String>,
        payload_bytes: usize,
    ) -> Self {
        Self {
            mode,
            batch_size,
            run_id: format!("{:08x}", rand::random::<u32>()),
            customers,
            payload: Payload::Fixed(json_payload(PLAIN_HEAD, payload_bytes)),
            total: None,
            send_at: None,
            next: AtomicU64::new(0),
        }
    }

    /// Stamps every payload with its send time, in µs since `epoch` (see [`stamped_payload`]);
    /// for runs that measure latency up to the webhook's arrival.
    pub(crate) fn stamped(mut self, epoch: Instant) -> Self {
        let bytes = self.payload_bytes();
        self.payload = Payload::Stamped { epoch, bytes };
        self
    }

    /// Stops after `total` notifications (the last call may carry fewer than a batch); for runs
    /// that fill the store with a fixed amount rather than load it for a time.
    pub(crate) fn limited(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    /// Schedules every notification for `at` (`send_at`), so the store holds them all until
    /// then; for runs that build a backlog which then falls due at once.
    pub(crate) fn due_at(mut self, at: std::time::SystemTime) -> Self {
        self.send_at = Some(prost_types::Timestamp::from(at));
        self
    }

    /// The payload's size (never below the JSON skeleton).
    pub(crate) fn payload_bytes(&self) -> usize {
        match &self.payload {
            Payload::Fixed(payload) => payload.len(),
            Payload::Stamped { bytes, .. } => *bytes,
        }
    }

    pub(crate) fn batch_size(&self) -> usize {
        match self.mode {
            Mode::Submit => 1,
            Mode::Batch => self.batch_size,
        }
    }

    /// Notifications handed to calls so far: the offered load, as sent.
    pub(crate) fn issued(&self) -> u64 {
        let next = self.next.load(Ordering::Relaxed);
        self.total.map_or(next, |total| next.min(total))
    }

    fn request(&self, n: u64, sent: Instant) -> proto::SubmitRequest {
        let customer = (n % self.customers.len() as u64) as usize;
        let payload = match &self.payload {
            Payload::Fixed(payload) => payload.clone(),
            Payload::Stamped { epoch, bytes } => stamped_payload(*epoch, sent, *bytes),
        };
        proto::SubmitRequest {
            customer_id: self.customers[customer].clone(),
            idempotency_key: format!("{}-{n}", self.run_id),
            recipient: format!("user-{}", n % RECIPIENTS),
            lane: proto::Lane::Transactional as i32,
            payload,
            send_at: self.send_at,
            expires_at: None,
            ..Default::default()
        }
    }

    /// The numbers of the next call's notifications, or `None` once the total is sent.
    fn take(&self) -> Option<std::ops::Range<u64>> {
        let size = self.batch_size() as u64;
        let first = self.next.fetch_add(size, Ordering::Relaxed);
        match self.total {
            Some(total) if first >= total => None,
            Some(total) => Some(first..(first + size).min(total)),
            None => Some(first..first + size),
        }
    }

    /// Makes one call, due at `sent`, and sorts out its answer; `None` once the total is sent.
    async fn call(
        &self,
        client: &mut DispatcherClient<AuthedChannel>,
        sent: Instant,
    ) -> Option<CallResult> {
        let numbers = self.take()?;
        let result = match self.mode {
            Mode::Submit => match client.submit(self.request(numbers.start, sent)).await {
                Ok(answer) if answer.get_ref().duplicate => {
                    CallResult::answered(0, vec!["duplicate".into()])
                }
                Ok(_) => CallResult::answered(1, Vec::new()),
                Err(status) => CallResult::failed(status.code()),
            },
            Mode::Batch => {
                let size = numbers.end - numbers.start;
                let requests = numbers.map(|n| self.request(n, sent)).collect();
                let answer = match client
                    .submit_batch(proto::SubmitBatchRequest { requests })
                    .await
                {
                    Ok(answer) => answer.into_inner(),
                    Err(status) => return Some(CallResult::failed(status.code())),
                };
                let mut accepted = 0;
                let mut errors = Vec::new();
                if answer.results.len() as u64 != size {
                    errors.push(format!("{} results for {size} items", answer.results.len()));
                }
                for result in answer.results {
                    match result.outcome {
                        Some(Outcome::Accepted(a)) if a.duplicate => {
                            errors.push("duplicate".into())
                        }
                        Some(Outcome::Accepted(_)) => accepted += 1,
                        Some(Outcome::Error(e)) => {
                            errors.push(format!("item {:?}", tonic::Code::from(e.code)));
                        }
                        None => errors.push("item without outcome".into()),
                    }
                }
                CallResult::answered(accepted, errors)
            }
        };
        Some(result)
    }
}

/// One call's result.
struct CallResult {
    /// The call itself succeeded (its latency is recorded).
    answered: bool,
    /// Notifications newly stored.
    accepted: u64,
    /// Everything that went wrong, by kind; usually empty (and then never allocated).
    errors: Vec<String>,
}

impl CallResult {
    fn answered(accepted: u64, errors: Vec<String>) -> Self {
        Self {
            answered: true,
            accepted,
            errors,
        }
    }

    fn failed(code: tonic::Code) -> Self {
        Self {
            answered: false,
            accepted: 0,
            errors: vec![format!("{code:?}")],
        }
    }
}

/// Running totals for the progress line, warmup included; shared by every caller.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) accepted: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// The slowest call since the last progress line, in µs: shows stalls as they happen.
    pub(crate) max_latency_us: AtomicU64,
}

/// One caller's measurements inside the window; merged at the end, so callers never contend on a
/// shared histogram.
pub(crate) struct Tally {
    pub(crate) latency: Histogram<u64>,
    pub(crate) calls: u64,
    pub(crate) accepted: u64,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new(empty: Histogram<u64>) -> Self {
        Self {
            latency: empty,
            calls: 0,
            accepted: 0,
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, result: CallResult, latency: Duration) {
        self.calls += 1;
        self.accepted += result.accepted;
        if result.answered {
            self.latency.saturating_record(micros(latency).max(1));
        }
        for error in result.errors {
            *self.errors.entry(error).or_default() += 1;
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("cannot merge latency histograms")?;
        self.calls += other.calls;
        self.accepted += other.accepted;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
        Ok(())
    }
}

/// One caller: a loop of calls, one at a time, until the window closes or the plan's total is
/// sent.
pub(crate) async fn run(
    mut client: DispatcherClient<AuthedChannel>,
    plan: Arc<Plan>,
    live: Arc<Live>,
    window: Window,
    mut schedule: Option<Interval>,
    mut tally: Tally,
) -> Tally {
    loop {
        let scheduled = match schedule.as_mut() {
            Some(ticker) => ticker.tick().await,
            None => Instant::now(),
        };
        if Instant::now() >= window.until {
            return tally;
        }
        let Some(result) = plan.call(&mut client, scheduled).await else {
            return tally;
        };
        let done = Instant::now();
        let latency = done - scheduled;
        live.accepted.fetch_add(result.accepted, Ordering::Relaxed);
        live.errors
            .fetch_add(result.errors.len() as u64, Ordering::Relaxed);
        live.max_latency_us
            .fetch_max(micros(latency), Ordering::Relaxed);
        if done >= window.from && done < window.until {
            tally.record(result, latency);
        }
    }
}

/// An upper bound on [`fill`], only to bound a run against a stalled server (each stalled call
/// already fails after the client's call timeout).
const FILL_LIMIT: Duration = Duration::from_secs(3600);

/// What [`fill`] did.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Submitted {
    pub(crate) accepted: u64,
    pub(crate) secs: f64,
    /// Failed calls and rejected items.
    pub(crate) errors: u64,
}

/// Sends `plan` (limited to `total` notifications) closed loop from `callers` callers, as fast as
/// floodgate takes them, printing progress every second with `extra` appended (say, the
/// server's memory). For experiments that first fill the store with a fixed amount. Returns how
/// many were accepted; errors are reported and counted, not fatal.
pub(crate) async fn fill(
    channel: &AuthedChannel,
    plan: Arc<Plan>,
    callers: usize,
    total: u64,
    extra: impl Fn() -> Result<String>,
) -> Result<Submitted> {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let window = Window {
        from: start,
        until: start + FILL_LIMIT,
    };
    let empty = crate::report::new_histogram()?;
    let callers: Vec<_> = (0..callers)
        .map(|_| {
            tokio::spawn(run(
                DispatcherClient::new(channel.clone()),
                plan.clone(),
                live.clone(),
                window,
                None,
                Tally::new(empty.clone()),
            ))
        })
        .collect();
    let mut done = tokio::spawn(async move {
        let mut total = Tally::new(empty);
        for caller in callers {
            total.merge(caller.await.context("a caller panicked")?)?;
        }
        anyhow::Ok(total)
    });

    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    let tally = loop {
        tokio::select! {
            ended = &mut done => break ended.context("the submitting task panicked")??,
            now = ticker.tick() => {
                let accepted = live.accepted.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.1}s] submit  accepted {accepted:>9} / {total}  {:>7}/s  {}  errors {}",
                    (now - start).as_secs_f64(),
                    accepted - last,
                    extra()?,
                    live.errors.load(Ordering::Relaxed),
                );
                last = accepted;
            }
        }
    };
    let secs = start.elapsed().as_secs_f64();
    if !tally.errors.is_empty() {
        let errors: Vec<String> = tally
            .errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        eprintln!("warning: submit errors: {}", errors.join(", "));
    }
    eprintln!(
        "submitted: {} of {total} accepted in {secs:.1}s ({:.0}/s)",
        tally.accepted,
        tally.accepted as f64 / secs
    );
    Ok(Submitted {
        accepted: tally.accepted,
        secs,
        errors: tally.errors.values().sum(),
    })
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_are_json() {
        let smallest = json_payload(PLAIN_HEAD, 0).len();
        for size in [0, 40, 200, 4096] {
            let payload = json_payload(PLAIN_HEAD, size);
            assert_eq!(payload.len(), size.max(smallest));
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap();
        }
    }

    #[test]
    fn stamped_payloads_carry_the_send_time() {
        let epoch = Instant::now();
        let payload = stamped_payload(epoch, epoch + Duration::from_millis(1500), 200);
        assert_eq!(payload.len(), 200);
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["t_us"], 1_500_000);
    }

    #[test]
    fn notifications_go_round_robin_with_unique_keys() {
        let now = Instant::now();
        let plan = Plan::new(Mode::Batch, 3, vec!["a".into(), "b".into()], 50);
        let requests: Vec<_> = (0..5).map(|n| plan.request(n, now)).collect();
        let customers: Vec<_> = requests.iter().map(|r| r.customer_id.as_str()).collect();
        assert_eq!(customers, ["a", "b", "a", "b", "a"]);
        let keys: std::collections::HashSet<_> =
            requests.iter().map(|r| &r.idempotency_key).collect();
        assert_eq!(keys.len(), requests.len());
        assert_eq!(plan.batch_size(), 3);
        assert_eq!(
            Plan::new(Mode::Submit, 3, vec!["a".into()], 50).batch_size(),
            1
        );
    }

    #[test]
    fn a_limited_plan_stops_at_its_total() {
        let plan = Plan::new(Mode::Batch, 4, vec!["a".into()], 50).limited(10);
        assert_eq!(plan.take(), Some(0..4));
        assert_eq!(plan.take(), Some(4..8));
        assert_eq!(plan.take(), Some(8..10));
        assert_eq!(plan.take(), None);
        assert_eq!(plan.issued(), 10);
    }

    #[tokio::test]
    async fn the_schedule_spreads_the_rate_over_the_callers() {
        // 1,000 calls/s over 4 callers: each calls every 4 ms.
        let ticker = schedule(Instant::now(), 1000.0, 4, 1).unwrap();
        assert_eq!(ticker.period(), Duration::from_millis(4));
        assert_eq!(ticker.missed_tick_behavior(), MissedTickBehavior::Burst);
        assert!(schedule(Instant::now(), f64::MAX, 4, 0).is_err());
        assert!(schedule(Instant::now(), f64::MIN_POSITIVE, 4, 0).is_err());
    }
}
