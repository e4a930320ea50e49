//! Customers: a downstream system, how to deliver to it, and where its controller starts.

use std::fmt;

use super::{ChannelSettings, EpochMillis};
use crate::redact::Redacted;
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
