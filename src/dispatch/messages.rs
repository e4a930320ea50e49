//! The messages the supervisor and the customer actors understand, and the stats they report.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;

use super::controller::{Checkpoint, Circuit, Signal, Ticket, Tier};
use crate::model::{Channel, Claimed, Customer, EpochMillis, Lane, LaneSet};

/// What one actor delivers: one customer's notifications on one channel. Each provider is a
/// downstream with its own limits, so each (customer, channel) has its own actor and controller:
/// an FCM slowdown never slows that customer's webhook.
pub(super) type ActorKey = (String, Channel);

/// Messages to the supervisor.
pub(super) enum SupervisorMsg {
    /// A customer may have new due work in these lanes, on this channel (`None`: any channel the
    /// customer has configured): wake its actors, starting them if needed.
    Wake(String, Option<Channel>, Lanes),
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
    Wake(Lanes),
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

/// Which lanes a wake concerns.
pub(super) type Lanes = LaneSet;

/// Every lane: for wakes that don't know (the sweep, settings changes, new actors).
pub(super) const ALL_LANES: Lanes = LaneSet::ALL;

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
    /// The controller's RTT baseline: the customer system's own queue-free RTT, once measured
    /// (`None` under the baseline policies). RTTs far above it mean a queue.
    pub rtt_baseline: Option<Duration>,
    /// Share of attempts in the last 10 s that met overload, timeouts, connection or server errors.
    pub error_rate: f64,
    pub in_flight: usize,
    /// Claimed notifications held in memory, per lane (transactional, bulk).
    pub window: [usize; 2],
    pub circuit: Circuit,
    /// The last tier change.
    pub last_tier_change: Option<LastTierChange>,
    /// Totals since the actor started.
    pub delivered_total: u64,
    pub failed_total: u64,
    /// Tier changes since the actor started (each is also logged with its reason).
    pub tier_changes_total: u64,
}

/// A customer's last tier change as its stats report it: the controller's record, with the
/// moment on the wall clock so it can be shown and compared across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTierChange {
    /// When, in epoch milliseconds.
    pub at: EpochMillis,
    pub from: Tier,
    pub to: Tier,
    /// Why, as logged.
    pub reason: String,
}

impl CustomerStats {
    /// One customer's figures from its per-channel actors: rates, limits and counts add up; the
    /// error rate, RTTs, tier and circuit are the worst channel's, so a struggling provider shows.
    /// `None` when no actor is running.
    pub(super) fn merge(parts: Vec<CustomerStats>) -> Option<CustomerStats> {
        parts.into_iter().reduce(|mut all, part| {
            all.limit += part.limit;
            all.rate += part.rate;
            all.delivered_per_sec += part.delivered_per_sec;
            all.rtt_p50 = all.rtt_p50.max(part.rtt_p50);
            all.rtt_p99 = all.rtt_p99.max(part.rtt_p99);
            all.rtt_baseline = all.rtt_baseline.max(part.rtt_baseline);
            all.error_rate = all.error_rate.max(part.error_rate);
            all.in_flight += part.in_flight;
            all.window = [
                all.window[0] + part.window[0],
                all.window[1] + part.window[1],
            ];
            if tier_rank(part.tier) > tier_rank(all.tier) {
                all.tier = part.tier;
            }
            if circuit_rank(part.circuit) > circuit_rank(all.circuit) {
                all.circuit = part.circuit;
            }
            if part.last_tier_change.as_ref().map(|c| c.at)
                > all.last_tier_change.as_ref().map(|c| c.at)
            {
                all.last_tier_change = part.last_tier_change;
            }
            all.delivered_total += part.delivered_total;
            all.failed_total += part.failed_total;
            all.tier_changes_total += part.tier_changes_total;
            all
        })
    }
}

/// Slower tiers rank higher.
fn tier_rank(tier: Tier) -> u8 {
    match tier {
        Tier::Fast => 0,
        Tier::Medium => 1,
        Tier::Slow => 2,
        Tier::Paused => 3,
        Tier::CircuitOpen => 4,
    }
}

/// Less open circuits rank lower.
fn circuit_rank(circuit: Circuit) -> u8 {
    match circuit {
        Circuit::Closed => 0,
        Circuit::HalfOpen => 1,
        Circuit::Open => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(tier: Tier, limit: usize, error_rate: f64, delivered_total: u64) -> CustomerStats {
        CustomerStats {
            customer_id: "acme".into(),
            tier,
            limit,
            rate: limit as f64,
            delivered_per_sec: 1.0,
            rtt_p50: Some(Duration::from_millis(limit as u64)),
            rtt_p99: None,
            rtt_baseline: Some(Duration::from_millis(limit as u64)),
            error_rate,
            in_flight: 1,
            window: [1, 2],
            circuit: Circuit::Closed,
            last_tier_change: None,
            delivered_total,
            failed_total: 0,
            tier_changes_total: 0,
        }
    }

    #[test]
    fn channels_merge_into_one_customer() {
        assert_eq!(CustomerStats::merge(Vec::new()), None);
        let one = stats(Tier::Fast, 8, 0.0, 3);
        assert_eq!(CustomerStats::merge(vec![one.clone()]), Some(one.clone()));
        let merged = CustomerStats::merge(vec![one, stats(Tier::Slow, 2, 0.5, 4)]).unwrap();
        assert_eq!(merged.limit, 10);
        assert_eq!(merged.tier, Tier::Slow);
        assert_eq!(merged.error_rate, 0.5);
        assert_eq!(merged.delivered_total, 7);
        assert_eq!(merged.window, [2, 4]);
        assert_eq!(merged.rtt_p50, Some(Duration::from_millis(8)));
        assert_eq!(merged.rtt_baseline, Some(Duration::from_millis(8)));
    }
}
