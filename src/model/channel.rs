//! Channels: how a notification reaches its recipient, and each provider's settings.

use std::fmt;

use crate::redact::Redacted;

/// How a notification reaches its recipient. Discriminants are the proto numbers and the stored
/// values. Every channel but the webhook needs the customer's provider settings
/// ([`ChannelSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Channel {
    Webhook = 1,
    Fcm = 2,
    Apns = 3,
    Email = 4,
    Sms = 5,
}

impl Channel {
    /// Every channel, webhook first.
    pub const ALL: [Channel; 5] = [
        Channel::Webhook,
        Channel::Fcm,
        Channel::Apns,
        Channel::Email,
        Channel::Sms,
    ];

    /// The value stored in `channel` columns.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Reads a stored `channel` column.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Channel::Webhook,
            2 => Channel::Fcm,
            3 => Channel::Apns,
            4 => Channel::Email,
            5 => Channel::Sms,
            _ => return None,
        })
    }

    /// Reads a channel name as `as_str` writes it (CSV sheets, the CLI).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Channel::Webhook,
            Channel::Fcm,
            Channel::Apns,
            Channel::Email,
            Channel::Sms,
        ]
        .into_iter()
        .find(|channel| channel.as_str().eq_ignore_ascii_case(name))
    }

    /// The channel's name in messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Fcm => "fcm",
            Channel::Apns => "apns",
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// A customer's provider settings, one optional block per channel: a channel without its block
/// is refused at intake. Stored as one JSON column, so a new provider field needs no migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChannelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSettings>,
}

impl ChannelSettings {
    /// True when `channel` can be delivered with these settings (the webhook always can).
    pub fn supports(&self, channel: Channel) -> bool {
        match channel {
            Channel::Webhook => true,
            Channel::Fcm => self.fcm.is_some(),
            Channel::Apns => self.apns.is_some(),
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
        }
    }
}

/// Firebase Cloud Messaging (HTTP v1) settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FcmSettings {
    /// `https://fcm.googleapis.com` in production; a local fake in tests.
    pub base_url: String,
    pub service_account: ServiceAccount,
}

/// The fields floodgate uses from a Google service-account JSON key. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    /// RSA private key, PEM (the JSON's `private_key`). Secret.
    pub private_key: String,
    /// The JSON's `private_key_id`, sent as the JWT `kid` when present.
    #[serde(default)]
    pub private_key_id: String,
    /// Where the signed assertion is exchanged for an access token.
    pub token_uri: String,
}

/// Apple Push Notification service settings (token-based authentication). `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ApnsSettings {
    /// `https://api.push.apple.com` in production (`https://api.sandbox.push.apple.com` for
    /// development builds); a local h2c fake in tests.
    pub base_url: String,
    pub team_id: String,
    pub key_id: String,
    /// The ES256 `.p8` key, PKCS#8 PEM. Secret.
    pub private_key_pem: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
}

/// SMTP submission settings. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Empty: no authentication.
    pub username: String,
    /// Secret.
    pub password: String,
    /// The `From` mailbox, e.g. `Acme <no-reply@acme.example>`.
    pub from: String,
    pub tls: EmailTls,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EmailTls {
    /// Plain text (a local relay only).
    None,
    /// Plain connect, then `STARTTLS` (required), usually port 587.
    StartTls,
    /// TLS from the first byte, usually port 465.
    Tls,
}

/// Twilio-style SMS REST settings. `Debug` hides the auth token.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SmsSettings {
    /// `https://api.twilio.com` in production; a local fake in tests.
    pub base_url: String,
    pub account_sid: String,
    /// Secret.
    pub auth_token: String,
    /// The sending number (E.164) or sender id.
    pub from: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key", &Redacted(&self.private_key))
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl fmt::Debug for ApnsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("base_url", &self.base_url)
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .field("private_key_pem", &Redacted(&self.private_key_pem))
            .field("topic", &self.topic)
            .finish()
    }
}

impl fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSettings")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .field("from", &self.from)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSettings")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &Redacted(&self.auth_token))
            .field("from", &self.from)
            .finish()
    }
}
