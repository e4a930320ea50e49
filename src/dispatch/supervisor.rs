//! The supervisor: owns one customer actor per customer system and channel that has work.
//!
//! It starts an actor on the first wake for a customer and channel (a customer-wide wake reaches
//! every channel the customer has configured), forwards later wakes and settings, lets
//! idle actors stop, and restarts a failed (panicked) actor after a capped exponential backoff.
//! Its handler never waits on I/O: a customer's settings are loaded in a task of their own, and
//! the wakes that arrive meanwhile wait with it, so one slow query never delays another
//! customer's wake.
//! Actors are linked to it but never named: ractor's name registry is process-wide, and tests run
//! several servers in one process. ractor's default reaction to a child's death is to stop the
//! supervisor too; `handle_supervisor_evt` is overridden so one customer's failure touches no other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use super::Context;
use super::checkpoints::parse;
use super::controller::Checkpoint;
use super::customer::{CustomerActor, CustomerArgs};
use super::messages::{ActorKey, CustomerMsg, SupervisorMsg};
use crate::cluster::buckets::bucket_of;
use crate::model::LaneSet;
use crate::model::{Channel, Customer};

/// First restart delay after a failure; doubles per consecutive failure.
const RESTART_BASE: Duration = Duration::from_millis(100);
/// Failures this long apart are not consecutive: the backoff starts over.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

pub(super) struct Supervisor;

pub(super) struct SupervisorState {
    ctx: Arc<Context>,
    /// Per customer, its running actors by channel.
    children: HashMap<String, HashMap<Channel, Child>>,
    by_actor: HashMap<ActorId, ActorKey>,
    failures: HashMap<ActorKey, Failures>,
    /// Customers whose settings are being loaded, with the wakes that wait for them.
    loading: HashMap<String, Vec<(Option<Channel>, LaneSet)>>,
    /// Checkpoints loaded with a customer's settings, for the actors about to start.
    checkpoints: HashMap<ActorKey, Checkpoint>,
    /// Settings that changed while the customer's were being loaded: they win over the load's.
    newer_settings: HashMap<String, Arc<Customer>>,
    /// Shutting down: no new actors.
    draining: bool,
}

struct Child {
    actor: ActorRef<CustomerMsg>,
    /// The settings the actor runs with (kept current by `Settings`): which channels to wake.
    customer: Arc<Customer>,
    wakes_sent: u64,
}

