//! One caller of the `intake` experiment: what it sends, how it paces itself, and what it
//! records. Each caller keeps its own tally, merged at the end, so callers share nothing hot
//! but three counters for the progress line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use floodgate::api::proto;
use floodgate::api::proto::dispatcher_client::DispatcherClient;
use floodgate::api::proto::submit_result::Outcome;
use hdrhistogram::Histogram;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Mode;
use crate::client::AuthedChannel;

/// Recipients cycled through, so the inbox index sees realistic fan-out rather than one hot key.
const RECIPIENTS: u64 = 10_000;

/// Caller `i`'s open-loop ticker: `rate` calls/s in total over `callers` callers, the callers'
/// phases staggered evenly so the total is smooth. `Burst`: a caller that fell behind catches up
/// at once instead of dropping its missed sends, so slow answers never lower the offered rate.
pub(super) fn schedule(start: Instant, rate: f64, callers: usize, i: usize) -> Result<Interval> {
    let period = Duration::try_from_secs_f64(callers as f64 / rate)
        .ok()
        .filter(|period| !period.is_zero())
        .with_context(|| format!("--rate {rate} cannot be spread over {callers} callers"))?;
    let phase = period.mul_f64(i as f64 / callers as f64);
    let mut ticker = tokio::time::interval_at(start + phase, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    Ok(ticker)
}

/// A JSON object of `bytes` bytes (or the smallest such object, if `bytes` is smaller).
fn json_payload(bytes: usize) -> Vec<u8> {
    const HEAD: &str = r#"{"loadtest":true,"pad":""#;
    const TAIL: &str = r#""}"#;
    let pad = bytes.saturating_sub(HEAD.len() + TAIL.len());
    format!("{HEAD}{}{TAIL}", "x".repeat(pad)).into_bytes()
}

/// When counting happens: calls completed in `from..until` count; none start after `until`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) from: Instant,
    pub(super) until: Instant,
}

/// What every call sends. Notification `n` (numbered across all callers) goes to customer
/// `n mod customers`, with the key `<run>-<n>`: unique across callers and across runs.
pub(super) struct Plan {
    mode: Mode,
    batch_size: usize,
    /// Makes the keys unique across runs against the same database (`--target`).
    run_id: String,
    customers: Vec<String>,
    payload: Vec<u8>,
    /// The number of the next notification.
    next: AtomicU64,
}

impl Plan {
    /// A plan for `customers`, with `batch_size` ignored in submit mode.
    pub(super) fn new(
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
            payload: json_payload(payload_bytes),
            next: AtomicU64::new(0),
        }
    }

    /// The payload's actual size (never below the JSON skeleton).
    pub(super) fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    pub(super) fn batch_size(&self) -> usize {
        match self.mode {
            Mode::Submit => 1,
            Mode::Batch => self.batch_size,
        }
    }

    fn request(&self, n: u64) -> proto::SubmitRequest {
        let customer = (n % self.customers.len() as u64) as usize;
        proto::SubmitRequest {
            customer_id: self.customers[customer].clone(),
            idempotency_key: format!("{}-{n}", self.run_id),
            recipient: format!("user-{}", n % RECIPIENTS),
            lane: proto::Lane::Transactional as i32,
            payload: self.payload.clone(),
            send_at: None,
            expires_at: None,
        }
    }

    /// Makes one call and sorts out its answer.
    async fn call(&self, client: &mut DispatcherClient<AuthedChannel>) -> CallResult {
        let size = self.batch_size() as u64;
        let first = self.next.fetch_add(size, Ordering::Relaxed);
        match self.mode {
            Mode::Submit => match client.submit(self.request(first)).await {
                Ok(answer) if answer.get_ref().duplicate => {
                    CallResult::answered(0, vec!["duplicate".into()])
                }
                Ok(_) => CallResult::answered(1, Vec::new()),
                Err(status) => CallResult::failed(status.code()),
            },
            Mode::Batch => {
                let requests = (first..first + size).map(|n| self.request(n)).collect();
                let answer = match client
                    .submit_batch(proto::SubmitBatchRequest { requests })
                    .await
                {
                    Ok(answer) => answer.into_inner(),
                    Err(status) => return CallResult::failed(status.code()),
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
        }
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
pub(super) struct Live {
    pub(super) accepted: AtomicU64,
    pub(super) errors: AtomicU64,
    /// The slowest call since the last progress line, in µs: shows stalls as they happen.
    pub(super) max_latency_us: AtomicU64,
}

/// One caller's measurements inside the window; merged at the end, so callers never contend on a
/// shared histogram.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) calls: u64,
    pub(super) accepted: u64,
    pub(super) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn new(empty: Histogram<u64>) -> Self {
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

    pub(super) fn merge(&mut self, other: Tally) -> Result<()> {
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

/// One caller: a loop of calls, one at a time, until the window closes.
pub(super) async fn run(
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
        let result = plan.call(&mut client).await;
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

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_are_json() {
        for size in [0, 40, 200, 4096] {
            let payload = json_payload(size);
            assert_eq!(payload.len(), size.max(json_payload(0).len()));
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap();
        }
    }

    #[test]
    fn notifications_go_round_robin_with_unique_keys() {
        let plan = Plan::new(Mode::Batch, 3, vec!["a".into(), "b".into()], 50);
        let requests: Vec<_> = (0..5).map(|n| plan.request(n)).collect();
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
