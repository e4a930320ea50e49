//! One delivery attempt, run as its own task so no actor ever waits on the network: call the
//! sink, decide the notification's next state, queue that outcome, and report the attempt's
//! round-trip time and signal to the customer's actor.

use std::sync::Arc;

use ractor::ActorRef;

use super::ActorContext;
use super::controller::{Signal, Ticket};
use super::messages::{AttemptReport, CustomerMsg};
use super::ports::{Attempts, Io};
use crate::model::{Claimed, Customer, NotificationId, Outcome, OutcomeKind, now_millis};
use crate::sink::{Attempt, RetryCause, Sent, SinkError, Sinks};
use crate::telemetry::metrics::{AttemptResult, CustomerCounters};
use crate::templates::{self, Templates};

/// The real sinks, with templated notifications rendered just before each attempt.
#[derive(Debug)]
pub(super) struct SinkAttempts {
    pub(super) sinks: Sinks,
    pub(super) templates: Arc<Templates>,
}

impl Attempts for SinkAttempts {
    fn public_id(&self, id: NotificationId) -> String {
        self.sinks.public_id(id)
    }

    fn attempt<'a>(&'a self, attempt: Attempt<'a>) -> Io<'a, Sent> {
        Box::pin(async move {
            match self.rendered(attempt.notification).await {
                Ok(rendered) => {
                    let notification = rendered.as_ref().unwrap_or(attempt.notification);
                    self.sinks
                        .deliver(Attempt {
                            notification,
                            ..attempt
                        })
                        .await
                }
                Err(err) => Sent {
                    result: Err(err),
                    rtt: None,
                },
            }
        })
    }
}

/// Makes one attempt of `notification` (public id `id`) and reports it.
pub(super) async fn deliver(
    ctx: Arc<ActorContext>,
    actor: ActorRef<CustomerMsg>,
    customer: Arc<Customer>,
    counters: Arc<CustomerCounters>,
    notification: Claimed,
    id: String,
    ticket: Option<Ticket>,
) {
    // `rtt` is `None` when nothing was sent (the template could not be rendered).
    let attempt = Attempt {
        customer: &customer,
        notification: &notification,
        id: &id,
    };
    let Sent { result, rtt } = ctx.sink.attempt(attempt).await;
    let (kind, signal) = match result {
        Ok(()) => {
            tracing::debug!(rtt_ms = rtt.unwrap_or_default().as_millis(), "delivered");
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
        ticket,
        rtt,
        signal,
        failed,
    }));
}

impl SinkAttempts {
    /// A templated notification with its template rendered into the payload (`None`: not
    /// templated, send it as it is). Versions are immutable and were rendered once at intake, so a
    /// failure here means the version is gone or the store is down: the first fails the
    /// notification, the second is retried. Either way nothing reaches the customer system.
    async fn rendered(&self, notification: &Claimed) -> Result<Option<Claimed>, SinkError> {
        let Some(reference) = &notification.template else {
            return Ok(None);
        };
        let template = self
            .templates
            .version(&notification.customer_id, reference)
            .await
            .map_err(|err| match err {
                templates::Error::Store(err) => SinkError::Retryable {
                    reason: format!("cannot read the template: {err}"),
                    cause: RetryCause::ServerError,
                    retry_after: None,
                },
                other => SinkError::Permanent {
                    reason: other.to_string(),
                },
            })?;
        let permanent = |reason: String| SinkError::Permanent { reason };
        let variables: serde_json::Value = serde_json::from_slice(&notification.payload)
            .map_err(|err| permanent(format!("unreadable template variables: {err}")))?;
        let payload = self
            .templates
            .render(template, notification.channel, variables)
            .await
            .map_err(|err| permanent(err.to_string()))?;
        Ok(Some(Claimed {
            payload,
            ..notification.clone()
        }))
    }
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
