//! One customer system's actor for one channel: it claims that customer's due notifications on
//! that channel into a small window, sends them as fast as its controller permits, and feeds
//! every attempt's outcome back to the controller. Each channel is its own downstream (the
//! customer's webhook, or a provider under the customer's credential), so each has its own pace.
//!
//! The window holds at most the controller's limit plus a small prefetch per lane, refilled from
//! the store as deliveries finish, so a customer with a million queued notifications costs no
//! more memory than one with ten. Sends run in their own tasks (`delivery.rs`); the actor only
//! decides. When it has had nothing to do for a while, it asks the supervisor to let it stop.

use crate::telemetry::metrics::{CustomerCounters, StoreOp};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Context;
use super::controller::{Permit, Signal};
use super::delivery;
use super::lanes::LaneWindow;
use super::messages::{ActorKey, AttemptReport, CustomerMsg, CustomerStats, SupervisorMsg};
use super::policy::Pacing;
use super::stats::DeliveryStats;
use crate::model::{Channel, Customer, Lane, now_millis};
use crate::store::{self, Claimed, Outcome, OutcomeKind};

/// How long to wait before claiming again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// The shortest wait a tick is scheduled for (so a "wait until now" can't spin).
const MIN_TICK: Duration = Duration::from_millis(1);

/// The actor (stateless; its state is [`CustomerState`]).
pub(super) struct CustomerActor;

/// What an actor starts from. Everything else comes back from the store.
pub(super) struct CustomerArgs {
    pub(super) ctx: Arc<Context>,
    pub(super) customer: Arc<Customer>,
    pub(super) channel: Channel,
    pub(super) supervisor: ActorRef<SupervisorMsg>,
}

pub(super) struct CustomerState {
    ctx: Arc<Context>,
    /// This customer's Prometheus counters (they outlive the actor).
    counters: Arc<CustomerCounters>,
    customer: Arc<Customer>,
    /// The only channel this actor claims and sends.
    channel: Channel,
    supervisor: ActorRef<SupervisorMsg>,
    /// The controller (or, under a baseline policy, a fixed pace).
    controller: Pacing,
    window: LaneWindow,
    /// Lanes whose last claim found nothing more due (reset by a wake for that lane).
    drained: [bool; 2],
    /// A claim task is under way (at most one at a time).
    claiming: bool,
    in_flight: usize,
    /// When the next scheduled tick fires, if one is scheduled.
    tick_at: Option<Instant>,
    /// Wakes received; the supervisor compares it with wakes sent before letting the actor stop.
    wakes_seen: u64,
    idle_since: Option<Instant>,
    stats: DeliveryStats,
}

impl Actor for CustomerActor {
    type Msg = CustomerMsg;
    type State = CustomerState;
    type Arguments = CustomerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<CustomerMsg>,
        args: CustomerArgs,
    ) -> Result<CustomerState, ActorProcessingErr> {
        let now = Instant::now();
        let settings = &args.ctx.settings;
        let mut controller = Pacing::new(
            &settings.policy,
            &settings.controller,
            now,
            ceiling(&args.customer),
            args.customer.start_tier,
        );
        controller.set_paused(args.customer.paused, now);
        Ok(CustomerState {
            counters: args.ctx.metrics.customer(&args.customer.id),
            window: LaneWindow::new(settings.bulk_share),
            controller,
            drained: [false; 2],
            claiming: false,
            in_flight: 0,
            tick_at: None,
            wakes_seen: 0,
            idle_since: None,
            stats: DeliveryStats::new(now),
            ctx: args.ctx,
            customer: args.customer,
            channel: args.channel,
            supervisor: args.supervisor,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CustomerMsg>,
        message: CustomerMsg,
        state: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CustomerMsg::Wake(lanes) => {
                state.wakes_seen += 1;
                for (drained, woken) in state.drained.iter_mut().zip(lanes) {
                    *drained &= !woken;
                }
            }
            CustomerMsg::Tick => state.tick_at = None,
            CustomerMsg::Claimed(result) => state.claimed(&myself, result),
            CustomerMsg::Done(report) => state.finish(report),
            CustomerMsg::Settings(customer) => state.apply(customer),
            CustomerMsg::Stats(reply) => {
                let _ = reply.send(Some(state.snapshot()));
                return Ok(());
            }
            CustomerMsg::IdleCheck => {
                state.check_idle(&myself);
                return Ok(());
            }
            CustomerMsg::Crash => panic!("injected panic in customer actor {}", state.customer.id),
        }
        state.pump(&myself).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CustomerMsg>,
        state: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        state.hand_back().await;
        Ok(())
    }
}

impl CustomerState {
    /// Claims what may be sent soon and sends what the controller permits now.
    async fn pump(&mut self, myself: &ActorRef<CustomerMsg>) {
        if !self.customer.paused {
            self.start_claim(myself);
            self.send_ready(myself).await;
        }
        self.note_idle(myself);
    }

