//! A simulated customer system: a real HTTP server on 127.0.0.1 with a capacity model, as the
//! customer systems behave in the incidents floodgate was built for. `workers` requests are served at once,
//! each taking the service time; up to `queue` more wait their turn; anything beyond is answered
//! at once with 503, or 429 and `Retry-After`. Capacity changes on the scenario's schedule; a
//! `dead` system accepts connections and never answers.
//!
//! Every request's Standard Webhooks signature is checked against the customer's secret (a bad
//! one is answered 401 and counted), and every served notification is recorded in [`Arrivals`]:
//! once per id, with its end-to-end latency per lane and its arrival second.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use floodgate::sink::signature;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::spec::{Capacity, Group, Overload};
use crate::arrivals::Arrivals;
use crate::receiver::HttpServer;

/// How a system answered, counted over the whole run.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    /// Every request that reached the handler.
    pub(crate) requests: AtomicU64,
    /// Served with 200.
    pub(crate) ok: AtomicU64,
    /// Answered 503 or 429 because workers and queue were full.
    pub(crate) overloaded: AtomicU64,
    /// Given up by the sender before the answer: floodgate's timeout, at a dead or slow system.
    pub(crate) abandoned: AtomicU64,
    /// Answered 401: the signature did not verify.
    pub(crate) bad_signature: AtomicU64,
}

/// A snapshot of [`Responses`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ResponseCounts {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) overloaded: u64,
    pub(crate) abandoned: u64,
    pub(crate) bad_signature: u64,
}

impl Responses {
    pub(crate) fn counts(&self) -> ResponseCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ResponseCounts {
            requests: get(&self.requests),
            ok: get(&self.ok),
            overloaded: get(&self.overloaded),
            abandoned: get(&self.abandoned),
            bad_signature: get(&self.bad_signature),
        }
    }
}

impl std::ops::AddAssign for ResponseCounts {
    fn add_assign(&mut self, other: Self) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.overloaded += other.overloaded;
        self.abandoned += other.abandoned;
        self.bad_signature += other.bad_signature;
    }
}

/// What every request handler of one system shares.
struct Shared {
    secret: String,
    /// The capacity in force; replaced by the schedule.
    capacity: Mutex<Capacity>,
    /// One permit per worker; the schedule adds or retires permits.
    workers: Arc<Semaphore>,
    /// Requests being served or waiting for a worker.
    inside: AtomicUsize,
    arrivals: Arc<Arrivals>,
    responses: Arc<Responses>,
}

