//! The payload each non-webhook channel takes, as JSON: checked at intake, read again by the sink.
//!
//! These shapes are a contract (templates render into them): push
//! `{"title", "body", "data": {"k": "v"}}`, email `{"subject", "body", "html"?}`, SMS `{"body"}`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::SinkError;
use crate::model::Claimed;

/// A push notification (FCM and APNs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushPayload {
    #[serde(default)]
    pub title: String,
    pub body: String,
    /// Custom key/value pairs for the app (FCM allows string values only).
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// An e-mail: plain-text body, optional HTML alternative.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EmailPayload {
    #[serde(default)]
    pub subject: String,
    pub body: String,
    #[serde(default)]
    pub html: Option<String>,
}

/// A text message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SmsPayload {
    pub body: String,
}

/// Why a payload does not fit its channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("is not the channel's JSON: {0}")]
    Json(String),
    #[error("\"body\" must not be empty")]
    EmptyBody,
}

/// What every channel payload has: a body that must not be empty.
pub trait ChannelPayload: DeserializeOwned {
    /// The text every channel must carry.
    fn body(&self) -> &str;

    /// Reads and checks a stored or submitted payload.
    fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        let payload: Self =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
        if payload.body().trim().is_empty() {
            return Err(PayloadError::EmptyBody);
        }
        Ok(payload)
    }

    /// Reads a claimed notification's payload for an attempt: one that does not fit its channel
    /// fails the notification (no retry can fix it).
    fn for_attempt(notification: &Claimed) -> Result<Self, SinkError> {
        Self::parse(&notification.payload).map_err(|e| SinkError::Permanent {
            reason: format!("payload {e}"),
        })
    }
}

impl ChannelPayload for PushPayload {
    fn body(&self) -> &str {
        &self.body
    }
}

impl ChannelPayload for EmailPayload {
    fn body(&self) -> &str {
        &self.body
    }
}

impl ChannelPayload for SmsPayload {
    fn body(&self) -> &str {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_payload_reads_title_body_data() {
        let p =
            PushPayload::parse(br#"{"title":"Hi","body":"Bill due","data":{"k":"v"}}"#).unwrap();
        assert_eq!(p.title, "Hi");
        assert_eq!(p.data["k"], "v");
    }

    #[test]
    fn missing_or_empty_body_is_refused() {
        assert!(matches!(
            SmsPayload::parse(br#"{"text":"x"}"#),
            Err(PayloadError::Json(_))
        ));
        assert_eq!(
            SmsPayload::parse(br#"{"body":"  "}"#),
            Err(PayloadError::EmptyBody)
        );
        assert!(matches!(
            PushPayload::parse(br#"{"body":"x","data":{"n":1}}"#),
            Err(PayloadError::Json(_))
        ));
        assert!(EmailPayload::parse(b"not json").is_err());
    }
}
