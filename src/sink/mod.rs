//! Sinks carry one notification to a customer system and say how the attempt went.
//!
//! A sink knows nothing of retries or pacing: it reports each attempt's result (and the caller
//! measures its round-trip time), so the dispatcher sees every attempt's signal unhidden.

pub mod signature;
pub mod webhook;

use std::time::Duration;

/// Why a delivery attempt did not succeed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later: timeouts, connection errors, 408, 429, 5xx.
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// Why, as the controller needs to know it (overload and timeouts mean "slow down").
        cause: RetryCause,
        /// What the customer system asked for with `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: other 4xx, redirects, a malformed customer setting.
    #[error("{reason}")]
    Permanent { reason: String },
}

/// What kind of retryable failure an attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// 429 or 503: the customer system says it is overloaded.
    Overload,
    /// The attempt timed out, or the customer answered 408.
    Timeout,
    /// Connecting failed or the connection broke.
    Connection,
    /// Any other 5xx.
    ServerError,
}
