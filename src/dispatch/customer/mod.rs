//! One customer system's actor for one channel: it claims that customer's due notifications on
//! that channel into a small window, sends them as fast as its controller permits, and feeds
//! every attempt's outcome back to the controller. Each channel is its own downstream (the
//! customer's webhook, or a provider under the customer's credential), so each has its own pace.
//!
//! The window holds at most the controller's limit plus a small prefetch per lane, refilled as
//! deliveries finish, so a customer with a million queued notifications costs no more memory
//! than one with ten. It is refilled two ways: from the store, by asking the node's [`claimer`]
//! (which claims for many actors in one statement), and straight from intake, through the
//! actor's [`handoff`] slot, once the store backlog of a lane is drained. Sends run in their own
//! tasks (`delivery.rs`); the actor only decides and never waits on I/O in its handler: claims
//! are asks answered by message, unsent claims are handed back by a task that reports back, and
//! an outcome the writer's full queue cannot take yet is kept and offered again a moment later.
//! Its collaborators are the traits of [`ports`], so `tests.rs` runs it over fakes. When it
//! has had nothing to do for a while, it asks the supervisor to let it stop.
//!
//! [`claimer`]: super::claimer
//! [`handoff`]: super::handoff
//! [`ports`]: super::ports

mod unrecorded;

use crate::telemetry::metrics::CustomerCounters;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::ActorContext;
use super::CustomerStats;
use super::checkpoints::EVERY as CHECKPOINT_EVERY;
use super::claimer::{ClaimAsk, ClaimError};
use super::controller::{Checkpoint, Permit, Signal, Ticket};
use super::delivery;
use super::handoff::Slot;
use super::lanes::LaneWindow;
use super::messages::{AttemptReport, CustomerMsg, LaneClaim, SupervisorMsg};
use super::policy::Pacing;
use super::stats::DeliveryStats;
use crate::cluster::buckets::bucket_of;
use crate::model::{Channel, Claimed, Customer, Lane, LaneSet, Outcome, now_millis};
use crate::telemetry::customer_stats::LastTierChange;
use tokio::sync::oneshot;

/// The first wait before claiming again after the store failed; it doubles with each failure
/// in a row, up to [`CLAIM_RETRY_MAX`], with jitter so a thousand actors do not retry as one.
const CLAIM_RETRY_BASE: Duration = Duration::from_millis(200);
/// The longest wait between failed claims.
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(10);
/// The shortest wait a tick is scheduled for (so a "wait until now" can't spin).
const MIN_TICK: Duration = Duration::from_millis(1);
/// How often a fenced actor looks again whether it may send.
const FENCED_RECHECK: Duration = Duration::from_millis(500);

/// The actor (stateless; its state is [`CustomerState`]).
pub(super) struct CustomerActor;

/// What an actor starts from. Everything else comes back from the store.
pub(super) struct CustomerArgs {
    pub(super) ctx: Arc<ActorContext>,
    pub(super) customer: Arc<Customer>,
    pub(super) channel: Channel,
    pub(super) supervisor: ActorRef<SupervisorMsg>,
    /// The controller's learned state when an actor for this customer and channel last ran.
    pub(super) checkpoint: Option<Checkpoint>,
}

