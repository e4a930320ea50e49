//! The supervisor: owns one customer actor per customer system that has work.
//!
//! It starts an actor on the first wake for a customer, forwards later wakes and settings, lets
//! idle actors stop, and restarts a failed (panicked) actor after a capped exponential backoff.
//! Actors are linked to it but never named: ractor's name registry is process-wide, and tests run
//! several servers in one process. ractor's default reaction to a child's death is to stop the
//! supervisor too; `handle_supervisor_evt` is overridden so one customer's failure touches no other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use super::Context;
use super::customer::{CustomerActor, CustomerArgs};
use super::messages::{ALL_LANES, CustomerMsg, Lanes, SupervisorMsg};

/// First restart delay after a failure; doubles per consecutive failure.
const RESTART_BASE: Duration = Duration::from_millis(100);
/// Failures this long apart are not consecutive: the backoff starts over.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

pub(super) struct Supervisor;

pub(super) struct SupervisorState {
    ctx: Arc<Context>,
    children: HashMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
    failures: HashMap<String, Failures>,
    /// Shutting down: no new actors.
    draining: bool,
}

struct Child {
    actor: ActorRef<CustomerMsg>,
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
            SupervisorMsg::Wake(customer_id, lanes) => {
                state.wake(&myself, customer_id, lanes).await
            }
            SupervisorMsg::Settings(customer) => {
                if let Some(child) = state.children.get(&customer.id) {
                    let _ = child.actor.send_message(CustomerMsg::Settings(customer));
                }
            }
            SupervisorMsg::Retire {
                customer_id,
                wakes_seen,
            } => state.retire(&customer_id, wakes_seen),
            SupervisorMsg::Restart(customer_id) => {
                if let Some(failures) = state.failures.get_mut(&customer_id) {
                    failures.restart_pending = false;
                }
                state.wake(&myself, customer_id, ALL_LANES).await;
            }
            SupervisorMsg::Stats(customer_id, reply) => match state.children.get(&customer_id) {
                // The actor answers the caller directly.
                Some(child) => {
                    let _ = child.actor.send_message(CustomerMsg::Stats(reply));
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            SupervisorMsg::Actors(reply) => {
                let _ = reply.send(state.children.values().map(|c| c.actor.clone()).collect());
            }
            SupervisorMsg::Drain(reply) => {
                state.drain().await;
                let _ = reply.send(());
            }
            SupervisorMsg::Crash(customer_id) => {
                if let Some(child) = state.children.get(&customer_id) {
                    let _ = child.actor.send_message(CustomerMsg::Crash);
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
                if let Some(customer_id) = state.forget(cell.get_id()) {
                    state.schedule_restart(&myself, customer_id, &reason.to_string());
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
    /// Wakes the customer's actor, starting one unless a restart is already scheduled.
    async fn wake(&mut self, myself: &ActorRef<SupervisorMsg>, customer_id: String, lanes: Lanes) {
        if self.draining {
            return;
        }
        if let Some(child) = self.children.get_mut(&customer_id) {
            child.wakes_sent += 1;
            let _ = child.actor.send_message(CustomerMsg::Wake(lanes));
            return;
        }
        if self
            .failures
            .get(&customer_id)
            .is_some_and(|f| f.restart_pending)
        {
            return;
        }
        let customer = match self.ctx.directory.get(&customer_id).await {
            Ok(Some(customer)) => customer,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(customer_id = %customer_id, error = %err, "cannot load customer; the next sweep retries");
                return;
            }
        };
        let args = CustomerArgs {
            ctx: self.ctx.clone(),
            customer,
            supervisor: myself.clone(),
        };
        match CustomerActor::spawn_linked(None, CustomerActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                tracing::debug!(customer_id = %customer_id, actor_id = %actor.get_id(), "customer actor started");
                let _ = actor.send_message(CustomerMsg::Wake(ALL_LANES));
                self.by_actor.insert(actor.get_id(), customer_id.clone());
                self.children.insert(
                    customer_id,
                    Child {
                        actor,
                        wakes_sent: 1,
                    },
                );
            }
            Err(err) => {
                tracing::error!(customer_id = %customer_id, error = %err, "cannot start customer actor")
            }
        }
    }

    /// Stops an idle actor, unless a wake was sent to it that it had not yet seen.
    fn retire(&mut self, customer_id: &str, wakes_seen: u64) {
        let Some(child) = self.children.get(customer_id) else {
            return;
        };
        if child.wakes_sent != wakes_seen {
            return;
        }
        if let Some(child) = self.children.remove(customer_id) {
            self.by_actor.remove(&child.actor.get_id());
            tracing::debug!(customer_id, "customer actor idle; stopping it");
            child.actor.stop(Some("idle".into()));
        }
    }

    /// Forgets a stopped or failed actor; returns its customer if it was still the current one.
    fn forget(&mut self, actor_id: ActorId) -> Option<String> {
        let customer_id = self.by_actor.remove(&actor_id)?;
        let current = self
            .children
            .get(&customer_id)
            .is_some_and(|c| c.actor.get_id() == actor_id);
        current.then(|| {
            self.children.remove(&customer_id);
            customer_id
        })
    }

    fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        customer_id: String,
        reason: &str,
    ) {
        if self.draining {
            return;
        }
        let now = Instant::now();
        let failures = self
            .failures
            .entry(customer_id.clone())
            .or_insert(Failures {
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
            .min(self.ctx.settings.restart_backoff_max);
        tracing::error!(
            customer_id = %customer_id,
            reason,
            failures = failures.count,
            restart_in_ms = delay.as_millis(),
            "customer actor failed; restarting it"
        );
        myself.send_after(delay, move || SupervisorMsg::Restart(customer_id));
    }

    /// Stops every actor and waits for each to hand its window back.
    async fn drain(&mut self) {
        self.draining = true;
        for (_, child) in self.children.drain() {
            if let Err(err) = child
                .actor
                .stop_and_wait(Some("shutdown".into()), Some(self.ctx.settings.lease))
                .await
            {
                tracing::warn!(error = %err, "customer actor did not stop in time");
            }
        }
        self.by_actor.clear();
    }
}