    /// Starts topping up lanes that run low (up to what may be sent now plus a prefetch, one
    /// claim per lane: a batch, not a row at a time). The claim runs in its own task and comes
    /// back as [`CustomerMsg::Claimed`]: a claim may wait its turn for the database's write
    /// connection, and meanwhile the actor keeps recording finished attempts and sending.
    fn start_claim(&mut self, myself: &ActorRef<CustomerMsg>) {
        if self.claiming {
            return;
        }
        let limit = self.controller.limit();
        let prefetch = self.ctx.settings.prefetch.max(limit / 2);
        let target = limit.saturating_sub(self.in_flight) + prefetch;
        let wanted: Vec<(Lane, usize)> = [Lane::Transactional, Lane::Bulk]
            .into_iter()
            .filter(|lane| !self.drained[lane.index()] && self.window.len(*lane) <= target / 2)
            .map(|lane| (lane, target - self.window.len(lane)))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.claiming = true;
        let task = claim(
            self.ctx.clone(),
            myself.clone(),
            (self.customer.id.clone(), self.channel),
            wanted,
        );
        self.ctx.tasks.spawn(task);
    }

    /// Takes a finished claim into the window.
    fn claimed(
        &mut self,
        myself: &ActorRef<CustomerMsg>,
        result: Result<Vec<LaneClaim>, store::Error>,
    ) {
        self.claiming = false;
        match result {
            Ok(lanes) => {
                for LaneClaim {
                    lane,
                    wanted,
                    claimed,
                } in lanes
                {
                    self.drained[lane.index()] = claimed.len() < wanted;
                    self.window.extend(claimed);
                }
            }
            Err(err) => {
                tracing::warn!(customer_id = %self.customer.id, error = %err, "claim failed; retrying shortly");
                self.schedule_tick(myself, Instant::now() + STORE_RETRY);
            }
        }
    }

    /// Starts as many deliveries as the controller permits right now.
    async fn send_ready(&mut self, myself: &ActorRef<CustomerMsg>) {
        loop {
            if self.window.is_empty() {
                return;
            }
            let now = Instant::now();
            match self.controller.permit(now, self.in_flight) {
                Permit::Send => {
                    let Some(notification) = self.window.next() else {
                        return;
                    };
                    if notification.expires_at.is_some_and(|at| at <= now_millis()) {
                        self.expire(notification).await;
                        continue;
                    }
                    self.controller.on_send(now, self.in_flight);
                    self.in_flight += 1;
                    self.start_delivery(myself, notification);
                }
                Permit::WaitUntil(at) => {
                    // At the limit, the next finished delivery pumps again; otherwise wake at `at`.
                    if self.in_flight < self.controller.limit()
                        || self.controller.paused_until().is_some()
                    {
                        self.schedule_tick(myself, at);
                    }
                    return;
                }
            }
        }
    }

    fn start_delivery(&self, myself: &ActorRef<CustomerMsg>, notification: Claimed) {
        let span = tracing::info_span!(
            "delivery",
            customer_id = %notification.customer_id,
            notification_id = %notification.id,
            attempt = notification.attempts,
        );
        let task = delivery::deliver(
            self.ctx.clone(),
            myself.clone(),
            self.customer.clone(),
            self.counters.clone(),
            notification,
        );
        self.ctx.tasks.spawn(task.instrument(span));
    }

    async fn expire(&self, notification: Claimed) {
        let outcome = Outcome {
            id: notification.id,
            claim: notification.claim,
            kind: OutcomeKind::Expired,
        };
        self.ctx.outcomes.record(outcome).await;
    }

    /// Feeds a finished attempt to the controller and the stats.
    fn finish(&mut self, report: AttemptReport) {
        let now = Instant::now();
        self.in_flight = self.in_flight.saturating_sub(1);
        let delivered = matches!(report.signal, Signal::Success);
        let error = !matches!(report.signal, Signal::Success | Signal::Rejected);
        self.stats.record(now, report.rtt, delivered, error);
        if report.failed {
            self.stats.record_failed();
        }
        self.controller
            .observe(now, report.rtt.unwrap_or_default(), report.signal);
        for change in self.controller.take_tier_changes() {
            self.stats.tier_changes_total += 1;
            self.counters.tier_changed();
            tracing::info!(
                customer_id = %self.customer.id,
                from = change.from.as_str(),
                to = change.to.as_str(),
                reason = %change.reason,
                "tier changed"
            );
        }
    }

    fn apply(&mut self, customer: Arc<Customer>) {
        let now = Instant::now();
        self.controller.set_ceiling(ceiling(&customer));
        self.controller.set_paused(customer.paused, now);
        self.customer = customer;
        self.drained = [false; 2];
    }

    fn schedule_tick(&mut self, myself: &ActorRef<CustomerMsg>, at: Instant) {
        let now = Instant::now();
        let at = at.max(now + MIN_TICK);
        if self.tick_at.is_some_and(|scheduled| scheduled <= at) {
            return;
        }
        self.tick_at = Some(at);
        myself.send_after(at - now, || CustomerMsg::Tick);
    }