pub(super) struct CustomerState {
    ctx: Arc<ActorContext>,
    /// This customer's Prometheus counters (they outlive the actor).
    counters: Arc<CustomerCounters>,
    customer: Arc<Customer>,
    /// The only channel this actor claims and sends.
    channel: Channel,
    /// The customer's cluster bucket: the actor claims and sends only while the node owns it.
    bucket: u16,
    /// A planned handover asked this actor to finish: answered once nothing is in flight, handed
    /// back or unrecorded.
    releasing: Option<oneshot::Sender<()>>,
    /// Hand-backs of unsent claims whose task has not reported yet.
    handing_back: usize,
    /// Outcomes the writer's queue was too full to take, oldest first (offered again on
    /// [`CustomerMsg::RecordOutcomes`]).
    unrecorded: VecDeque<Outcome>,
    /// When the controller's checkpoint was last offered for writing.
    checkpointed: Instant,
    supervisor: ActorRef<SupervisorMsg>,
    /// The controller (or, under a baseline policy, a fixed pace).
    controller: Pacing,
    window: LaneWindow,
    /// Lanes whose last claim found nothing more due (reset by a wake for that lane).
    drained: LaneSet,
    /// An ask is with the claimer (at most one at a time).
    claiming: bool,
    /// Claims that failed in a row (for the retry backoff).
    claim_failures: u32,
    /// Where intake hands fresh notifications over; registered while the actor runs.
    slot: Arc<Slot>,
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
        myself: ActorRef<CustomerMsg>,
        args: CustomerArgs,
    ) -> Result<CustomerState, ActorProcessingErr> {
        let now = Instant::now();
        let slot = Arc::new(Slot::new(myself));
        args.ctx
            .handoffs
            .register(&(args.customer.id.clone(), args.channel), slot.clone());
        let settings = &args.ctx.settings;
        let mut controller = Pacing::new(
            &settings.policy,
            &settings.controller,
            now,
            ceiling(&args.customer),
            args.customer.start_tier,
        );
        if let Some(checkpoint) = &args.checkpoint {
            controller.resume(now, checkpoint);
        }
        controller.set_paused(args.customer.paused, now);
        Ok(CustomerState {
            bucket: bucket_of(&args.customer.id),
            releasing: None,
            handing_back: 0,
            unrecorded: VecDeque::new(),
            checkpointed: now,
            counters: args.ctx.metrics.customer(&args.customer.id),
            window: LaneWindow::new(settings.bulk_share),
            controller,
            drained: LaneSet::NONE,
            claiming: false,
            claim_failures: 0,
            slot,
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
                state.drained = state.drained.without(lanes);
            }
            CustomerMsg::Tick => state.tick_at = None,
            CustomerMsg::Claimed(result) => state.claimed(&myself, result),
            CustomerMsg::Handed => {
                let handed = state.slot.take();
                state.take_in(handed);
            }
            CustomerMsg::ClaimRetry => state.claiming = false,
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
            #[cfg(feature = "failpoints")]
            CustomerMsg::Crash => panic!("injected panic in customer actor {}", state.customer.id),
            CustomerMsg::Release(done) => {
                state.releasing = Some(done);
                state.hand_back(&myself);
            }
            CustomerMsg::HandedBack => state.handing_back = state.handing_back.saturating_sub(1),
            CustomerMsg::RecordOutcomes => state.record_unrecorded(&myself),
        }
        if state.releasing.is_some() {
            state.finish_release(&myself);
            return Ok(());
        }
        state.pump(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<CustomerMsg>,
        state: &mut CustomerState,
    ) -> Result<(), ActorProcessingErr> {
        state.hand_back(&myself);
        state.record_in_background();
        state.offer_checkpoint();
        Ok(())
    }
}

impl CustomerState {
    /// Claims what may be sent soon, sends what the controller permits now, and tells intake
    /// how much it may hand over directly.
    fn pump(&mut self, myself: &ActorRef<CustomerMsg>) {
        let fenced = !self.may_send();
        if fenced {
            // Past the node's fencing deadline (its leases could not be renewed): nothing starts
            // until a renewal succeeds or the bucket is lost and this actor stopped.
            self.schedule_tick(myself, Instant::now() + FENCED_RECHECK);
        } else if !self.customer.paused {
            self.start_claim(myself);
            self.send_ready(myself);
        }
        self.grant_handoffs(fenced);
        self.note_idle(myself);
    }

    /// Whether this node may start sends for the customer now (see [`crate::cluster`]).
    fn may_send(&self) -> bool {
        let ownership = &self.ctx.ownership;
        ownership.owns_bucket(self.bucket) && ownership.within_deadline(Instant::now())
    }

    /// Ends a planned handover once no attempt is under way, the unsent claims are back in the
    /// store and every outcome is with the writer: saves the checkpoint, answers, and stops the
    /// actor.
    fn finish_release(&mut self, myself: &ActorRef<CustomerMsg>) {
        if self.in_flight > 0 || self.handing_back > 0 || !self.unrecorded.is_empty() {
            return;
        }
        self.offer_checkpoint();
        if let Some(done) = self.releasing.take() {
            let _ = done.send(());
        }
        myself.stop(Some("handed over to another node".into()));
    }

