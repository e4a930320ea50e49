//! The domain words of floodgate (docs/architecture.md) as types: customer, notification, lane, state.
//!
//! These are what the store persists and the dispatcher works on; the gRPC layer converts to and from
//! them in `api/convert.rs`, so nothing below the front door depends on protobuf.

use std::fmt;

use crate::redact::Redacted;

/// Milliseconds since the Unix epoch: how every timestamp is stored (portable across SQLite and
/// PostgreSQL as a plain `BIGINT`).
pub type EpochMillis = i64;

/// The current wall-clock time in epoch milliseconds.
pub fn now_millis() -> EpochMillis {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Which queue inside a customer a notification waits in. The discriminants are the proto numbers
/// and the values stored in the database, so ordering by lane puts transactional first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Lane {
    /// The customer's own notifications (bills, one-time codes): always go first.
    Transactional = 1,
    /// Our own campaigns: guaranteed a minimum share, never ahead of transactional.
    Bulk = 2,
}

impl Lane {
    /// The value stored in the `lane` column.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Reads a stored `lane` column; `None` for a value no version of floodgate writes (the
    /// store reports such a row as corrupt rather than guess its lane).
    pub fn from_code(code: i64) -> Option<Self> {
        [Lane::Transactional, Lane::Bulk]
            .into_iter()
            .find(|lane| lane.code() == code)
    }

    /// The lane's position in per-lane arrays (transactional 0, bulk 1).
    pub fn index(self) -> usize {
        match self {
            Lane::Transactional => 0,
            Lane::Bulk => 1,
        }
    }

    /// The lane's name in webhook bodies, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Transactional => "transactional",
            Lane::Bulk => "bulk",
        }
    }
}

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

/// Where a notification is in its life (docs/architecture.md, "states"). Discriminants are the proto numbers and
/// the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending = 1,
    InFlight = 2,
    Delivered = 3,
    Retrying = 4,
    Failed = 5,
    Suppressed = 6,
    Expired = 7,
    Cancelled = 8,
}

impl State {
    /// The value stored in the `state` column.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The state's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in flight",
            State::Delivered => "delivered",
            State::Retrying => "retrying",
            State::Failed => "failed",
            State::Suppressed => "suppressed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    /// Reads a stored `state` column.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => State::Pending,
            2 => State::InFlight,
            3 => State::Delivered,
            4 => State::Retrying,
            5 => State::Failed,
            6 => State::Suppressed,
            7 => State::Expired,
            8 => State::Cancelled,
            _ => return None,
        })
    }
}

/// A notification's row id. Ids grow with time, so "newest first" is "highest id first". It has
/// no `Display` on purpose: callers (and webhook receivers, and logs) see it only as
/// [`crate::public_id::PublicIds`] encodes it, so it cannot be guessed from its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationId(pub i64);

/// A downstream customer system and how to deliver to it. `Debug` hides the signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: String,
    pub webhook_url: String,
    /// Standard Webhooks secret, `whsec_<base64>`.
    pub signing_secret: String,
    /// The secret a rotation replaced, still signed with until it expires so receivers can
    /// switch over without dropping a webhook.
    pub previous_secret: Option<PreviousSecret>,
    /// Hard ceiling in deliveries per second, for each channel; 0 means none.
    pub max_rate_per_sec: u32,
    /// A paused customer is sent nothing; its notifications wait in the store.
    pub paused: bool,
    /// Where the controller starts this customer; `None` starts fast.
    pub start_tier: Option<StartTier>,
    /// Provider credentials for the push, email and SMS channels (each optional).
    pub channels: ChannelSettings,
}

/// A signing secret being retired: webhooks carry its signature next to the current one until
/// `until`, the Standard Webhooks way of rotating without downtime. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// The replaced `whsec_<base64>` secret.
    pub secret: String,
    /// When it stops being signed with.
    pub until: EpochMillis,
}

impl PreviousSecret {
    /// True while webhooks sent at `now` still carry this secret's signature.
    pub fn valid_at(&self, now: EpochMillis) -> bool {
        now < self.until
    }
}

