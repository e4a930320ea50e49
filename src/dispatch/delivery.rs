//! One delivery attempt, run as its own task so no actor ever waits on the network: call the
//! sink, decide the notification's next state, queue that outcome, and report the attempt's
//! round-trip time and signal to the customer's actor.

use std::sync::Arc;

use ractor::ActorRef;
use tokio::time::Instant;

use super::Context;
use super::controller::Signal;
use super::messages::{AttemptReport, CustomerMsg};
use crate::model::{Customer, now_millis};
use crate::sink::{RetryCause, SinkError};
use crate::store::{Claimed, Outcome, OutcomeKind};
use crate::telemetry::metrics::{AttemptResult, CustomerCounters};

/// Makes one attempt and reports it.
pub(super) async fn deliver(
    ctx: Arc<Context>,
    actor: ActorRef<CustomerMsg>,
    customer: Arc<Customer>,
    counters: Arc<CustomerCounters>,
    notification: Claimed,
) {
    let started = Instant::now();
    let result = ctx.sink.deliver(&customer, &notification).await;
    let rtt = started.elapsed();
    let (kind, signal) = match result {
        Ok(()) => {
            tracing::debug!(rtt_ms = rtt.as_millis(), "delivered");
            (OutcomeKind::Delivered, Signal::Success)
        }
        Err(SinkError::Permanent { reason }) => {
            tracing::debug!(error = %reason, "delivery failed permanently");
            (OutcomeKind::Failed { error: reason }, Signal::Rejected)
        }
        Err(SinkError::Retryable {
            reason,
            cause,
            retry_after,
        }) => {
            tracing::debug!(error = %reason, "delivery attempt failed");
            let kind = ctx.settings.retry.after_retryable(
                notification.attempts,
                notification.created_at,
                now_millis(),
                retry_after,
                &reason,
                rand::random::<f64>(),
            );
            (kind, signal_of(cause, retry_after))
        }
    };
    let failed = matches!(kind, OutcomeKind::Failed { .. });
    counters.attempt(notification.lane, attempt_result(&kind), rtt);
    ctx.outcomes
        .record(Outcome {
            id: notification.id,
            claim: notification.claim,
            kind,
        })
        .await;
    // The actor may have stopped (shutdown) or failed (it is being restarted): nothing to tell.
    let _ = actor.send_message(CustomerMsg::Done(AttemptReport {
        rtt,
        signal,
        failed,
    }));
}

/// The attempt as the metrics count it: an attempt after which the notification expired (its
/// next try would come too late) ended it, so it counts as failed.
fn attempt_result(kind: &OutcomeKind) -> AttemptResult {
    match kind {
        OutcomeKind::Delivered => AttemptResult::Delivered,
        OutcomeKind::Retry { .. } => AttemptResult::Retried,
        OutcomeKind::Failed { .. } | OutcomeKind::Expired => AttemptResult::Failed,
    }
}

fn signal_of(cause: RetryCause, retry_after: Option<std::time::Duration>) -> Signal {
    match cause {
        RetryCause::Overload => Signal::Overload { retry_after },
        RetryCause::Timeout => Signal::Timeout,
        RetryCause::Connection => Signal::ConnectionError,
        RetryCause::ServerError => Signal::ServerError,
    }
}