    /// Puts claimed (or handed-over) notifications in the window, where they wait for a send
    /// slot; the API reports them as pending until then.
    fn take_in(&mut self, claimed: Vec<Claimed>) {
        self.ctx.waiting.add(claimed.iter().map(|n| n.id));
        self.window.extend(claimed);
    }

    /// Offers the controller's learned state for the next checkpoint write.
    fn offer_checkpoint(&mut self) {
        let now = Instant::now();
        self.checkpointed = now;
        if let Some(checkpoint) = self.controller.checkpoint(now) {
            self.ctx
                .checkpoints
                .offer((self.customer.id.clone(), self.channel), checkpoint);
        }
    }

    /// How many notifications each lane's window should hold: what may be sent now plus a
    /// prefetch, so the next sends never wait for a claim.
    fn window_target(&self) -> usize {
        let limit = self.controller.limit();
        let prefetch = self.ctx.settings.prefetch.max(limit / 2);
        limit.saturating_sub(self.in_flight) + prefetch
    }

    /// Asks the claimer to top up lanes that run low (a batch per lane, not a row at a time).
    /// The answer comes back as [`CustomerMsg::Claimed`]; meanwhile the actor keeps recording
    /// finished attempts and sending.
    fn start_claim(&mut self, myself: &ActorRef<CustomerMsg>) {
        if self.claiming {
            return;
        }
        let target = self.window_target();
        let wanted: Vec<(Lane, usize)> = [Lane::Transactional, Lane::Bulk]
            .into_iter()
            .filter(|lane| !self.drained.contains(*lane) && self.window.len(*lane) <= target / 2)
            .map(|lane| (lane, target - self.window.len(lane)))
            .collect();
        if wanted.is_empty() {
            return;
        }
        self.claiming = true;
        self.ctx.claims.ask(ClaimAsk {
            key: (self.customer.id.clone(), self.channel),
            lanes: wanted,
            actor: myself.clone(),
        });
    }

    /// Takes a finished claim into the window.
    fn claimed(
        &mut self,
        myself: &ActorRef<CustomerMsg>,
        result: Result<Vec<LaneClaim>, ClaimError>,
    ) {
        self.claiming = false;
        match result {
            Ok(lanes) => {
                self.claim_failures = 0;
                for LaneClaim {
                    lane,
                    wanted,
                    claimed,
                } in lanes
                {
                    self.drained.set(lane, claimed.len() < wanted);
                    self.take_in(claimed);
                }
            }
            Err(err) => {
                self.claim_failures = self.claim_failures.saturating_add(1);
                let wait = claim_retry_after(self.claim_failures, rand::random::<f64>());
                tracing::warn!(customer_id = %self.customer.id, error = %err, retry_in_ms = wait.as_millis(), "claim failed; retrying after a backoff");
                // Held as if still claiming, so no wake claims again before the backoff is over.
                self.claiming = true;
                myself.send_after(wait, || CustomerMsg::ClaimRetry);
            }
        }
    }

    /// Lets intake hand over as many fresh notifications per lane as the window has room for,
    /// but only in a lane whose store backlog is drained (so nothing overtakes older work), and
    /// none while paused.
    fn grant_handoffs(&self, fenced: bool) {
        let target = self.window_target();
        for lane in [Lane::Transactional, Lane::Bulk] {
            let room = match !fenced && !self.customer.paused && self.drained.contains(lane) {
                true => target.saturating_sub(self.window.len(lane)),
                false => 0,
            };
            self.slot.grant(lane, room);
        }
    }

