//! How one attempt ended, as the controller sees it: [`Signal`], and the failures among them.

use std::time::Duration;

/// How one delivery attempt ended, as the controller needs to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// 2xx: delivered.
    Success,
    /// 429 or 503: the customer system says it is overloaded; `retry_after` if it said how long.
    Overload {
        /// The customer system's `Retry-After`, if given: nothing is sent before it has passed.
        retry_after: Option<Duration>,
    },
    /// The attempt timed out (a 408 counts as this too).
    Timeout,
    /// Connection refused or reset, DNS failure.
    ConnectionError,
    /// Any other 5xx: counts toward the circuit breaker and the error rate, and as congestion.
    ServerError,
    /// Any other 4xx or a payload error: the notification's fault, not the system's load. Neutral:
    /// it never moves the limit, the rate or the circuit.
    Rejected,
}

impl Signal {
    pub(super) fn failure(self) -> Option<Failure> {
        match self {
            Self::Overload { .. } => Some(Failure::Overload),
            Self::Timeout => Some(Failure::Timeout),
            Self::ConnectionError => Some(Failure::ConnectionError),
            Self::ServerError => Some(Failure::ServerError),
            Self::Success | Self::Rejected => None,
        }
    }
}

/// The failures that count toward the circuit breaker, the error rate and congestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    Overload,
    Timeout,
    ConnectionError,
    ServerError,
}

impl Failure {
    pub(super) const ALL: [Self; 4] = [
        Self::Overload,
        Self::Timeout,
        Self::ConnectionError,
        Self::ServerError,
    ];

    pub(super) const fn index(self) -> usize {
        match self {
            Self::Overload => 0,
            Self::Timeout => 1,
            Self::ConnectionError => 2,
            Self::ServerError => 3,
        }
    }

    pub(super) const fn name(self, plural: bool) -> &'static str {
        match (self, plural) {
            (Self::Overload, false) => "overload answer",
            (Self::Overload, true) => "overload answers",
            (Self::Timeout, false) => "timeout",
            (Self::Timeout, true) => "timeouts",
            (Self::ConnectionError, false) => "connection error",
            (Self::ConnectionError, true) => "connection errors",
            (Self::ServerError, false) => "server error",
            (Self::ServerError, true) => "server errors",
        }
    }
}
