//! Firebase Cloud Messaging, HTTP v1: `POST {base_url}/v1/projects/{project}/messages:send`
//! with an OAuth 2.0 bearer token from the customer's service account ([`oauth`](super::oauth)).
//!
//! FCM's answers are classified here: 429 / `RESOURCE_EXHAUSTED` and 503 / `UNAVAILABLE` mean
//! overload, other 5xx are retried, a refused token (401) is refreshed once, and everything else
//! (`UNREGISTERED`, `INVALID_ARGUMENT`, `SENDER_ID_MISMATCH`) is permanent.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::oauth::TokenCache;
use super::outbound::Outbound;
use super::payload::{ChannelPayload, PushPayload};
use super::{RetryCause, SinkError, answer};
use crate::model::{Claimed, FcmSettings};

/// How much of an error answer is read: enough for FCM's JSON error with its details.
const ERROR_BODY_LIMIT: usize = 4096;

/// Delivers push notifications through FCM.
#[derive(Debug)]
pub struct FcmSink {
    client: Outbound,
    tokens: TokenCache,
}

/// One FCM answer, as far as classifying it needs.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
    pub(super) body: String,
}

impl FcmSink {
    /// Uses the shared HTTP client (HTTP/2 over TLS when FCM offers it).
    pub fn new(client: Outbound) -> Self {
        Self {
            client,
            tokens: TokenCache::default(),
        }
    }

    /// Makes one delivery attempt of `notification` (recipient: the registration token).
    pub async fn deliver(
        &self,
        settings: &FcmSettings,
        notification: &Claimed,
    ) -> Result<(), SinkError> {
        let payload = PushPayload::for_attempt(notification)?;
        let body = message(&notification.recipient, &payload);
        let account = &settings.service_account;
        let mut answer = self.send(settings, &body).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            // The token was revoked or expired early: fetch a new one and try once more.
            self.tokens.invalidate(account).await;
            answer = self.send(settings, &body).await?;
        }
        classify(&answer)
    }

    async fn send(
        &self,
        settings: &FcmSettings,
        body: &serde_json::Value,
    ) -> Result<Answer, SinkError> {
        let account = &settings.service_account;
        let token = self.tokens.token(&self.client, account).await?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            settings.base_url.trim_end_matches('/'),
            account.project_id
        );
        let request = self.client.post(url).bearer_auth(token).json(body);
        let response = self.client.send("FCM", request).await?;
        let status = response.status();
        let retry_after = answer::retry_after(response.headers());
        let body = answer::read_bounded(response, ERROR_BODY_LIMIT).await;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// The `messages:send` body.
fn message(token: &str, payload: &PushPayload) -> serde_json::Value {
    json!({
        "message": {
            "token": token,
            "notification": { "title": payload.title, "body": payload.body },
            "data": payload.data,
        }
    })
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorStatus,
}

#[derive(Deserialize, Default)]
struct ErrorStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

/// FCM's answer as the retry policy needs it.
pub(super) fn classify(answer: &Answer) -> Result<(), SinkError> {
    if answer.status.is_success() {
        return Ok(());
    }
    let error = serde_json::from_str::<ErrorBody>(&answer.body)
        .unwrap_or_default()
        .error;
    // The FCM error code (UNREGISTERED, QUOTA_EXCEEDED, ...) is more precise than the status.
    let code = error
        .details
        .iter()
        .find_map(|d| d.error_code.clone())
        .unwrap_or(error.status);
    let reason = format!(
        "FCM HTTP {} {}: {}",
        answer.status,
        answer::sanitize(&code),
        answer::sanitize(&error.message)
    );
    let cause = match (answer.status, code.as_str()) {
        (_, "RESOURCE_EXHAUSTED" | "QUOTA_EXCEEDED" | "UNAVAILABLE") => Some(RetryCause::Overload),
        (_, "INTERNAL") => Some(RetryCause::ServerError),
        // Still refused after a fresh token: retried later (a key rotation may be under way).
        (StatusCode::UNAUTHORIZED, _) => Some(RetryCause::ServerError),
        (status, _) => answer::retry_cause(status),
    };
    Err(SinkError::refused(reason, cause, answer.retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::retry_cause_of as cause;

    fn answer(status: u16, code: &str, retry_after: Option<u64>) -> Result<(), SinkError> {
        let body = json!({"error": {"code": status, "message": "m", "status": "X",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}});
        classify(&Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
            body: body.to_string(),
        })
    }

    #[test]
    fn fcm_answers_are_classified() {
        assert_eq!(
            classify(&Answer {
                status: StatusCode::OK,
                retry_after: None,
                body: "{}".into()
            }),
            Ok(())
        );
        assert_eq!(
            answer(429, "QUOTA_EXCEEDED", Some(3)),
            Err(SinkError::Retryable {
                reason: "FCM HTTP 429 Too Many Requests QUOTA_EXCEEDED: m".into(),
                cause: RetryCause::Overload,
                retry_after: Some(Duration::from_secs(3)),
            })
        );
        assert_eq!(
            cause(answer(503, "UNAVAILABLE", None)),
            Some(RetryCause::Overload)
        );
        assert_eq!(
            cause(answer(500, "INTERNAL", None)),
            Some(RetryCause::ServerError)
        );
        assert_eq!(
            cause(answer(401, "THIRD_PARTY_AUTH_ERROR", None)),
            Some(RetryCause::ServerError)
        );
        for (status, code) in [
            (404, "UNREGISTERED"),
            (400, "INVALID_ARGUMENT"),
            (403, "SENDER_ID_MISMATCH"),
        ] {
            assert!(matches!(
                answer(status, code, None),
                Err(SinkError::Permanent { .. })
            ));
        }
    }

    #[test]
    fn message_carries_token_notification_and_data() {
        let payload = PushPayload::parse(br#"{"title":"T","body":"B","data":{"k":"v"}}"#).unwrap();
        let m = message("tok", &payload);
        assert_eq!(m["message"]["token"], "tok");
        assert_eq!(m["message"]["notification"]["title"], "T");
        assert_eq!(m["message"]["data"]["k"], "v");
    }
}
