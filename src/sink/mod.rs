//! Sinks carry one notification to a customer system, or through a provider to its recipient,
//! and say how the attempt went. [`Sinks`] picks one by the notification's channel.
//!
//! A sink knows nothing of retries or pacing: it reports each attempt's result (and the caller
//! measures its round-trip time), so the dispatcher sees every attempt's signal unhidden.

mod answer;
pub mod apns;
pub mod email;
pub mod fcm;
pub mod host_limit;
pub mod oauth;
pub mod outbound;
pub mod payload;
#[cfg(any(test, fuzzing))]
pub mod provider_answer;
pub mod signature;
pub mod sms;
pub mod target_policy;
pub mod webhook;
pub mod webhook_client;

use std::time::Duration;

use tokio::time::Instant;

use crate::model::{Channel, Claimed, Customer, NotificationId};
use crate::public_id::PublicIds;
use host_limit::HostLimit;
use outbound::Outbound;
use webhook::{ClientError, WebhookSettings, WebhookSink};
use webhook_client::WebhookClient;

/// Every sink, and the one choice between them: the notification's channel.
#[derive(Debug)]
pub struct Sinks {
    webhook: WebhookSink,
    fcm: fcm::FcmSink,
    apns: apns::ApnsSink,
    email: email::EmailSink,
    sms: sms::SmsSink,
    /// Bound on a whole attempt (token fetch, connect, SMTP dialogue, response), whatever the
    /// channel: `--webhook-timeout`, which the lease must exceed, so no attempt outlives its
    /// lease and races a redelivery.
    attempt_timeout: Duration,
    /// Notification ids as the outside world sees them (`webhook-id`, Message-ID).
    ids: PublicIds,
    /// `--webhook-max-connections-per-host`: webhooks to one host beyond it wait their turn.
    webhook_hosts: HostLimit,
}

/// What one attempt did, and how long the customer system took to answer it: from the moment
/// the request started (after any wait for its host's cap, which is this node's queue, not the
/// system's round trip) to its result. `rtt` is `None` when nothing was sent.
#[derive(Debug)]
pub struct Sent {
    pub result: Result<(), SinkError>,
    pub rtt: Option<Duration>,
}

impl Sinks {
    /// Builds every sink. The webhook's limits (`settings`) bound every provider's attempts too,
    /// so the lease, which must outlast an attempt, covers them all. `ids` names notifications
    /// to receivers as the API names them to callers.
    pub fn new(settings: &WebhookSettings, ids: PublicIds) -> Result<Self, ClientError> {
        let client = Outbound::new(settings, false)?;
        Ok(Self {
            webhook: WebhookSink::new(WebhookClient::new(settings)?),
            fcm: fcm::FcmSink::new(client.clone()),
            apns: apns::ApnsSink::new(client.clone(), Outbound::new(settings, true)?),
            email: email::EmailSink::new(settings),
            sms: sms::SmsSink::new(client),
            attempt_timeout: settings.timeout,
            ids,
            webhook_hosts: HostLimit::new(settings.max_connections_per_host),
        })
    }

    /// The id receivers see for a notification: what Submit answered, the same on every attempt.
    pub fn public_id(&self, id: NotificationId) -> String {
        self.ids.encode(id)
    }

    /// Makes one delivery attempt on the notification's channel, given up (retryable, as a
    /// timeout) once it has taken longer than the attempt timeout. A webhook first waits for
    /// its host's cap, if one is set, within that same timeout: the lease, which must outlast
    /// an attempt, covers the wait too.
    pub async fn deliver(&self, attempt: Attempt<'_>) -> Sent {
        let deadline = Instant::now() + self.attempt_timeout;
        let url = &attempt.customer.webhook_url;
        let turn = match attempt.notification.channel {
            Channel::Webhook => {
                tokio::time::timeout_at(deadline, self.webhook_hosts.acquire(url)).await
            }
            _ => Ok(None),
        };
        // Every request holding a place started before this one and has the same timeout, and
        // places are handed out in arrival order, so a place frees up before this deadline. The
        // bound still keeps the lease's promise without relying on that reasoning.
        let Ok(_turn) = turn else {
            return Sent {
                result: Err(self.abandoned("waited for a connection to the webhook's host")),
                rtt: None,
            };
        };
        let started = Instant::now();
        let result = match tokio::time::timeout_at(deadline, self.attempt(attempt)).await {
            Ok(result) => result,
            Err(_) => Err(self.abandoned("took")),
        };
        Sent {
            result,
            rtt: Some(started.elapsed()),
        }
    }

