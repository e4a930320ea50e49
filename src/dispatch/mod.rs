//! Dispatch: from stored notifications to delivery attempts, one actor per customer system and
//! channel.
//!
//! A ractor supervisor owns one `customer` actor per customer system and channel with work
//! (the webhook, and each provider under the customer's credential). Each actor
//! holds a bounded window of claimed notifications, paces itself with its own AIMD
//! [`controller`] (measured round-trip time and errors, not configuration), and sends
//! transactional notifications first while bulk keeps a guaranteed share (`lanes`).
//!
//! Actors never talk to the store one by one: the node's `claimer` fills every actor's window
//! in one statement, the outcome writer records finished attempts in batches, and intake hands
//! fresh notifications straight to actors with room (`handoff`). Intake wakes the customer's
//! actor for the channel after each commit for what it did not hand over. A periodic sweep
//! wakes customers whose work came due in the store (a future `send_at`, a retry backoff) and
//! recovers expired leases.
//!
//! In a cluster only the owner of a customer's bucket runs its actors ([`crate::cluster`]):
//! wakes for customers this node does not own go to their owner, and actors start no claim and
//! no send past the node's fencing deadline. Each actor's learned controller state is saved as a
//! checkpoint and restored when an actor for the same customer starts again, here or elsewhere.
//! The [`Dispatcher`] handle is what the rest of the program holds.

mod checkpoints;
mod claimer;
pub mod controller;
mod customer;
mod delivery;
pub(crate) mod handoff;
mod lanes;
mod messages;
pub mod outcomes;
pub mod policy;
mod ports;
pub mod retry;
mod stats;
mod supervisor;
mod waiting;

use crate::telemetry::metrics::{Metrics, StoreOp};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{BucketHolder, Ownership, Placement, RemoteEvent};
use crate::directory::CustomerDirectory;
use crate::model::Claimed;
use crate::model::{Channel, Customer, Lane, LaneSet, now_millis};
use crate::sink::Sinks;
use crate::store::Store;
pub use crate::telemetry::customer_stats::{CustomerStats, LastTierChange};
use crate::templates::Templates;
use checkpoints::CheckpointWriter;
use claimer::{Claimer, ClaimerTask, StoreClaims};
use controller::ControllerSettings;
use delivery::SinkAttempts;
use handoff::Handoffs;
use messages::{CustomerMsg, SupervisorMsg};
use outcomes::OutcomeWriter;
use policy::PolicySettings;
use ports::{Attempts, ClaimStore, OutcomeQueue};
use retry::RetryPolicy;
use waiting::Waiting;

/// How long a stats request may take before it is answered with nothing.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Tunables of the dispatcher. Every field has a documented default (see `Default`).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// The per-customer controller's settings.
    pub controller: ControllerSettings,
    /// Which pacing policy actors use (adaptive, or a baseline for load tests).
    pub policy: PolicySettings,
    /// Share of a customer's sends guaranteed to the bulk lane while both lanes have work.
    /// Default 0.1 (10%).
    pub bulk_share: f64,
    /// Notifications claimed beyond what may be sent at once, per lane (at least; half the
    /// limit when that is more). Default 4.
    pub prefetch: usize,
    /// How long a claim is leased; a claim older than this is presumed dead and redelivered.
    /// Must exceed the webhook timeout. Default 60 s.
    pub lease: Duration,
    /// How often the store is swept for work that came due and for expired leases. Default 1 s.
    pub sweep_interval: Duration,
    /// An actor with nothing to do for this long stops. Default 60 s.
    pub idle_timeout: Duration,
    /// Cap on the restart backoff of a failing actor. Default 30 s.
    pub restart_backoff_max: Duration,
    /// What happens after a failed attempt.
    pub retry: RetryPolicy,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            controller: ControllerSettings::default(),
            policy: PolicySettings::default(),
            bulk_share: 0.1,
            prefetch: 4,
            lease: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            restart_backoff_max: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// What the supervisor, the sweep and the [`Dispatcher`] handle use: the node's parts, and what
/// its actors share.
#[derive(Debug)]
struct Context {
    store: Store,
    directory: Arc<CustomerDirectory>,
    /// Flushed when buckets are handed over.
    outcomes: OutcomeWriter,
    /// Which customers this node runs actors for, and how to wake the others' owners.
    placement: Placement,
    /// What every customer actor and delivery task shares.
    shared: Arc<ActorContext>,
}