    /// Starts as many deliveries as the controller permits right now.
    fn send_ready(&mut self, myself: &ActorRef<CustomerMsg>) {
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
                    self.ctx.waiting.remove([notification.id]);
                    if notification.expires_at.is_some_and(|at| at <= now_millis()) {
                        self.expire(myself, notification);
                        continue;
                    }
                    let ticket = self.controller.on_send(now, self.in_flight);
                    self.in_flight += 1;
                    self.start_delivery(myself, notification, ticket);
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

    fn start_delivery(
        &self,
        myself: &ActorRef<CustomerMsg>,
        notification: Claimed,
        ticket: Option<Ticket>,
    ) {
        // Logged as callers and receivers know it, so a log line matches a support request.
        let id = self.ctx.sink.public_id(notification.id);
        let span = tracing::info_span!(
            "delivery",
            customer_id = %notification.customer_id,
            notification_id = %id,
            attempt = notification.attempts,
        );
        let task = delivery::deliver(
            self.ctx.clone(),
            myself.clone(),
            self.customer.clone(),
            self.counters.clone(),
            notification,
            id,
            ticket,
        );
        self.ctx.tasks.spawn(task.instrument(span));
    }

    /// Feeds a finished attempt to the controller and the stats.
    fn finish(&mut self, report: AttemptReport) {
        let now = Instant::now();
        self.in_flight = self.in_flight.saturating_sub(1);
        let delivered = matches!(report.signal, Signal::Success);
        // Unsent (no RTT), the customer system said nothing: not its error.
        let error =
            report.rtt.is_some() && !matches!(report.signal, Signal::Success | Signal::Rejected);
        self.stats.record(now, report.rtt, delivered, error);
        if report.failed {
            self.stats.record_failed();
        }
        self.controller
            .observe(now, report.ticket, report.rtt, report.signal);
        if now.duration_since(self.checkpointed) >= CHECKPOINT_EVERY {
            self.offer_checkpoint();
        }
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
        self.drained = LaneSet::NONE;
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
            && self.unrecorded.is_empty()
            && self.slot.reserved() == 0
            && (self.customer.paused || self.drained == LaneSet::ALL);
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

    /// Closes the handoff slot and returns claimed-but-unsent notifications (the window's and
    /// the slot's) to the store so they need not wait for their lease. A task does the store
    /// write and reports back with [`CustomerMsg::HandedBack`].
    fn hand_back(&mut self, myself: &ActorRef<CustomerMsg>) {
        let key = (self.customer.id.clone(), self.channel);
        let mut unsent = self.ctx.handoffs.unregister(&key, myself.get_id());
        unsent.extend(self.window.drain());
        self.ctx.waiting.remove(unsent.iter().map(|n| n.id));
        if unsent.is_empty() {
            return;
        }
        self.handing_back += 1;
        let myself = myself.clone();
        self.ctx.hand_back(unsent, move |_| {
            // The actor may have stopped meanwhile: nothing to tell.
            let _ = myself.send_message(CustomerMsg::HandedBack);
        });
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
            rtt_baseline: controller.rtt_baseline,
            error_rate: self.stats.error_rate(now),
            in_flight: self.in_flight,
            window: [
                self.window.len(Lane::Transactional),
                self.window.len(Lane::Bulk),
            ],
            circuit: controller.circuit,
            last_tier_change: controller.last_tier_change.map(|change| LastTierChange {
                at: wall_clock(change.at),
                from: change.from,
                to: change.to,
                reason: change.reason,
            }),
            delivered_total: self.stats.delivered_total,
            failed_total: self.stats.failed_total,
            tier_changes_total: self.stats.tier_changes_total,
        }
    }
}

/// The wait before the next claim after `failures` failed in a row: doubling from
/// [`CLAIM_RETRY_BASE`] up to [`CLAIM_RETRY_MAX`], scaled by a jitter of 50–100% (`unit` in 0..1).
fn claim_retry_after(failures: u32, unit: f64) -> Duration {
    let exponential =
        CLAIM_RETRY_BASE.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    exponential
        .min(CLAIM_RETRY_MAX)
        .mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// The customer's rate ceiling as the controller takes it.
fn ceiling(customer: &Customer) -> Option<f64> {
    (customer.max_rate_per_sec > 0).then(|| f64::from(customer.max_rate_per_sec))
}

#[cfg(test)]
mod tests;