struct Failures {
    count: u32,
    last: Instant,
    restart_pending: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Context>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        ctx: Arc<Context>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            failures: HashMap::new(),
            loading: HashMap::new(),
            checkpoints: HashMap::new(),
            newer_settings: HashMap::new(),
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Wake(customer_id, channel, lanes) => {
                state.wake(&myself, customer_id, channel, lanes).await
            }
            SupervisorMsg::Loaded(customer_id, customer, checkpoints) => {
                state
                    .loaded(&myself, &customer_id, customer, checkpoints)
                    .await
            }
            SupervisorMsg::Settings(customer) => {
                if state.loading.contains_key(&customer.id) {
                    // Newer than what the load under way may return: the actors start with it.
                    state
                        .newer_settings
                        .insert(customer.id.clone(), customer.clone());
                }
                for child in state
                    .children
                    .get_mut(&customer.id)
                    .into_iter()
                    .flat_map(|c| c.values_mut())
                {
                    child.customer = customer.clone();
                    let _ = child
                        .actor
                        .send_message(CustomerMsg::Settings(customer.clone()));
                }
            }
            SupervisorMsg::Retire { key, wakes_seen } => state.retire(&key, wakes_seen),
            SupervisorMsg::Restart(key) => {
                if let Some(failures) = state.failures.get_mut(&key) {
                    failures.restart_pending = false;
                }
                let (customer_id, channel) = key;
                state
                    .wake(&myself, customer_id, Some(channel), LaneSet::ALL)
                    .await;
            }
            SupervisorMsg::ActorsOf(customer_id, reply) => {
                let _ = reply.send(state.actors_of(&customer_id).cloned().collect());
            }
            SupervisorMsg::Actors(reply) => {
                let all = state.children.values().flat_map(|c| c.values());
                let _ = reply.send(all.map(|c| c.actor.clone()).collect());
            }
            SupervisorMsg::ActorsIn(buckets, reply) => {
                let in_buckets = state
                    .children
                    .iter()
                    .filter(|(id, _)| buckets.contains(&bucket_of(id)))
                    .flat_map(|(_, c)| c.values());
                let _ = reply.send(in_buckets.map(|c| c.actor.clone()).collect());
            }
            SupervisorMsg::Drain(reply) => {
                state.drain().await;
                let _ = reply.send(());
            }
            #[cfg(feature = "failpoints")]
            SupervisorMsg::Crash(customer_id) => {
                for actor in state.actors_of(&customer_id) {
                    let _ = actor.send_message(CustomerMsg::Crash);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(key) = state.forget(cell.get_id()) {
                    state.hand_back_slot(&key, cell.get_id());
                    state.schedule_restart(&myself, key, &reason.to_string());
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    /// The running actors of one customer.
    fn actors_of(&self, customer_id: &str) -> impl Iterator<Item = &ActorRef<CustomerMsg>> {
        self.children
            .get(customer_id)
            .into_iter()
            .flat_map(|c| c.values().map(|child| &child.actor))
    }

    /// Wakes the customer's actor for `channel` (every configured channel when `None`),
    /// starting those not running unless a restart is already scheduled. A customer with no
    /// running actor has its settings loaded first, in a task (see [`Self::loaded`]).
    async fn wake(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer_id: String,
        channel: Option<Channel>,
        lanes: LaneSet,
    ) {
        if self.draining {
            return;
        }
        // A running actor's settings say which channels exist, without asking the directory.
        let known = self
            .children
            .get(&customer_id)
            .and_then(|c| c.values().next())
            .map(|c| c.customer.clone());
        match known {
            Some(customer) => self.wake_customer(myself, &customer, channel, lanes).await,
            None => self.load(myself, customer_id, channel, lanes),
        }
    }

    /// Queues a wake for a customer whose settings are not at hand, loading them unless a load
    /// is already under way.
    fn load(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer_id: String,
        channel: Option<Channel>,
        lanes: LaneSet,
    ) {
        if let Some(waiting) = self.loading.get_mut(&customer_id) {
            waiting.push((channel, lanes));
            return;
        }
        self.loading
            .insert(customer_id.clone(), vec![(channel, lanes)]);
        let (ctx, myself) = (self.ctx.clone(), myself.clone());
        self.ctx.shared.tasks.spawn(async move {
            let customer = match ctx.directory.get(&customer_id).await {
                Ok(customer) => customer,
                Err(err) => {
                    tracing::warn!(customer_id = %customer_id, error = %err, "cannot load customer; the next sweep retries");
                    None
                }
            };
            let checkpoints = match customer {
                Some(_) => load_checkpoints(&ctx, &customer_id).await,
                None => Vec::new(),
            };
            let _ = myself.send_message(SupervisorMsg::Loaded(customer_id, customer, checkpoints));
        });
    }

    /// A customer's settings arrived (`None`: unknown, or unreadable for now): the wakes that
    /// waited for them go ahead, and actors they start resume from `checkpoints`.
    async fn loaded(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer_id: &str,
        customer: Option<Arc<Customer>>,
        checkpoints: Vec<(Channel, Checkpoint)>,
    ) {
        let waiting = self.loading.remove(customer_id).unwrap_or_default();
        let newer = self.newer_settings.remove(customer_id);
        let Some(customer) = newer.or(customer) else {
            return;
        };
        if self.draining {
            return;
        }
        self.checkpoints.extend(
            checkpoints
                .into_iter()
                .map(|(channel, checkpoint)| ((customer_id.to_owned(), channel), checkpoint)),
        );
        for (channel, lanes) in waiting {
            self.wake_customer(myself, &customer, channel, lanes).await;
        }
        // Checkpoints for channels that were not started stay stored, not held here.
        self.checkpoints.retain(|(id, _), _| id != customer_id);
    }

    /// Wakes (or starts) the customer's actors on `channel`, or on every configured channel.
    async fn wake_customer(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer: &Arc<Customer>,
        channel: Option<Channel>,
        lanes: LaneSet,
    ) {
        let channels: Vec<Channel> = match channel {
            Some(channel) => vec![channel],
            None => Channel::ALL
                .into_iter()
                .filter(|c| customer.channels.supports(*c))
                .collect(),
        };
        for channel in channels {
            self.wake_one(myself, customer, channel, lanes).await;
        }
    }

    /// A failed actor's handoff slot: closed, and whatever intake had handed it returned to the
    /// store (in a task) and its customer woken again by the restart.
    fn hand_back_slot(&self, key: &ActorKey, actor: ActorId) {
        let unsent = self.ctx.shared.handoffs.unregister(key, actor);
        if !unsent.is_empty() {
            self.ctx.shared.hand_back(unsent, drop);
        }
    }

    async fn wake_one(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer: &Arc<Customer>,
        channel: Channel,
        lanes: LaneSet,
    ) {
        let customer_id = &customer.id;
        if let Some(child) = self
            .children
            .get_mut(customer_id)
            .and_then(|c| c.get_mut(&channel))
        {
            child.wakes_sent += 1;
            let _ = child.actor.send_message(CustomerMsg::Wake(lanes));
            return;
        }
        let key = (customer_id.clone(), channel);
        if self.failures.get(&key).is_some_and(|f| f.restart_pending)
            || !self.ctx.placement.ownership.owns(customer_id)
        {
            return;
        }
        let args = CustomerArgs {
            ctx: self.ctx.shared.clone(),
            customer: customer.clone(),
            channel,
            supervisor: myself.clone(),
            checkpoint: self.checkpoints.remove(&key),
        };
        match CustomerActor::spawn_linked(None, CustomerActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                tracing::debug!(customer_id = %customer_id, channel = channel.as_str(), actor_id = %actor.get_id(), "customer actor started");
                let _ = actor.send_message(CustomerMsg::Wake(LaneSet::ALL));
                self.by_actor.insert(actor.get_id(), key);
                self.children
                    .entry(customer_id.clone())
                    .or_default()
                    .insert(
                        channel,
                        Child {
                            actor,
                            customer: customer.clone(),
                            wakes_sent: 1,
                        },
                    );
            }
            Err(err) => {
                tracing::error!(customer_id = %customer_id, channel = channel.as_str(), error = %err, "cannot start customer actor")
            }
        }
    }

    /// Stops an idle actor, unless a wake was sent to it that it had not yet seen.
    fn retire(&mut self, key: &ActorKey, wakes_seen: u64) {
        let (customer_id, channel) = key;
        if self
            .child(key)
            .is_none_or(|child| child.wakes_sent != wakes_seen)
        {
            return;
        }
        if let Some(child) = self.remove(key) {
            self.by_actor.remove(&child.actor.get_id());
            tracing::debug!(
                customer_id,
                channel = channel.as_str(),
                "customer actor idle; stopping it"
            );
            child.actor.stop(Some("idle".into()));
        }
    }

    /// Forgets a stopped or failed actor; returns its key if it was still the current one.
    fn forget(&mut self, actor_id: ActorId) -> Option<ActorKey> {
        let key = self.by_actor.remove(&actor_id)?;
        let current = self
            .child(&key)
            .is_some_and(|c| c.actor.get_id() == actor_id);
        current.then(|| {
            self.remove(&key);
            key
        })
    }

    fn child(&self, (customer_id, channel): &ActorKey) -> Option<&Child> {
        self.children.get(customer_id)?.get(channel)
    }

    /// Removes one actor's entry (and its customer's, once it has none).
    fn remove(&mut self, (customer_id, channel): &ActorKey) -> Option<Child> {
        let actors = self.children.get_mut(customer_id)?;
        let child = actors.remove(channel);
        if actors.is_empty() {
            self.children.remove(customer_id);
        }
        child
    }

    fn schedule_restart(&mut self, myself: &ActorRef<SupervisorMsg>, key: ActorKey, reason: &str) {
        if self.draining {
            return;
        }
        let now = Instant::now();
        let failures = self.failures.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            restart_pending: false,
        });
        if now.duration_since(failures.last) > FAILURE_MEMORY {
            failures.count = 0;
        }
        failures.count += 1;
        failures.last = now;
        failures.restart_pending = true;
        let delay = RESTART_BASE
            .saturating_mul(2u32.saturating_pow(failures.count - 1))
            .min(self.ctx.shared.settings.restart_backoff_max);
        tracing::error!(
            customer_id = %key.0,
            channel = key.1.as_str(),
            reason,
            failures = failures.count,
            restart_in_ms = delay.as_millis(),
            "customer actor failed; restarting it"
        );
        myself.send_after(delay, move || SupervisorMsg::Restart(key));
    }

    /// Stops every actor and waits for each to hand its window back.
    async fn drain(&mut self) {
        self.draining = true;
        for child in self
            .children
            .drain()
            .flat_map(|(_, actors)| actors.into_values())
        {
            if let Err(err) = child
                .actor
                .stop_and_wait(
                    Some("shutdown".into()),
                    Some(self.ctx.shared.settings.lease),
                )
                .await
            {
                tracing::warn!(error = %err, "customer actor did not stop in time");
            }
        }
        self.by_actor.clear();
    }
}

/// The customer's stored controller checkpoints (none when they cannot be read: the actors then
/// start from slow start, as without checkpoints).
async fn load_checkpoints(ctx: &Context, customer_id: &str) -> Vec<(Channel, Checkpoint)> {
    match ctx.store.load_checkpoints(customer_id).await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|row| Some((row.channel, parse(customer_id, &row.state)?)))
            .collect(),
        Err(err) => {
            tracing::warn!(customer_id, error = %err, "cannot read controller checkpoints; starting from slow start");
            Vec::new()
        }
    }
}
