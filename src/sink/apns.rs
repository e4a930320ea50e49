//! Apple Push Notification service over HTTP/2: `POST {base_url}/3/device/{token}` with an ES256
//! provider token (JWT, `kid` = key id, `iss` = team id) that is reused for 50 minutes.
//!
//! APNs's answers are classified here: 429 means overload, 500/503 are retried, an expired
//! provider token (403 `ExpiredProviderToken`) is replaced once, and 410 or a bad device token
//! is permanent. Real APNs is HTTPS (HTTP/2 by ALPN); an `http://` base URL (a local fake) is
//! spoken as h2c with prior knowledge, since APNs has no HTTP/1.1.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::outbound::Outbound;
use super::payload::{ChannelPayload, PushPayload};
use super::{RetryCause, SinkError, answer};
use crate::model::{ApnsSettings, Claimed, Lane, now_millis};

/// Apple refuses tokens older than an hour and throttles ones renewed more often than every 20
/// minutes: renew after 50.
const TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);
/// How much of an error answer is read (`{"reason": "...", "timestamp": ...}`).
const ERROR_BODY_LIMIT: usize = 512;

/// The `.p8` key could not sign a provider token.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign with the APNs private_key_pem: {0}")]
pub struct SigningError(#[from] jsonwebtoken::errors::Error);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

/// A provider token for `settings`, issued now.
pub fn provider_token(settings: &ApnsSettings) -> Result<String, SigningError> {
    let key = EncodingKey::from_ec_pem(settings.private_key_pem.as_bytes())?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(settings.key_id.clone());
    let claims = Claims {
        iss: &settings.team_id,
        iat: now_millis() / 1000,
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// Delivers push notifications through APNs. `Debug` leaves the cached provider tokens out.
pub struct ApnsSink {
    /// For `https://` (production): HTTP/2 negotiated by ALPN.
    tls: Outbound,
    /// For `http://` (local fakes): HTTP/2 without TLS, by prior knowledge.
    h2c: Outbound,
    // std Mutex: never held across an `.await`.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl std::fmt::Debug for ApnsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSink")
            .field("tls", &self.tls)
            .field("h2c", &self.h2c)
            .finish_non_exhaustive()
    }
}

/// One APNs answer, as far as classifying it needs.
#[derive(Debug)]
pub(super) struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    reason: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

impl ApnsSink {
    /// `tls` is the shared HTTPS client; `h2c` speaks HTTP/2 to plain-text fakes.
    pub fn new(tls: Outbound, h2c: Outbound) -> Self {
        Self {
            tls,
            h2c,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Makes one delivery attempt of `notification` (recipient: the hex device token).
    pub async fn deliver(
        &self,
        settings: &ApnsSettings,
        notification: &Claimed,
    ) -> Result<(), SinkError> {
        let payload = PushPayload::for_attempt(notification)?;
        let body = aps_body(&payload);
        let mut answer = self.send(settings, notification, &body).await?;
        if is_stale_token(&answer) {
            self.forget_token(settings);
            answer = self.send(settings, notification, &body).await?;
        }
        classify(&answer)
    }

    async fn send(
        &self,
        settings: &ApnsSettings,
        notification: &Claimed,
        body: &serde_json::Value,
    ) -> Result<Answer, SinkError> {
        let token = self.token(settings)?;
        let base = settings.base_url.trim_end_matches('/');
        let client = if base.starts_with("http://") {
            &self.h2c
        } else {
            &self.tls
        };
        let priority = match notification.lane {
            Lane::Transactional => "10",
            Lane::Bulk => "5",
        };
        let mut request = client
            .post(format!("{base}/3/device/{}", notification.recipient))
            .header("authorization", format!("bearer {token}"))
            .header("apns-topic", &settings.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", priority)
            .json(body);
        if let Some(expires_at) = notification.expires_at {
            // APNs keeps trying an offline device until then, not longer.
            request = request.header("apns-expiration", (expires_at / 1000).to_string());
        }
        let response = client.send("APNs", request).await?;
        let status = response.status();
        let retry_after = answer::retry_after(response.headers());
        let text = answer::read_bounded(response, ERROR_BODY_LIMIT).await;
        Ok(Answer::read(status, retry_after, text))
    }

    /// The cached provider token for this key, or a new one when it is older than 50 minutes.
    fn token(&self, settings: &ApnsSettings) -> Result<String, SinkError> {
        let key = (settings.team_id.clone(), settings.key_id.clone());
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, issued)) = tokens.get(&key)
            && issued.elapsed() < TOKEN_REUSE
        {
            return Ok(token.clone());
        }
        // Signing is a few microseconds of CPU: fine under the lock, and it keeps one token per key.
        let token = provider_token(settings).map_err(|e| SinkError::Permanent {
            reason: e.to_string(),
        })?;
        tokens.insert(key, (token.clone(), Instant::now()));
        Ok(token)
    }

    fn forget_token(&self, settings: &ApnsSettings) {
        let key = (settings.team_id.clone(), settings.key_id.clone());
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// The APNs JSON body: the alert under `aps`, the custom data beside it.
fn aps_body(payload: &PushPayload) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    for (key, value) in &payload.data {
        body.insert(key.clone(), serde_json::Value::String(value.clone()));
    }
    // `aps` is Apple's: a data key of that name must not replace it.
    body.insert(
        "aps".into(),
        serde_json::json!({"alert": {"title": payload.title, "body": payload.body}}),
    );
    serde_json::Value::Object(body)
}

impl Answer {
    /// An answer from its status, `Retry-After` and body text: the body's JSON `reason` (or the
    /// text itself when it is not APNs's JSON), sanitized for `last_error`.
    pub(super) fn read(status: StatusCode, retry_after: Option<Duration>, text: String) -> Self {
        let reason = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.reason)
            .unwrap_or(text);
        Answer {
            status,
            retry_after,
            reason: answer::sanitize(&reason),
        }
    }
}

/// APNs refused the provider token as too old or not yet valid: a new one may be accepted.
fn is_stale_token(answer: &Answer) -> bool {
    answer.status == StatusCode::FORBIDDEN && answer.reason == "ExpiredProviderToken"
}

/// APNs's answer as the retry policy needs it.
pub(super) fn classify(answer: &Answer) -> Result<(), SinkError> {
    if answer.status.is_success() {
        return Ok(());
    }
    let reason = format!("APNs HTTP {}: {}", answer.status, answer.reason);
    let cause = if is_stale_token(answer) {
        // Refused even after a new token (clock skew): retried later.
        Some(RetryCause::ServerError)
    } else {
        // 429 (TooManyRequests, TooManyProviderTokenUpdates) is overload; 410 Unregistered,
        // 400 BadDeviceToken and other 4xx cannot succeed.
        answer::retry_cause(answer.status)
    };
    Err(SinkError::refused(reason, cause, answer.retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::retry_cause_of as cause;

    fn answer(status: u16, reason: &str) -> Result<(), SinkError> {
        classify(&Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            reason: reason.into(),
        })
    }

    #[test]
    fn apns_answers_are_classified() {
        assert_eq!(answer(200, ""), Ok(()));
        assert_eq!(
            cause(answer(429, "TooManyRequests")),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(answer(429, "TooManyProviderTokenUpdates")),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(answer(503, "ServiceUnavailable")),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(answer(500, "InternalServerError")),
            Some(RetryCause::ServerError)
        );
        assert_eq!(
            cause(answer(403, "ExpiredProviderToken")),
            Some(RetryCause::ServerError)
        );
        for (status, reason) in [
            (410, "Unregistered"),
            (400, "BadDeviceToken"),
            (403, "InvalidProviderToken"),
        ] {
            assert_eq!(
                answer(status, reason),
                Err(SinkError::Permanent {
                    reason: format!(
                        "APNs HTTP {}: {reason}",
                        StatusCode::from_u16(status).unwrap()
                    )
                })
            );
        }
    }

    #[test]
    fn data_sits_beside_aps() {
        let payload =
            PushPayload::parse(br#"{"title":"T","body":"B","data":{"k":"v","aps":"x"}}"#).unwrap();
        let body = aps_body(&payload);
        assert_eq!(body["aps"]["alert"]["body"], "B");
        assert_eq!(body["k"], "v");
    }
}
