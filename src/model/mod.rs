//! The domain words of floodgate (docs/architecture.md) as types: customer, notification, lane, state.
//!
//! These are what the store persists and the dispatcher works on; the gRPC layer converts to and from
//! them in `api/convert.rs`, so nothing below the front door depends on protobuf.

mod attempt;
mod channel;
mod customer;
mod lane;
mod notification;
mod preference;
mod template;
mod token;

pub use attempt::{ClaimToken, Claimed, Outcome, OutcomeKind};
pub use channel::{
    ApnsSettings, Channel, ChannelSettings, EmailSettings, EmailTls, FcmSettings, ServiceAccount,
    SmsSettings,
};
pub use customer::{Customer, CustomerId, InvalidId, PreviousSecret, StartTier};
pub use lane::{Lane, LaneSet};
pub use notification::{
    Inserted, NewNotification, Notification, NotificationId, State, TemplateRef,
};
pub use preference::{Preference, RecipientPreferences};
pub use template::{Content, Template};
pub use token::TokenRecord;

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
