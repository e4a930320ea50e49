//! SMS through a Twilio-style REST API: `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! basic auth `sid:token`, form fields `To`, `From`, `Body`.
//!
//! Twilio's answers are classified here: 201 sent; 429 (code 20429) and 400 with code 30001
//! (queue overflow) mean overload; 5xx are retried; any other 4xx (21211 invalid `To`, 21610
//! unsubscribed recipient) is permanent.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::outbound::Outbound;
use super::payload::{ChannelPayload, SmsPayload};
use super::{RetryCause, SinkError, answer};
use crate::model::{Claimed, SmsSettings};

/// Twilio's code for "too many requests".
const TOO_MANY_REQUESTS: u64 = 20429;
/// Twilio's code for "queue overflow": the account's outbound queue is full.
const QUEUE_OVERFLOW: u64 = 30001;
/// How much of an error answer is read.
const ERROR_BODY_LIMIT: usize = 1024;

/// Delivers text messages.
#[derive(Debug, Clone)]
pub struct SmsSink {
    client: Outbound,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: String,
}

impl SmsSink {
    /// Uses the shared HTTP client.
    pub fn new(client: Outbound) -> Self {
        Self { client }
    }

    /// Makes one delivery attempt of `notification` (recipient: an E.164 number).
    pub async fn deliver(
        &self,
        settings: &SmsSettings,
        notification: &Claimed,
    ) -> Result<(), SinkError> {
        let payload = SmsPayload::for_attempt(notification)?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            settings.base_url.trim_end_matches('/'),
            settings.account_sid
        );
        let request = self
            .client
            .post(url)
            .basic_auth(&settings.account_sid, Some(&settings.auth_token))
            .form(&[
                ("To", notification.recipient.as_str()),
                ("From", settings.from.as_str()),
                ("Body", payload.body.as_str()),
            ]);
        let response = self.client.send("the SMS provider", request).await?;
        let status = response.status();
        let retry_after = answer::retry_after(response.headers());
        let body = answer::read_bounded(response, ERROR_BODY_LIMIT).await;
        classify(status, retry_after, &body)
    }
}

/// The provider's answer as the retry policy needs it.
pub(super) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let error = serde_json::from_str::<ErrorBody>(body).unwrap_or_default();
    let code = error
        .code
        .map_or_else(String::new, |c| format!(" (code {c})"));
    let reason = format!(
        "SMS provider HTTP {status}{code}: {}",
        answer::sanitize(&error.message)
    );
    let cause = match (status, error.code) {
        (_, Some(TOO_MANY_REQUESTS | QUEUE_OVERFLOW)) => Some(RetryCause::Overload),
        (status, _) => answer::retry_cause(status),
    };
    Err(SinkError::refused(reason, cause, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: u64) -> Result<(), SinkError> {
        let body = serde_json::json!({"code": code, "message": "m", "status": status});
        classify(
            StatusCode::from_u16(status).unwrap(),
            None,
            &body.to_string(),
        )
    }

    fn cause(result: Result<(), SinkError>) -> Option<RetryCause> {
        match result {
            Err(SinkError::Retryable { cause, .. }) => Some(cause),
            _ => None,
        }
    }

    #[test]
    fn sms_answers_are_classified() {
        assert_eq!(classify(StatusCode::CREATED, None, "{}"), Ok(()));
        assert_eq!(cause(answer(429, 20429)), Some(RetryCause::Overload));
        assert_eq!(cause(answer(400, 30001)), Some(RetryCause::Overload));
        assert_eq!(cause(answer(500, 20500)), Some(RetryCause::ServerError));
        assert_eq!(
            answer(400, 21211),
            Err(SinkError::Permanent {
                reason: "SMS provider HTTP 400 Bad Request (code 21211): m".into()
            })
        );
        assert!(matches!(
            answer(400, 21610),
            Err(SinkError::Permanent { .. })
        ));
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                ""
            ),
            Err(SinkError::Retryable {
                reason: "SMS provider HTTP 429 Too Many Requests: ".into(),
                cause: RetryCause::Overload,
                retry_after: Some(Duration::from_secs(2)),
            })
        );
    }
}
