//! Delivery attempts: a notification claimed for one attempt, and what became of it.

use super::{Channel, CustomerId, EpochMillis, Lane, NotificationId, TemplateRef};

/// The token of one claim on a notification. Every claim bumps the row's token, and an outcome
/// applies only under the token it was claimed with, so a stale worker (its lease ran out and
/// the row was claimed again) can never overwrite a newer outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimToken(pub i64);

impl ClaimToken {
    /// A row's first claim. Intake stores the notifications it hands straight to their actor
    /// already claimed with it, so their outcomes need no claim of their own.
    pub const FIRST: ClaimToken = ClaimToken(1);
}

/// A notification claimed for one delivery attempt: the fields a sink needs, plus the claim token
/// its outcome must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: NotificationId,
    pub claim: ClaimToken,
    /// Attempts started, this one included.
    pub attempts: u32,
    pub customer_id: CustomerId,
    pub recipient: String,
    pub lane: Lane,
    pub channel: Channel,
    pub payload: Vec<u8>,
    pub created_at: EpochMillis,
    pub expires_at: Option<EpochMillis>,
    /// Rendered at send time with `payload` as the variables, when set.
    pub template: Option<TemplateRef>,
}

/// The result of one delivery attempt, to be recorded against its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: NotificationId,
    pub claim: ClaimToken,
    pub kind: OutcomeKind,
}

/// Where an attempt leaves the notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    /// Try again at `due_at`.
    Retry {
        due_at: EpochMillis,
        error: String,
    },
    /// Permanently failed.
    Failed {
        error: String,
    },
    /// Its `expires_at` passed before it could be sent; never sent.
    Expired,
}