impl fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &Redacted(&self.secret))
            .field("until", &self.until)
            .finish()
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

/// A configured starting speed tier. Discriminants are the proto `Tier` numbers and the stored
/// values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTier {
    Fast = 1,
    Medium = 2,
    Slow = 3,
}

impl StartTier {
    /// The value stored in the `start_tier` column.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Reads a stored `start_tier` column (unknown values: no start tier).
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(StartTier::Fast),
            2 => Some(StartTier::Medium),
            3 => Some(StartTier::Slow),
            _ => None,
        }
    }
}

/// A notification as accepted at the front door, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub customer_id: String,
    pub idempotency_key: String,
    pub recipient: String,
    pub lane: Lane,
    pub payload: Vec<u8>,
    pub send_at: Option<EpochMillis>,
    pub expires_at: Option<EpochMillis>,
    pub channel: Channel,
    /// Why it must not be sent (the recipient opted out), if so: it is stored SUPPRESSED.
    pub suppressed: Option<String>,
    /// The template it is rendered from at send time; `payload` then holds the variables.
    pub template: Option<TemplateRef>,
}

impl NewNotification {
    /// True when `other` asks for the same delivery: what makes a repeated idempotency key a
    /// harmless duplicate rather than a conflict.
    pub fn same_content(&self, recipient: &str, lane: Lane, payload: &[u8]) -> bool {
        self.recipient == recipient && self.lane == lane && self.payload == payload
    }
}

/// A stored notification with everything a reader may ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: NotificationId,
    pub customer_id: String,
    pub idempotency_key: String,
    pub recipient: String,
    pub lane: Lane,
    pub payload: Vec<u8>,
    pub state: State,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub send_at: Option<EpochMillis>,
    pub expires_at: Option<EpochMillis>,
    pub due_at: EpochMillis,
    pub delivered_at: Option<EpochMillis>,
    pub channel: Channel,
    pub template: Option<TemplateRef>,
}

/// One version of one template of a customer: versions never change once saved, so a
/// notification pinned to one renders the same at every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateRef {
    pub id: String,
    pub version: i64,
}

/// One recipient's choice for one channel and lane (`None`: every lane).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preference {
    pub channel: Channel,
    pub lane: Option<Lane>,
    pub opted_out: bool,
    pub updated_at: EpochMillis,
}

/// Everything one recipient of one customer has set, and its version: every change bumps the
/// version, so a cache keeps only the newest set it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientPreferences {
    pub version: i64,
    pub preferences: Vec<Preference>,
}

impl RecipientPreferences {
    /// Why a notification on `channel` in `lane` must not be sent, if the recipient refused it.
    /// A preference for the lane itself wins over one for every lane.
    pub fn refusal(&self, channel: Channel, lane: Lane) -> Option<String> {
        let for_lane = |wanted: Option<Lane>| {
            self.preferences
                .iter()
                .find(|p| p.channel == channel && p.lane == wanted)
        };
        let preference = for_lane(Some(lane)).or_else(|| for_lane(None))?;
        preference.opted_out.then(|| {
            let scope = match preference.lane {
                Some(lane) => format!("{} notifications", lane.as_str()),
                None => "all notifications".to_owned(),
            };
            format!(
                "suppressed: the recipient opted out of {scope} on the {} channel",
                channel.as_str()
            )
        })
    }
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("webhook_url", &self.webhook_url)
            .field("signing_secret", &Redacted(&self.signing_secret))
            .field("previous_secret", &self.previous_secret)
            .field("max_rate_per_sec", &self.max_rate_per_sec)
            .field("paused", &self.paused)
            .field("start_tier", &self.start_tier)
            .field("channels", &self.channels)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_read_back_only_what_was_written() {
        for lane in [Lane::Transactional, Lane::Bulk] {
            assert_eq!(Lane::from_code(lane.code()), Some(lane));
        }
        assert_eq!(Lane::from_code(7), None, "not silently transactional");
    }
}
