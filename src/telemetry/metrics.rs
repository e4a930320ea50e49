//! What floodgate counts for Prometheus, and the `/metrics` page. Every metric name is defined
//! here, once.
//!
//! Three kinds of figures:
//! - **recorded as they happen**: intake (accepted, duplicates, rejections by gRPC code, submit
//!   latency, group-commit size), store query latency by operation, and per customer the
//!   delivery attempts by lane and result, RTT and tier changes. Per-customer counters live in
//!   this registry, not in the actor, so they survive an actor's idle stop or restart and
//!   Prometheus sees one monotonic series;
//! - the retention job's rows archived and purged, and whether a pass is running;
//! - **read at scrape time**: each running actor's controller state (limit, pacing rate, tier,
//!   circuit, in flight) and the outcome queue's depth, handed to [`Metrics::render`] by the
//!   caller;
//! - **read from the store at scrape time**: the backlog per customer and lane.
//!
//! Label cardinality is bounded: customer ids, lanes, results, tiers, gRPC codes and store
//! operations. Never notification ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::cluster::{ClusterCounters, ClusterView};
use super::customer_stats::CustomerStats;
pub use super::customers::{AttemptResult, CustomerCounters};
use super::customers::{render_actors, render_counters};
use super::exposition::{Exposition, Kind};
pub use super::histogram::Histogram;
use super::histogram::{COMMIT_ROW_BUCKETS, LATENCY_BUCKETS};
pub use super::retention::RetentionCounters;

/// The store operations whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// A group commit of new notifications.
    Insert,
    /// A customer actor claiming its next window.
    Claim,
    /// Writing a batch of delivery outcomes.
    Outcomes,
    /// The periodic sweep for due work and expired leases.
    Sweep,
}

impl StoreOp {
    const ALL: [StoreOp; 4] = [Self::Insert, Self::Claim, Self::Outcomes, Self::Sweep];

    fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Claim => "claim",
            Self::Outcomes => "outcomes",
            Self::Sweep => "sweep",
        }
    }
}

/// Which RPC a submit latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRpc {
    Submit,
    SubmitBatch,
}

/// Everything counted, for one server.
#[derive(Debug)]
pub struct Metrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    handed_off: AtomicU64,
    /// Rejected notifications by gRPC code name.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Notifications refused because their customer's backlog was at its quota, by customer
    /// (registered customers only, so bounded).
    over_quota: Mutex<BTreeMap<String, u64>>,
    /// `[Submit, SubmitBatch]`.
    submit_latency: [Histogram; 2],
    commit_rows: Histogram,
    /// Indexed like [`StoreOp::ALL`].
    store_latency: [Histogram; 4],
    customers: Mutex<HashMap<String, Arc<CustomerCounters>>>,
    retention: RetentionCounters,
    cluster: ClusterCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            over_quota: Mutex::new(BTreeMap::new()),
            submit_latency: [0, 1].map(|_| Histogram::new(LATENCY_BUCKETS)),
            commit_rows: Histogram::new(COMMIT_ROW_BUCKETS),
            store_latency: [0, 1, 2, 3].map(|_| Histogram::new(LATENCY_BUCKETS)),
            customers: Mutex::new(HashMap::new()),
            retention: RetentionCounters::default(),
            cluster: ClusterCounters::default(),
        }
    }
}

/// A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the caller reads at scrape time and hands to [`Metrics::render`].
#[derive(Debug, Default)]
pub struct Scrape {
    /// Every running customer actor's state.
    pub actors: Vec<CustomerStats>,
    /// `(customer, transactional, bulk)` notifications waiting in the store.
    pub backlog: Vec<(String, u64, u64)>,
    /// This node's place in a cluster (`None` on a single node).
    pub cluster: Option<ClusterView>,
    /// Delivery outcomes waiting for the outcome writer.
    pub outcomes_queued: usize,
}

