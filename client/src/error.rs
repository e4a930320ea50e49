//! What can go wrong, typed so a caller can tell a bad address from an unreachable server from
//! the server's refusal.

/// A failed connection or call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is neither `host:port` nor an `http://` or `https://` URL with a host.
    #[error("{address:?} is not a server address: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent: it holds characters an HTTP header cannot carry (a line break
    /// from a token file, typically).
    #[error("the token holds characters an HTTP header cannot carry")]
    InvalidToken,
    /// TLS could not be set up for an `https://` address (a CA or client certificate that is
    /// not valid PEM, typically).
    #[error("cannot set up TLS")]
    Tls {
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// Nothing answered at the address (only from [`ClientBuilder::connect`](crate::ClientBuilder::connect)).
    #[error("cannot connect to {address}")]
    Connect {
        /// The URL dialled.
        address: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed: the server's answer, or UNAVAILABLE when it could not be reached, after
    /// `attempts` tries.
    #[error("{call}: {} ({:?})", status.message(), status.code())]
    Status {
        /// The gRPC method, as the proto names it (`Submit`).
        call: &'static str,
        /// How many times the call was made (more than one only for UNAVAILABLE).
        attempts: u32,
        /// The last answer. Not the error's `source`: its `Display` repeats the message above.
        status: tonic::Status,
    },
    /// [`Client::submit_batch`](crate::Client::submit_batch) stopped at a failed call. The first
    /// `accepted` items were submitted; submitting the whole batch again with the same
    /// idempotency keys is safe (those come back as duplicates).
    #[error("{accepted} of {total} items were submitted before a call failed: {source}")]
    Batch {
        /// Items, from the first, whose results came back before the failure.
        accepted: usize,
        /// Items in the batch.
        total: usize,
        /// The failed call.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The gRPC status of a failed call (of the failed call inside a batch), if it was one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status { status, .. } => Some(status),
            Self::Batch { source, .. } => source.status(),
            _ => None,
        }
    }
}
