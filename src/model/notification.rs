//! Notifications: their states, ids, and what the front door and readers see of them.

use super::{Channel, CustomerId, EpochMillis, Lane};

/// Where a notification is in its life (docs/architecture.md, "states"). Discriminants are the
/// proto numbers and the stored values.
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
/// A notification as accepted at the front door, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub customer_id: CustomerId,
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

/// What became of one submitted notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now under this id.
    New(NotificationId),
    /// The key was already accepted with the same content: the original id, nothing new stored.
    Duplicate(NotificationId),
    /// The key was already accepted with different content (`ALREADY_EXISTS`).
    Conflict(NotificationId),
}