impl Metrics {
    /// Counts notifications newly stored and duplicates answered with the original id.
    pub fn accepted(&self, new: u64, duplicates: u64) {
        self.accepted.fetch_add(new, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
    }

    /// Counts new notifications intake gave straight to their actor (stored already leased), so
    /// an SRE can see how much of the load skipped the claim round trip.
    pub fn handed_off(&self, count: u64) {
        self.handed_off.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts notifications refused, by the gRPC code they were refused with.
    pub fn rejected(&self, code: tonic::Code, count: u64) {
        *lock(&self.rejected).entry(code_name(code)).or_default() += count;
    }

    /// Counts one notification refused by `customer_id`'s backlog quota.
    pub fn over_quota(&self, customer_id: &str) {
        *lock(&self.over_quota)
            .entry(customer_id.to_owned())
            .or_default() += 1;
    }

    /// Records one submit call's latency.
    pub fn submit_latency(&self, rpc: SubmitRpc, latency: Duration) {
        self.submit_latency[rpc as usize].observe_duration(latency);
    }

    /// Records the rows of one intake commit (a group or an express one).
    pub fn commit_rows(&self, rows: usize) {
        self.commit_rows.observe(rows as f64);
    }

    /// Records how long a store operation took (waiting for a connection included).
    pub fn store_latency(&self, op: StoreOp, latency: Duration) {
        self.store_latency[op as usize].observe_duration(latency);
    }

    /// The counters of `customer`, created on first use.
    pub fn customer(&self, customer: &str) -> Arc<CustomerCounters> {
        lock(&self.customers)
            .entry(customer.to_owned())
            .or_insert_with(|| Arc::new(CustomerCounters::new()))
            .clone()
    }

    /// The retention job's counters.
    pub fn retention(&self) -> &RetentionCounters {
        &self.retention
    }

    /// The membership protocol's counters.
    pub fn cluster(&self) -> &ClusterCounters {
        &self.cluster
    }

    /// The whole `/metrics` page.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut page = Exposition::default();
        self.render_intake(&mut page);
        self.render_store(&mut page);
        render_outcomes_queued(&mut page, scrape.outcomes_queued);
        self.retention.render(&mut page);
        render_counters(&mut page, &self.customer_counters());
        render_actors(&mut page, &scrape.actors);
        render_backlog(&mut page, &scrape.backlog);
        if let Some(view) = &scrape.cluster {
            self.cluster.render(&mut page, view);
        }
        page.finish()
    }

    fn render_intake(&self, page: &mut Exposition) {
        let counter = |page: &mut Exposition, name: &str, help: &str, value: &AtomicU64| {
            page.family(name, Kind::Counter, help);
            page.sample(name, &[], value.load(Ordering::Relaxed) as f64);
        };
        counter(
            page,
            "floodgate_intake_accepted_total",
            "Notifications newly stored by Submit and SubmitBatch.",
            &self.accepted,
        );
        counter(
            page,
            "floodgate_intake_duplicates_total",
            "Submitted notifications whose idempotency key was already stored (answered with the original id).",
            &self.duplicates,
        );
        counter(
            page,
            "floodgate_intake_handed_off_total",
            "New notifications handed straight to their customer actor at intake (stored already leased), skipping the claim.",
            &self.handed_off,
        );
        page.family(
            "floodgate_intake_rejected_total",
            Kind::Counter,
            "Submitted notifications refused, by gRPC code.",
        );
        for (code, count) in lock(&self.rejected).iter() {
            page.sample(
                "floodgate_intake_rejected_total",
                &[("code", code)],
                *count as f64,
            );
        }
        page.family(
            "floodgate_backlog_quota_refused_total",
            Kind::Counter,
            "Submitted notifications refused because the customer's backlog was at --max-backlog-per-customer.",
        );
        for (customer, count) in lock(&self.over_quota).iter() {
            page.sample(
                "floodgate_backlog_quota_refused_total",
                &[("customer", customer)],
                *count as f64,
            );
        }
        page.family(
            "floodgate_submit_duration_seconds",
            Kind::Histogram,
            "Submit and SubmitBatch call latency, until the notifications are committed.",
        );
        for (rpc, histogram) in ["Submit", "SubmitBatch"].iter().zip(&self.submit_latency) {
            page.histogram(
                "floodgate_submit_duration_seconds",
                &[("rpc", rpc)],
                histogram,
            );
        }
        page.family(
            "floodgate_intake_commit_rows",
            Kind::Histogram,
            "Notifications written per intake commit (group commits and express commits alike; a group commit cut between calls for an express commit counts once).",
        );
        page.histogram("floodgate_intake_commit_rows", &[], &self.commit_rows);
    }

    fn render_store(&self, page: &mut Exposition) {
        page.family(
            "floodgate_store_query_duration_seconds",
            Kind::Histogram,
            "Store operation latency by operation, waiting for a connection included.",
        );
        for (op, histogram) in StoreOp::ALL.iter().zip(&self.store_latency) {
            page.histogram(
                "floodgate_store_query_duration_seconds",
                &[("op", op.as_str())],
                histogram,
            );
        }
    }

    /// Every customer's counters, sorted by customer id (the lock is held only to copy them).
    fn customer_counters(&self) -> Vec<(String, Arc<CustomerCounters>)> {
        let mut customers: Vec<(String, Arc<CustomerCounters>)> = lock(&self.customers)
            .iter()
            .map(|(id, counters)| (id.clone(), counters.clone()))
            .collect();
        customers.sort_by(|a, b| a.0.cmp(&b.0));
        customers
    }
}

/// The outcome queue's depth: at its limit, finished deliveries hold their customers' in-flight
/// slots until the store has written what is ahead of them, so a full queue means the store's
/// writes, not the customer systems, pace delivery.
fn render_outcomes_queued(page: &mut Exposition, queued: usize) {
    page.family(
        "floodgate_outcomes_queued",
        Kind::Gauge,
        "Delivery outcomes waiting to be written to the store; at the queue's limit, finished deliveries keep their in-flight slots until there is room.",
    );
    page.sample("floodgate_outcomes_queued", &[], queued as f64);
}

fn render_backlog(page: &mut Exposition, backlog: &[(String, u64, u64)]) {
    page.family(
        "floodgate_customer_backlog",
        Kind::Gauge,
        "Notifications waiting in the store (pending or retrying) per customer and lane.",
    );
    for (customer, transactional, bulk) in backlog {
        for (lane, count) in [("transactional", transactional), ("bulk", bulk)] {
            page.sample(
                "floodgate_customer_backlog",
                &[("customer", customer), ("lane", lane)],
                *count as f64,
            );
        }
    }
}

/// The gRPC code's name as a label value, e.g. `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lane;