/// What every customer actor and delivery task shares: in-memory state, and the store, the sinks
/// and the outcome writer behind the traits of [`ports`], so the actor can be tested with fakes.
#[derive(Debug)]
struct ActorContext {
    /// Claims (for every actor, in batches) and hand-backs.
    claims: Box<dyn ClaimStore>,
    /// The sinks, templates rendered just before each attempt.
    sink: Box<dyn Attempts>,
    outcomes: Box<dyn OutcomeQueue>,
    /// Running actors' handoff slots.
    handoffs: Arc<Handoffs>,
    settings: DispatchSettings,
    metrics: Arc<Metrics>,
    /// Every delivery task, the claimer and the sweep, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Whether this node may claim and send for a customer now.
    ownership: Arc<Ownership>,
    /// Learned controller state, written in batches.
    checkpoints: CheckpointWriter,
    /// Claimed notifications waiting in a window here, not being sent yet.
    waiting: Waiting,
    /// The store's writers' runtime ([`Store::writers_runtime`]), where hand-backs run: a write
    /// turn held by a task waiting behind the main runtime's sends holds the connection all the
    /// same.
    writers: tokio::runtime::Handle,
}

impl ActorContext {
    /// Returns claimed but unsent notifications to pending (so they need not wait for their
    /// lease) in a task of its own, then gives them to `then`: no handler ever waits for the store.
    fn hand_back(&self, unsent: Vec<Claimed>, then: impl FnOnce(Vec<Claimed>) + Send + 'static) {
        let held: Vec<_> = unsent.iter().map(|n| (n.id, n.claim)).collect();
        let release = self.claims.release(held);
        let handing_back = async move {
            if let Err(err) = release.await {
                tracing::warn!(error = %err, "could not hand back claimed notifications; their leases will");
            }
            then(unsent);
        };
        self.tasks.spawn_on(handing_back, &self.writers);
    }
}

/// Could not start the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("cannot start the supervisor actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
}

/// Handle to the running dispatcher; cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    supervisor: ActorRef<SupervisorMsg>,
    ctx: Arc<Context>,
    /// Stops the sweep at shutdown.
    stop: CancellationToken,
}

