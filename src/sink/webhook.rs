//! Webhook delivery per the Standard Webhooks spec: a signed JSON POST to the customer's URL.
//!
//! One pooled HTTP client serves every customer; each attempt has its own timeout. The answer is
//! classified here (2xx delivered; 408, 429, 5xx, timeouts and connection errors retryable;
//! anything else permanent) and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;

use super::target_policy::TargetPolicy;
use super::webhook_client::WebhookClient;
use super::{Attempt, SinkError};
use super::{answer, signature};
use crate::model::Claimed;
use crate::model::now_millis;

/// Settings of the shared HTTP client.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Limit for one attempt, from connecting to the end of the response headers.
    pub timeout: Duration,
    /// Limit for establishing a connection (part of `timeout`).
    pub connect_timeout: Duration,
    /// Which addresses deliveries may reach.
    pub target_policy: Arc<TargetPolicy>,
    /// Whether SMTP may authenticate over a plain-text connection.
    pub allow_plaintext_smtp_auth: bool,
    /// At most this many webhook requests open to one host at once (see
    /// [`HostLimit`](super::host_limit::HostLimit)); `None` for no cap.
    pub max_connections_per_host: Option<std::num::NonZeroUsize>,
}

/// Could not build an HTTP client (for example, no TLS roots).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the providers' HTTP client: {0}")]
    Providers(#[from] reqwest::Error),
    #[error("cannot set up TLS for the webhook HTTP client: {0}")]
    Tls(#[from] rustls::Error),
}

/// Delivers notifications as Standard Webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    client: WebhookClient,
}

/// The Standard Webhooks headers, named once (a name given as text is parsed on every request).
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The JSON body every webhook carries.
#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    customer_id: &'a str,
    recipient: &'a str,
    lane: &'static str,
    /// The submitted payload: embedded as JSON when it is JSON, else a base64 string.
    payload: Payload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_encoding: Option<&'static str>,
    created_at_ms: i64,
    attempt: u32,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Base64(String),
}

impl WebhookSink {
    /// Uses `client`, which follows no redirect: a webhook goes where it was registered.
    pub fn new(client: WebhookClient) -> Self {
        Self { client }
    }

    /// Makes one delivery attempt to the customer's webhook. The public id is the `webhook-id`
    /// (the same on every attempt, so receivers can drop redeliveries) and the body's `id`, which
    /// is what Submit answered.
    pub async fn deliver(&self, attempt: Attempt<'_>) -> Result<(), SinkError> {
        let Attempt {
            customer,
            notification,
            id,
        } = attempt;
        let key = signature::decode_secret(&customer.signing_secret).map_err(|e| {
            SinkError::Permanent {
                reason: e.to_string(),
            }
        })?;
        let msg_id = id;
        let body = render_body(notification, id);
        let now = now_millis();
        let timestamp = now / 1000;
        let mut signatures = signature::sign(&key, msg_id, timestamp, &body);
        // During a rotation's overlap the replaced secret signs too (space-separated, as
        // Standard Webhooks specifies), so receivers still on the old secret accept the webhook.
        if let Some(previous) = customer
            .previous_secret
            .as_ref()
            .filter(|p| p.valid_at(now))
        {
            let old_key =
                signature::decode_secret(&previous.secret).map_err(|e| SinkError::Permanent {
                    reason: e.to_string(),
                })?;
            signatures.push(' ');
            signatures.push_str(&signature::sign(&old_key, msg_id, timestamp, &body));
        }
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (WEBHOOK_ID, header_value(msg_id)?),
            (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp)),
            (WEBHOOK_SIGNATURE, header_value(&signatures)?),
        ];
        let response = self
            .client
            .post(&customer.webhook_url, headers, body)
            .await?;
        let status = response.status();
        let retry_after = answer::retry_after(response.headers());
        // The body is read only to reuse the connection: whatever the target answers stays out
        // of `last_error`, which submit-token holders read.
        answer::read_body(response.into_body(), 0).await;
        classify_status(status, retry_after)
    }
}

/// A header value made of text floodgate wrote (an id, signatures): always valid, but checked.
fn header_value(text: &str) -> Result<HeaderValue, SinkError> {
    HeaderValue::from_str(text).map_err(|e| SinkError::Permanent {
        reason: format!("invalid webhook header: {e}"),
    })
}

/// The webhook body for one notification, under its public `id`.
fn render_body(notification: &Claimed, id: &str) -> Vec<u8> {
    let payload = serde_json::from_slice::<&RawValue>(&notification.payload);
    let (payload, payload_encoding) = match payload {
        Ok(json) => (Payload::Json(json), None),
        Err(_) => (
            Payload::Base64(STANDARD.encode(&notification.payload)),
            Some("base64"),
        ),
    };
    let body = Body {
        id,
        customer_id: &notification.customer_id,
        recipient: &notification.recipient,
        lane: notification.lane.as_str(),
        payload,
        payload_encoding,
        created_at_ms: notification.created_at,
        attempt: notification.attempts,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A webhook answer as the retry policy needs it. The reason is the status and its reason phrase
/// only, never the body.
pub(super) fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let reason = format!("HTTP {status}");
    Err(SinkError::refused(
        reason,
        answer::retry_cause(status),
        retry_after,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Channel, Lane, NotificationId};

    fn claimed(payload: &[u8]) -> Claimed {
        Claimed {
            id: NotificationId(7),
            claim: crate::model::ClaimToken::FIRST,
            attempts: 1,
            customer_id: crate::model::CustomerId::parse("acme").unwrap(),
            recipient: "user-1".into(),
            lane: Lane::Bulk,
            channel: Channel::Webhook,
            payload: payload.to_vec(),
            created_at: 1000,
            expires_at: None,
            template: None,
        }
    }

    #[test]
    fn json_payloads_are_embedded_and_others_base64() {
        let body: serde_json::Value =
            serde_json::from_slice(&render_body(&claimed(br#"{"a":1}"#), "ntf_x")).unwrap();
        assert_eq!(body["payload"]["a"], 1);
        assert_eq!(body["lane"], "bulk");
        assert_eq!(body["id"], "ntf_x");
        let body: serde_json::Value =
            serde_json::from_slice(&render_body(&claimed(b"\xff\x00"), "ntf_x")).unwrap();
        assert_eq!(body["payload"], "/wA=");
        assert_eq!(body["payload_encoding"], "base64");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(StatusCode::NO_CONTENT, None), Ok(()));
        for code in [408, 429, 500, 503] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                classify_status(status, None),
                Err(SinkError::Retryable { .. })
            ));
        }
        for code in [301, 400, 404, 410] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                classify_status(status, None),
                Err(SinkError::Permanent { .. })
            ));
        }
    }
}