    #[test]
    fn customer_counters_outlive_the_handle_and_render_by_lane_and_result() {
        let metrics = Metrics::default();
        metrics.customer("acme").attempt(
            Lane::Bulk,
            AttemptResult::Retried,
            Some(Duration::from_millis(20)),
        );
        metrics.customer("acme").attempt(
            Lane::Bulk,
            AttemptResult::Delivered,
            Some(Duration::from_millis(30)),
        );
        metrics.accepted(5, 1);
        metrics.rejected(tonic::Code::InvalidArgument, 2);
        metrics.cluster().taken(3, 7);
        let page = metrics.render(&Scrape {
            actors: Vec::new(),
            backlog: vec![("acme".into(), 3, 4)],
            cluster: Some(ClusterView {
                node_id: "node-a".into(),
                buckets_owned: 3,
                fenced: false,
            }),
            outcomes_queued: 12,
        });
        for line in [
            "floodgate_customer_attempts_total{customer=\"acme\",lane=\"bulk\",result=\"retried\"} 1",
            "floodgate_customer_attempts_total{customer=\"acme\",lane=\"bulk\",result=\"delivered\"} 1",
            "floodgate_customer_attempts_total{customer=\"acme\",lane=\"transactional\",result=\"delivered\"} 0",
            "floodgate_customer_rtt_seconds_count{customer=\"acme\"} 2",
            "floodgate_cluster_buckets_owned{node=\"node-a\"} 3",
            "floodgate_cluster_redelivered_total{node=\"node-a\"} 7",
            "floodgate_intake_accepted_total 5",
            "floodgate_intake_duplicates_total 1",
            "floodgate_intake_rejected_total{code=\"INVALID_ARGUMENT\"} 2",
            "floodgate_customer_backlog{customer=\"acme\",lane=\"bulk\"} 4",
            "floodgate_outcomes_queued 12",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line} in\n{page}");
        }
    }
}
