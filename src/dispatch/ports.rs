//! A customer actor's collaborators, as small traits: the store calls it makes (claims and
//! hand-backs), the sink's send, and the outcome writer. The node plugs in the real ones
//! ([`Claimer`](super::claimer::StoreClaims), [`SinkAttempts`](super::delivery::SinkAttempts),
//! [`OutcomeWriter`](super::outcomes::OutcomeWriter)); tests plug in fakes, so the actor's pump
//! loop runs without a database or a network.
//!
//! None of them makes the actor wait: an ask and a `try_record` return at once, and every future
//! here is awaited in a task of its own, never in a handler.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use super::claimer::ClaimAsk;
use crate::model::{ClaimToken, NotificationId, Outcome};
use crate::sink::{Attempt, Sent};
use crate::store;

/// A boxed future, so the traits stay object safe.
pub(super) type Io<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store as a customer actor uses it.
pub(super) trait ClaimStore: Debug + Send + Sync {
    /// Queues an ask for notifications; the answer comes back as a `Claimed` message.
    fn ask(&self, ask: ClaimAsk);

    /// Returns claimed but unsent notifications (id, claim token) to pending.
    fn release(
        &self,
        held: Vec<(NotificationId, ClaimToken)>,
    ) -> Io<'static, Result<(), store::Error>>;
}

/// The sinks as a delivery task uses them.
pub(super) trait Attempts: Debug + Send + Sync {
    /// The id receivers see for a notification (also the one logged).
    fn public_id(&self, id: NotificationId) -> String;

    /// Makes one attempt.
    fn attempt<'a>(&'a self, attempt: Attempt<'a>) -> Io<'a, Sent>;
}

/// The outcome writer's queue.
pub(super) trait OutcomeQueue: Debug + Send + Sync {
    /// Queues an outcome without waiting; gives it back when the queue is full, so the caller
    /// keeps it and tries again later (a stopped writer takes it: its lease recovers the row).
    fn try_record(&self, outcome: Outcome) -> Result<(), Outcome>;

    /// Queues an outcome, waiting for room: for tasks, never for an actor's handler.
    fn record(&self, outcome: Outcome) -> Io<'_, ()>;
}
