//! Outcomes the actor records itself (a notification that expired in its window) without ever
//! waiting for the outcome writer: one its full queue refuses is kept, in order, and offered
//! again a moment later; a stopping actor leaves what is still kept to a task. Nothing is lost,
//! and a planned handover is answered only once every kept outcome is with the writer.

use std::time::Duration;

use ractor::ActorRef;

use super::CustomerState;
use crate::dispatch::messages::CustomerMsg;
use crate::model::{Claimed, Outcome, OutcomeKind};

/// How soon outcomes the writer's full queue refused are offered again.
const OUTCOME_RETRY: Duration = Duration::from_millis(20);

impl CustomerState {
    /// Records that `notification` expired before it could be sent.
    pub(super) fn expire(&mut self, myself: &ActorRef<CustomerMsg>, notification: Claimed) {
        self.record(
            myself,
            Outcome {
                id: notification.id,
                claim: notification.claim,
                kind: OutcomeKind::Expired,
            },
        );
    }

    /// Gives an outcome to the writer without waiting. If its queue is full, the outcome is kept
    /// (behind any kept before it) and offered again after [`OUTCOME_RETRY`].
    fn record(&mut self, myself: &ActorRef<CustomerMsg>, outcome: Outcome) {
        self.unrecorded.push_back(outcome);
        if self.unrecorded.len() == 1 {
            self.record_unrecorded(myself);
        }
    }

    /// Offers the kept outcomes to the writer, oldest first, until its queue is full again.
    pub(super) fn record_unrecorded(&mut self, myself: &ActorRef<CustomerMsg>) {
        while let Some(outcome) = self.unrecorded.pop_front() {
            if let Err(outcome) = self.ctx.outcomes.try_record(outcome) {
                self.unrecorded.push_front(outcome);
                myself.send_after(OUTCOME_RETRY, || CustomerMsg::RecordOutcomes);
                return;
            }
        }
    }

    /// A stopping actor's kept outcomes, queued by a task that waits for room.
    pub(super) fn record_in_background(&mut self) {
        if self.unrecorded.is_empty() {
            return;
        }
        let (ctx, outcomes) = (self.ctx.clone(), std::mem::take(&mut self.unrecorded));
        self.ctx.tasks.spawn(async move {
            for outcome in outcomes {
                ctx.outcomes.record(outcome).await;
            }
        });
    }
}
