//! The messages the supervisor and the customer actors understand, and the stats they report.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;

use super::controller::{Circuit, Signal, Tier};
use crate::model::{Customer, EpochMillis};

/// Messages to the supervisor.
pub(super) enum SupervisorMsg {
    /// A customer may have new due work in these lanes: wake its actor, starting one if needed.
    Wake(String, Lanes),
    /// A customer's settings changed: pass them to its actor.
    Settings(Arc<Customer>),
    /// An actor has been idle; it may stop if no wake has been sent to it since it last saw one.
    Retire {
        customer_id: String,
        wakes_seen: u64,
    },
    /// Start a failed customer's actor again (after its backoff).
    Restart(String),
    /// One customer's stats, if its actor is running.
    Stats(String, RpcReplyPort<Option<CustomerStats>>),
    /// Every running actor.
    Actors(RpcReplyPort<Vec<ractor::ActorRef<CustomerMsg>>>),
    /// Shutdown: start nothing new, stop every actor (each hands its window back to the store).
    Drain(RpcReplyPort<()>),
    /// Test hook: make a customer's actor panic.
    Crash(String),
}

/// Messages to a customer actor.
pub(super) enum CustomerMsg {
    /// New work may be due in the store, in these lanes.
    Wake(Lanes),
    /// A pacing or retry-after wait has passed.
    Tick,
    /// A claim task finished.
    Claimed(Result<Vec<super::customer::LaneClaim>, crate::store::Error>),
    /// A delivery attempt finished.
    Done(AttemptReport),
    /// The customer's settings changed.
    Settings(Arc<Customer>),
    /// Report stats.
    Stats(RpcReplyPort<Option<CustomerStats>>),
    /// Check whether the actor has stayed idle long enough to stop.
    IdleCheck,
    /// Test hook: panic.
    Crash,
}

/// Which lanes a wake concerns, indexed like [`Lane::index`](crate::model::Lane::index).
/// Waking only the lanes that got work saves a claim on an empty lane per wake.
pub(super) type Lanes = [bool; 2];

/// Every lane: for wakes that don't know (the sweep, settings changes, new actors).
pub(super) const ALL_LANES: Lanes = [true; 2];

/// What a delivery task tells its actor about one attempt.
#[derive(Debug)]
pub(super) struct AttemptReport {
    pub(super) rtt: Duration,
    pub(super) signal: Signal,
    /// The notification ended FAILED with this attempt.
    pub(super) failed: bool,
}

/// A customer system's delivery figures as its actor sees them now.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerStats {
    pub customer_id: String,
    pub tier: Tier,
    /// Concurrency limit: deliveries allowed in flight at once.
    pub limit: usize,
    /// Pacing rate, deliveries/s.
    pub rate: f64,
    /// Deliveries per second over the last 10 s.
    pub delivered_per_sec: f64,
    pub rtt_p50: Option<Duration>,
    pub rtt_p99: Option<Duration>,
    /// Share of attempts in the last 10 s that met overload, timeouts, connection or server errors.
    pub error_rate: f64,
    pub in_flight: usize,
    /// Claimed notifications held in memory, per lane (transactional, bulk).
    pub window: [usize; 2],
    pub circuit: Circuit,
    /// The last tier change: when (epoch ms), from, to and why.
    pub last_tier_change: Option<(EpochMillis, Tier, Tier, String)>,
    /// Totals since the actor started.
    pub delivered_total: u64,
    pub failed_total: u64,
    /// Tier changes since the actor started (each is also logged with its reason).
    pub tier_changes_total: u64,
}