impl Shared {
    fn capacity(&self) -> Capacity {
        self.capacity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A running simulated customer system.
pub(crate) struct System {
    server: HttpServer,
    secret: String,
    arrivals: Arc<Arrivals>,
    responses: Arc<Responses>,
    shared: Arc<Shared>,
    /// The capacity changes still to come, until [`System::begin`] follows them.
    changes: Vec<(Duration, Capacity)>,
    schedule: Option<JoinHandle<()>>,
}

impl System {
    /// Starts a system modelled on `group` at its starting capacity, recording into `arrivals`.
    pub(crate) async fn start(group: &Group, arrivals: Arc<Arrivals>) -> Result<Self> {
        let capacity = group.capacity();
        let secret = signature::generate_secret();
        let responses = Arc::new(Responses::default());
        let shared = Arc::new(Shared {
            secret: secret.clone(),
            workers: Arc::new(Semaphore::new(capacity.workers)),
            capacity: Mutex::new(capacity),
            inside: AtomicUsize::new(0),
            arrivals: arrivals.clone(),
            responses: responses.clone(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = HttpServer::start(app).await?;
        Ok(Self {
            server,
            secret,
            arrivals,
            responses,
            shared,
            changes: group.schedule().into_iter().skip(1).collect(),
            schedule: None,
        })
    }

    /// Follows the capacity schedule, its times counted from `start` (the load's start).
    pub(crate) fn begin(&mut self, start: Instant) {
        let changes = std::mem::take(&mut self.changes);
        let shared = self.shared.clone();
        self.schedule = Some(tokio::spawn(follow_schedule(shared, changes, start)));
    }

    /// The URL to register as the customer's webhook.
    pub(crate) fn url(&self) -> &str {
        self.server.url()
    }

    /// The signing secret to register, so signatures can be checked here.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    pub(crate) fn arrivals(&self) -> &Arc<Arrivals> {
        &self.arrivals
    }

    pub(crate) fn responses(&self) -> ResponseCounts {
        self.responses.counts()
    }

    /// Stops serving (hung requests of a dead system are cut off after a short grace).
    pub(crate) async fn stop(self) -> Result<()> {
        if let Some(schedule) = self.schedule {
            schedule.abort();
        }
        self.server.stop().await
    }
}

/// Applies each capacity change at its time. Fewer workers take effect as requests finish: the
/// retired permits are acquired (waiting for busy workers) and forgotten.
async fn follow_schedule(shared: Arc<Shared>, changes: Vec<(Duration, Capacity)>, start: Instant) {
    for (at, capacity) in changes {
        tokio::time::sleep_until(start + at).await;
        let before = std::mem::replace(
            &mut *shared
                .capacity
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            capacity.clone(),
        );
        if capacity.workers > before.workers {
            shared
                .workers
                .add_permits(capacity.workers - before.workers);
        } else if capacity.workers < before.workers {
            let retire = u32::try_from(before.workers - capacity.workers).unwrap_or(u32::MAX);
            let workers = shared.workers.clone();
            tokio::spawn(async move {
                if let Ok(permits) = workers.acquire_many_owned(retire).await {
                    permits.forget();
                }
            });
        }
    }
}

/// Counts a request as abandoned if its handler is dropped before answering: the sender hung up.
struct Answer<'a> {
    responses: &'a Responses,
    answered: bool,
}

impl Answer<'_> {
    fn with(&mut self, counter: impl Fn(&Responses) -> &AtomicU64, response: Response) -> Response {
        self.answered = true;
        counter(self.responses).fetch_add(1, Ordering::Relaxed);
        response
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.responses.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Leaves the system (workers and queue) when the request ends, however it ends.
struct Inside<'a>(&'a AtomicUsize);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.responses.requests.fetch_add(1, Ordering::Relaxed);
    let mut answer = Answer {
        responses: &shared.responses,
        answered: false,
    };
    let capacity = shared.capacity();
    if capacity.dead {
        return std::future::pending().await;
    }
    let Some(id) = verified_id(&shared.secret, &headers, &body) else {
        return answer.with(
            |r| &r.bad_signature,
            StatusCode::UNAUTHORIZED.into_response(),
        );
    };
    let before = shared.inside.fetch_add(1, Ordering::Relaxed);
    let _inside = Inside(&shared.inside);
    if before >= capacity.workers + capacity.queue() {
        return answer.with(|r| &r.overloaded, overload_response(&capacity));
    }
    let Ok(_worker) = shared.workers.acquire().await else {
        return answer.with(|r| &r.overloaded, overload_response(&capacity));
    };
    tokio::time::sleep(service_time(&capacity)).await;
    shared.arrivals.record(Some(id), &body);
    answer.with(|r| &r.ok, StatusCode::OK.into_response())
}

/// The notification id, if the request carries a valid Standard Webhooks signature.
fn verified_id<'h>(secret: &str, headers: &'h HeaderMap, body: &[u8]) -> Option<&'h str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?.parse::<i64>().ok()?;
    let signature_header = header("webhook-signature")?;
    signature::verify(secret, id, timestamp, body, signature_header).then_some(id)
}

fn overload_response(capacity: &Capacity) -> Response {
    match capacity.overload {
        Overload::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Overload::TooManyRequests => {
            let seconds = capacity.retry_after.0.as_secs_f64().round().max(1.0) as u64;
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
    }
}

/// One request's service time: uniform in `service_time ± jitter`.
fn service_time(capacity: &Capacity) -> Duration {
    let (base, jitter) = (capacity.service_time.0, capacity.jitter.0);
    if jitter.is_zero() {
        return base;
    }
    let offset = rand::rng().random_range(-1.0..=1.0) * jitter.as_secs_f64();
    Duration::from_secs_f64((base.as_secs_f64() + offset).max(0.0))
}
