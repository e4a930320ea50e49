//! Customers: a downstream system, how to deliver to it, and where its controller starts.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use super::{ChannelSettings, EpochMillis};
use crate::redact::Redacted;

/// A customer system's id, checked once where it enters (the API edge, or a stored row): 1 to
/// [`CustomerId::MAX_LEN`] letters, digits, `-`, `_` or `.`, so it is safe in URLs, metric labels
/// and log lines wherever it goes. It reads as a `&str` (`Deref`, `Borrow`), so code that only
/// looks at an id takes `&str` and needs no conversion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

/// Why a string is not a customer id; the message completes "the field …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {} characters", CustomerId::MAX_LEN)]
    TooLong,
    #[error("may hold only letters, digits, '-', '_' and '.'")]
    Character,
}

impl CustomerId {
    /// Longest id, in characters.
    pub const MAX_LEN: usize = 128;

    /// Checks `id` against the rule for ids without taking it (the same rule names templates
    /// and scoped tokens).
    pub fn check(id: &str) -> Result<(), InvalidId> {
        if id.is_empty() {
            return Err(InvalidId::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(InvalidId::TooLong);
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(InvalidId::Character);
        }
        Ok(())
    }

    /// `id` as a customer id, if it is one.
    pub fn parse(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        Self::check(&id)?;
        Ok(Self(id))
    }

    /// An id the store read back: it was checked when it was written, and the store reports
    /// rows as they are rather than refuse a whole claim over one of them.
    pub(crate) fn from_stored(id: String) -> Self {
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for CustomerId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for CustomerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<CustomerId> for String {
    fn from(id: CustomerId) -> Self {
        id.0
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_once_at_parse() {
        assert_eq!(
            CustomerId::parse("acme-1.eu_west").map(String::from),
            Ok("acme-1.eu_west".to_owned())
        );
        assert_eq!(CustomerId::parse(""), Err(InvalidId::Empty));
        assert_eq!(CustomerId::parse("a".repeat(129)), Err(InvalidId::TooLong));
        assert!(CustomerId::parse("a".repeat(128)).is_ok());
        assert_eq!(CustomerId::parse("a/b"), Err(InvalidId::Character));
        let id = CustomerId::parse("acme").unwrap();
        assert_eq!((&*id, id.to_string()), ("acme", "acme".to_owned()));
    }
}