    /// Starts the idle clock when there is nothing left to do.
    fn note_idle(&mut self, myself: &ActorRef<CustomerMsg>) {
        let idle = self.in_flight == 0
            && !self.claiming
            && self.window.is_empty()
            && (self.customer.paused || self.drained == [true; 2]);
        if !idle {
            self.idle_since = None;
        } else if self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
            myself.send_after(self.ctx.settings.idle_timeout, || CustomerMsg::IdleCheck);
        }
    }

    /// Asks the supervisor to stop this actor if it has been idle for the whole timeout.
    fn check_idle(&self, myself: &ActorRef<CustomerMsg>) {
        let Some(since) = self.idle_since else { return };
        let timeout = self.ctx.settings.idle_timeout;
        let idle_for = since.elapsed();
        if idle_for < timeout {
            myself.send_after(timeout - idle_for, || CustomerMsg::IdleCheck);
            return;
        }
        let _ = self.supervisor.send_message(SupervisorMsg::Retire {
            key: (self.customer.id.clone(), self.channel),
            wakes_seen: self.wakes_seen,
        });
    }

    /// Returns claimed-but-unsent notifications to the store so they need not wait for their lease.
    async fn hand_back(&mut self) {
        let unsent: Vec<_> = self
            .window
            .drain()
            .into_iter()
            .map(|n| (n.id, n.claim))
            .collect();
        if unsent.is_empty() {
            return;
        }
        if let Err(err) = self.ctx.store.release_claims(&unsent, now_millis()).await {
            tracing::warn!(customer_id = %self.customer.id, error = %err, "could not hand back claims; their leases will");
        }
    }

    fn snapshot(&mut self) -> CustomerStats {
        let now = Instant::now();
        let controller = self.controller.snapshot();
        let wall_clock = |at: Instant| {
            now_millis() - i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0)
        };
        CustomerStats {
            customer_id: self.customer.id.clone(),
            tier: controller.tier,
            limit: controller.limit,
            rate: controller.rate,
            delivered_per_sec: self.stats.delivered_per_sec(now),
            rtt_p50: self.stats.rtt_quantile(now, 0.5),
            rtt_p99: self.stats.rtt_quantile(now, 0.99),
            error_rate: self.stats.error_rate(now),
            in_flight: self.in_flight,
            window: [
                self.window.len(Lane::Transactional),
                self.window.len(Lane::Bulk),
            ],
            circuit: controller.circuit,
            last_tier_change: controller
                .last_tier_change
                .map(|change| (wall_clock(change.at), change.from, change.to, change.reason)),
            delivered_total: self.stats.delivered_total,
            failed_total: self.stats.failed_total,
            tier_changes_total: self.stats.tier_changes_total,
        }
    }
}

/// What one lane's claim asked for and got.
pub(super) struct LaneClaim {
    lane: Lane,
    wanted: usize,
    claimed: Vec<Claimed>,
}

/// Claims for the customer and channel of `key` in each lane and reports back. If the actor is
/// gone by then (it stopped or failed), the claims are handed straight back rather than left to
/// their lease.
async fn claim(
    ctx: Arc<Context>,
    actor: ActorRef<CustomerMsg>,
    (customer_id, channel): ActorKey,
    wanted: Vec<(Lane, usize)>,
) {
    let now = now_millis();
    let lease_until =
        now.saturating_add(i64::try_from(ctx.settings.lease.as_millis()).unwrap_or(i64::MAX));
    let mut lanes = Vec::with_capacity(wanted.len());
    let mut result = Ok(());
    for (lane, count) in wanted {
        let started = std::time::Instant::now();
        let claimed = ctx
            .store
            .claim(&customer_id, channel, lane, count, now, lease_until)
            .await;
        ctx.metrics.store_latency(StoreOp::Claim, started.elapsed());
        match claimed {
            Ok(claimed) => lanes.push(LaneClaim {
                lane,
                wanted: count,
                claimed,
            }),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    // Whatever was claimed before a failure is kept: the actor sends it.
    let report = match result {
        Err(err) if lanes.is_empty() => Err(err),
        _ => Ok(lanes),
    };
    if let Err(ractor::MessagingErr::SendErr(CustomerMsg::Claimed(Ok(lanes)))) =
        actor.send_message(CustomerMsg::Claimed(report))
    {
        let held: Vec<_> = lanes
            .iter()
            .flat_map(|l| l.claimed.iter().map(|n| (n.id, n.claim)))
            .collect();
        if let Err(err) = ctx.store.release_claims(&held, now_millis()).await {
            tracing::warn!(customer_id, error = %err, "could not hand back claims; their leases will");
        }
    }
}

/// The customer's rate ceiling as the controller takes it.
fn ceiling(customer: &Customer) -> Option<f64> {
    (customer.max_rate_per_sec > 0).then(|| f64::from(customer.max_rate_per_sec))
}
