//! The messages the supervisor and the customer actors understand, and the stats they report.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;

use super::controller::{Checkpoint, Signal, Ticket};
use crate::model::Claimed;
use crate::model::{Channel, Customer, Lane, LaneSet};
use crate::telemetry::customer_stats::CustomerStats;

/// What one actor delivers: one customer's notifications on one channel. Each provider is a
/// downstream with its own limits, so each (customer, channel) has its own actor and controller:
/// an FCM slowdown never slows that customer's webhook.
pub(super) type ActorKey = (String, Channel);

/// Messages to the supervisor.
pub(super) enum SupervisorMsg {
    /// A customer may have new due work in these lanes, on this channel (`None`: any channel the
    /// customer has configured): wake its actors, starting them if needed.
    Wake(String, Option<Channel>, LaneSet),
    /// A customer's settings, loaded for the wakes waiting on them (`None`: unknown or
    /// unreadable for now), with its controllers' last checkpoints.
    Loaded(String, Option<Arc<Customer>>, Vec<(Channel, Checkpoint)>),
    /// A customer's settings changed: pass them to its actor.
    Settings(Arc<Customer>),
    /// An actor has been idle; it may stop if no wake has been sent to it since it last saw one.
    Retire { key: ActorKey, wakes_seen: u64 },
    /// Start a failed actor again (after its backoff).
    Restart(ActorKey),
    /// The running actors of one customer (one per channel with work).
    ActorsOf(String, RpcReplyPort<Vec<ractor::ActorRef<CustomerMsg>>>),
    /// Every running actor.
    Actors(RpcReplyPort<Vec<ractor::ActorRef<CustomerMsg>>>),
    /// The running actors of customers in these buckets (a handover or a lost lease).
    ActorsIn(Vec<u16>, RpcReplyPort<Vec<ractor::ActorRef<CustomerMsg>>>),
    /// Shutdown: start nothing new, stop every actor (each hands its window back to the store).
    Drain(RpcReplyPort<()>),
    /// Test hook: make a customer's actors panic.
    #[cfg(feature = "failpoints")]
    Crash(String),
}

/// Messages to a customer actor.
pub(super) enum CustomerMsg {
    /// New work may be due in the store, in these lanes.
    Wake(LaneSet),
    /// A pacing or retry-after wait has passed.
    Tick,
    /// The claimer answered this actor's ask.
    Claimed(Result<Vec<LaneClaim>, super::claimer::ClaimError>),
    /// Intake handed notifications over (they wait in the actor's handoff slot).
    Handed,
    /// The backoff after a failed claim is over: claims may be asked again.
    ClaimRetry,
    /// A delivery attempt finished.
    Done(AttemptReport),
    /// The customer's settings changed.
    Settings(Arc<Customer>),
    /// Report stats.
    Stats(RpcReplyPort<Option<CustomerStats>>),
    /// Check whether the actor has stayed idle long enough to stop.
    IdleCheck,
    /// A planned handover: send nothing more, hand the window back, and once the attempts under
    /// way have ended, save the checkpoint, answer and stop.
    Release(tokio::sync::oneshot::Sender<()>),
    /// A task finished handing unsent claims back to the store.
    HandedBack,
    /// Offer the outcomes the writer's full queue refused again.
    RecordOutcomes,
    /// Test hook: panic.
    #[cfg(feature = "failpoints")]
    Crash,
}

/// What one lane's claim asked for and got.
#[derive(Debug)]
pub(super) struct LaneClaim {
    pub(super) lane: Lane,
    pub(super) wanted: usize,
    pub(super) claimed: Vec<Claimed>,
}

/// What a delivery task tells its actor about one attempt.
#[derive(Debug)]
pub(super) struct AttemptReport {
    /// The controller's record of the send (`None` under the baseline policies).
    pub(super) ticket: Option<Ticket>,
    /// `None`: nothing was sent (so there is no round trip to learn from).
    pub(super) rtt: Option<Duration>,
    pub(super) signal: Signal,
    /// The notification ended FAILED with this attempt.
    pub(super) failed: bool,
}