    /// The error of an attempt that ran out of time while it `did` (so the retry policy treats
    /// it as a timeout).
    fn abandoned(&self, did: &str) -> SinkError {
        SinkError::Retryable {
            reason: format!(
                "the attempt {did} longer than {:?} and was abandoned",
                self.attempt_timeout
            ),
            cause: RetryCause::Timeout,
            retry_after: None,
        }
    }

    async fn attempt(&self, attempt: Attempt<'_>) -> Result<(), SinkError> {
        let Attempt {
            customer,
            notification,
            id,
        } = attempt;
        crate::failpoints::check(crate::failpoints::point::SINK_SEND).map_err(|err| {
            SinkError::Retryable {
                reason: err.to_string(),
                cause: RetryCause::Connection,
                retry_after: None,
            }
        })?;
        let settings = &customer.channels;
        match notification.channel {
            Channel::Webhook => self.webhook.deliver(attempt).await,
            Channel::Fcm => {
                let fcm = configured(settings.fcm.as_ref(), Channel::Fcm)?;
                self.fcm.deliver(fcm, notification).await
            }
            Channel::Apns => {
                let apns = configured(settings.apns.as_ref(), Channel::Apns)?;
                self.apns.deliver(apns, notification).await
            }
            Channel::Email => {
                let email = configured(settings.email.as_ref(), Channel::Email)?;
                self.email
                    .deliver(&customer.id, email, notification, id)
                    .await
            }
            Channel::Sms => {
                let sms = configured(settings.sms.as_ref(), Channel::Sms)?;
                self.sms.deliver(sms, notification).await
            }
        }
    }
}

/// One delivery attempt as the sinks take it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Whose settings (webhook, credentials) it goes out with.
    pub customer: &'a Customer,
    pub notification: &'a Claimed,
    /// The notification's [public id](Sinks::public_id): what receivers see, the same on every
    /// attempt.
    pub id: &'a str,
}

/// A channel's settings, or a permanent failure: they were removed after the notification was
/// accepted, and nothing can deliver it until the customer is configured again.
fn configured<T>(settings: Option<&T>, channel: Channel) -> Result<&T, SinkError> {
    settings.ok_or_else(|| SinkError::Permanent {
        reason: format!("the customer has no {} settings any more", channel.as_str()),
    })
}

/// Why a delivery attempt did not succeed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later: timeouts, connection errors, 408, 429, 5xx.
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// Why, as the controller needs to know it (overload and timeouts mean "slow down").
        cause: RetryCause,
        /// What the customer system asked for with `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: other 4xx, redirects, a malformed customer setting.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SinkError {
    /// An answer that was not a success: retryable for `cause`, permanent without one (a status
    /// that retrying cannot help, as `answer::retry_cause` says).
    pub(crate) fn refused(
        reason: String,
        cause: Option<RetryCause>,
        retry_after: Option<Duration>,
    ) -> Self {
        match cause {
            Some(cause) => SinkError::Retryable {
                reason,
                cause,
                retry_after,
            },
            None => SinkError::Permanent { reason },
        }
    }
}

/// The cause of a retryable result (`None`: a success, or a permanent failure), for the sinks'
/// classification tests.
#[cfg(test)]
pub(crate) fn retry_cause_of(result: Result<(), SinkError>) -> Option<RetryCause> {
    match result {
        Err(SinkError::Retryable { cause, .. }) => Some(cause),
        _ => None,
    }
}

/// What kind of retryable failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// 429 or 503 (or a provider's own "slow down" answer): the far end is overloaded.
    Overload,
    /// The attempt timed out, or the customer answered 408.
    Timeout,
    /// Connecting failed or the connection broke.
    Connection,
    /// Any other 5xx.
    ServerError,
}