impl Dispatcher {
    /// Starts the supervisor and the sweep. On SQLite (one node, file locked) every claim left in
    /// flight by a previous process is released at once; on PostgreSQL other nodes may still hold
    /// theirs, so only expired leases are recovered (and a new owner releases what the former
    /// owner of a bucket held).
    // Each argument is a separate part of the node, built by the caller; a struct would only
    // rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        store: Store,
        directory: Arc<CustomerDirectory>,
        templates: Arc<Templates>,
        sink: Sinks,
        outcomes: OutcomeWriter,
        settings: DispatchSettings,
        metrics: Arc<Metrics>,
        placement: Placement,
    ) -> Result<Self, StartError> {
        if store.is_single_node() {
            let released = store.release_leases(i64::MAX, now_millis()).await?;
            if released > 0 {
                tracing::info!(
                    released,
                    "returned claims left by the previous run to pending"
                );
            }
        }
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (claimer, claiming) = Claimer::new(ClaimerTask {
            store: store.clone(),
            metrics: metrics.clone(),
            lease_ms: millis(settings.lease),
            stop: stop.clone(),
            ownership: placement.ownership.clone(),
        });
        tasks.spawn_on(claiming, store.writers_runtime());
        let shared = Arc::new(ActorContext {
            claims: Box::new(StoreClaims {
                claimer,
                store: store.clone(),
            }),
            sink: Box::new(SinkAttempts {
                sinks: sink,
                templates,
            }),
            outcomes: Box::new(outcomes.clone()),
            handoffs: Arc::new(Handoffs::default()),
            settings,
            metrics,
            tasks,
            ownership: placement.ownership.clone(),
            checkpoints: CheckpointWriter::default(),
            waiting: Waiting::default(),
            writers: store.writers_runtime().clone(),
        });
        let ctx = Arc::new(Context {
            store,
            directory,
            outcomes,
            placement,
            shared,
        });
        let (supervisor, _) =
            supervisor::Supervisor::spawn(None, supervisor::Supervisor, ctx.clone()).await?;
        let dispatcher = Self {
            supervisor,
            ctx,
            stop,
        };
        // Both take turns at the write connection: on the writers' runtime, a turn is not held
        // while its task waits behind the main runtime's delivery tasks.
        let tasks = &dispatcher.ctx.shared.tasks;
        let writers = &dispatcher.ctx.shared.writers;
        tasks.spawn_on(dispatcher.clone().sweep_loop(), writers);
        let (ctx, stop) = (dispatcher.ctx.clone(), dispatcher.stop.clone());
        tasks.spawn_on(
            async move { ctx.shared.checkpoints.run(&ctx.store, stop).await },
            writers,
        );
        Ok(dispatcher)
    }

    /// Whether the notification is claimed by an actor of this node but waits in its window
    /// (paced, behind an open circuit or a pause): no attempt for it is under way.
    pub fn is_waiting(&self, id: crate::model::NotificationId) -> bool {
        self.ctx.shared.waiting.contains(id)
    }

    /// Delivery outcomes waiting for the outcome writer (see [`OutcomeWriter::queued`]).
    pub fn outcomes_queued(&self) -> usize {
        self.ctx.outcomes.queued()
    }

    /// Where this node stands in the cluster.
    pub fn placement(&self) -> &Placement {
        &self.ctx.placement
    }

    /// Where intake hands fresh notifications to running actors.
    pub(crate) fn handoffs(&self) -> &Handoffs {
        &self.ctx.shared.handoffs
    }

    /// How long a claim is leased, in milliseconds: intake leases what it hands over as long.
    pub(crate) fn lease_ms(&self) -> i64 {
        millis(self.ctx.shared.settings.lease)
    }

    /// Returns notifications intake could not hand over after all (their actor stopped meanwhile)
    /// to pending, and wakes their customers: what would have happened without a handoff. Runs in
    /// the background, so intake never waits for it.
    pub(crate) fn hand_back(&self, notifications: Vec<Claimed>) {
        let dispatcher = self.clone();
        self.ctx
            .shared
            .hand_back(notifications, move |notifications| {
                for n in &notifications {
                    dispatcher.wake_lane(&n.customer_id, n.channel, n.lane);
                }
            });
    }

    /// Tells the customer's actors there may be new work (on any channel it has configured),
    /// starting them if none are running.
    pub fn wake(&self, customer_id: &str) {
        self.send_wake(customer_id, None, LaneSet::ALL);
    }

    /// Like [`wake`](Self::wake), for new work on one channel in one lane only.
    pub fn wake_lane(&self, customer_id: &str, channel: Channel, lane: Lane) {
        self.send_wake(customer_id, Some(channel), LaneSet::only(lane));
    }

    /// Wakes the customer's actors here if this node owns the customer, or tells its owner.
    fn send_wake(&self, customer_id: &str, channel: Option<Channel>, lanes: LaneSet) {
        if !self.ctx.placement.ownership.owns(customer_id) {
            if let Some(remote) = &self.ctx.placement.remote_wakes {
                remote.send(RemoteEvent::Work, customer_id);
            }
            return;
        }
        let _ = self.supervisor.send_message(SupervisorMsg::Wake(
            customer_id.to_owned(),
            channel,
            lanes,
        ));
    }

    /// Passes changed customer settings (rate ceiling, paused) to its actor, and wakes it.
    pub fn customer_updated(&self, customer: Arc<Customer>) {
        if !self.ctx.placement.ownership.owns(&customer.id) {
            if let Some(remote) = &self.ctx.placement.remote_wakes {
                remote.send(RemoteEvent::Settings, &customer.id);
            }
            return;
        }
        let id = customer.id.clone();
        let _ = self
            .supervisor
            .send_message(SupervisorMsg::Settings(customer));
        self.wake(&id);
    }

    /// What another node asked for a customer this node owns: wake its actors, or reload its
    /// settings (changed through that node) and pass them on.
    pub fn remote_event(&self, event: RemoteEvent, customer_id: &str) {
        match event {
            RemoteEvent::Work => self.wake(customer_id),
            RemoteEvent::Settings => {
                let (dispatcher, id) = (self.clone(), customer_id.to_owned());
                self.ctx.shared.tasks.spawn(async move {
                    match dispatcher.ctx.directory.reload(&id).await {
                        Ok(Some(customer)) => dispatcher.customer_updated(customer),
                        Ok(None) => {}
                        Err(err) => tracing::warn!(customer_id = %id, error = %err, "cannot reload changed settings; the directory refreshes them within a minute"),
                    }
                });
            }
        }
    }

    /// The customer's current stats (its channels' actors merged), or `None` when no actor is
    /// running for it (it is idle).
    pub async fn stats(&self, customer_id: &str) -> Option<CustomerStats> {
        let id = customer_id.to_owned();
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::ActorsOf(id, reply),
                Some(STATS_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(actors)) => {
                CustomerStats::merge(actor_stats(actors).await)
            }
            _ => None,
        }
    }

    /// Stats of every customer with a running actor.
    pub async fn all_stats(&self) -> Vec<CustomerStats> {
        let actors = match self
            .supervisor
            .call(SupervisorMsg::Actors, Some(STATS_TIMEOUT))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(actors)) => actors,
            _ => return Vec::new(),
        };
        let mut by_customer: std::collections::BTreeMap<String, Vec<CustomerStats>> =
            std::collections::BTreeMap::new();
        for stats in actor_stats(actors).await {
            by_customer
                .entry(stats.customer_id.clone())
                .or_default()
                .push(stats);
        }
        by_customer
            .into_values()
            .filter_map(CustomerStats::merge)
            .collect()
    }

    /// Test hook: makes the customer's actor panic, to exercise supervision. Only with the
    /// `failpoints` feature, so production builds cannot crash an actor on purpose.
    #[cfg(feature = "failpoints")]
    #[doc(hidden)]
    pub fn inject_panic(&self, customer_id: &str) {
        let _ = self
            .supervisor
            .send_message(SupervisorMsg::Crash(customer_id.to_owned()));
    }

    /// Stops claiming (every actor hands its unsent window back to the store) and waits up to
    /// `grace` for deliveries under way. Returns false if the grace period ran out first (their
    /// leases will recover them).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        // One deadline for all three steps: `grace` bounds the whole drain, not each step.
        let deadline = tokio::time::Instant::now() + grace;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        self.stop.cancel();
        let drained = self
            .supervisor
            .call(SupervisorMsg::Drain, Some(left()))
            .await;
        if !matches!(drained, Ok(ractor::rpc::CallResult::Success(()))) {
            tracing::warn!("customer actors did not all stop within the grace period");
        }
        let _ = self.supervisor.stop_and_wait(None, Some(left())).await;
        self.ctx.shared.tasks.close();
        let finished = tokio::time::timeout_at(deadline, self.ctx.shared.tasks.wait())
            .await
            .is_ok();
        let checkpoints = self.ctx.shared.checkpoints.flush(&self.ctx.store);
        let _ = tokio::time::timeout_at(deadline, checkpoints).await;
        finished
    }

    async fn sweep_loop(self) {
        let mut tick = tokio::time::interval(self.ctx.shared.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => self.sweep().await,
            }
        }
    }

    async fn sweep(&self) {
        let started = std::time::Instant::now();
        self.sweep_store().await;
        self.ctx
            .shared
            .metrics
            .store_latency(StoreOp::Sweep, started.elapsed());
    }

    async fn sweep_store(&self) {
        let now = now_millis();
        match self.ctx.store.release_leases(now, now).await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(released, "recovered claims whose lease expired"),
            Err(err) => tracing::warn!(error = %err, "lease recovery failed"),
        }
        // Only the customers this node owns: the others' owners sweep for theirs.
        let ownership = &self.ctx.placement.ownership;
        match self.ctx.store.customers_with_due_work(now).await {
            Ok(customers) => customers
                .iter()
                .filter(|id| ownership.owns(id))
                .for_each(|id| self.wake(id)),
            Err(err) => tracing::warn!(error = %err, "sweep for due work failed"),
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Each actor's stats (an actor that does not answer in time is left out).
async fn actor_stats(actors: Vec<ActorRef<CustomerMsg>>) -> Vec<CustomerStats> {
    let mut all = Vec::with_capacity(actors.len());
    for actor in actors {
        if let Ok(ractor::rpc::CallResult::Success(Some(stats))) =
            actor.call(CustomerMsg::Stats, Some(STATS_TIMEOUT)).await
        {
            all.push(stats);
        }
    }
    all
}

impl BucketHolder for Dispatcher {
    /// A planned handover: every actor of the buckets' customers stops sending, hands its unsent
    /// window back, waits for its attempts under way and stops; then their outcomes and
    /// checkpoints are written, so the next owner finds every row settled and the learned state.
    async fn drain_buckets(&self, buckets: Vec<u16>, within: Duration) {
        let actors = self.actors_in(buckets).await;
        let mut released = Vec::with_capacity(actors.len());
        for actor in actors {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if actor.send_message(CustomerMsg::Release(tx)).is_ok() {
                released.push(rx);
            }
        }
        let all = async {
            for rx in released {
                let _ = rx.await;
            }
        };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                "some attempts of handed-over customers did not end in time; their rows are released by the next owner"
            );
        }
        self.ctx.outcomes.flush().await;
        self.ctx.shared.checkpoints.flush(&self.ctx.store).await;
    }

    fn drop_buckets(&self, buckets: Vec<u16>) {
        let dispatcher = self.clone();
        self.ctx.shared.tasks.spawn(async move {
            for actor in dispatcher.actors_in(buckets).await {
                actor.stop(Some("bucket lost to another node".into()));
            }
        });
    }

    async fn buckets_taken(&self) {
        self.sweep().await;
    }
}

impl Dispatcher {
    /// The running actors of customers in `buckets`.
    async fn actors_in(&self, buckets: Vec<u16>) -> Vec<ActorRef<CustomerMsg>> {
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::ActorsIn(buckets, reply),
                Some(STATS_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(actors)) => actors,
            _ => Vec::new(),
        }
    }
}
