//! The API's error type and its one mapping to gRPC status codes.
//!
//! Internal details (SQL, driver messages) are logged, never sent to callers: a client sees the
//! code and a sentence it can act on.

use tonic::{Code, Status};

use crate::intake::{IntakeError, PinError};
use crate::store;

/// Every way an API call can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; `field` names the offending request field.
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the thing it names is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database is unreachable or intake is stopping; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// A limit is reached (storage full, a quota); nothing was stored. Retry later or with less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A fault on our side; details are in the server log.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// Shorthand for an `InvalidArgument` naming `field`.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            problem: problem.into(),
        }
    }

    /// The gRPC code callers see for this error (also what intake metrics count rejections by).
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Internal => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

impl From<store::Error> for Error {
    fn from(err: store::Error) -> Self {
        match err {
            store::Error::Unavailable(_) => {
                Error::Unavailable("database unavailable; try again".into())
            }
            store::Error::Full(_) => {
                tracing::warn!(error = %err, "store is full");
                Error::ResourceExhausted("database storage is full; try again later".into())
            }
            other => {
                tracing::error!(error = %other, "store error");
                Error::Internal
            }
        }
    }
}

impl From<crate::preferences::Error> for Error {
    fn from(err: crate::preferences::Error) -> Self {
        match err {
            crate::preferences::Error::Store(err) => err.into(),
            crate::preferences::Error::Cache(reason) => {
                tracing::warn!(error = %reason, "preference cache unavailable");
                Error::Unavailable("the preference cache is unavailable; try again".into())
            }
        }
    }
}

impl From<crate::templates::Error> for Error {
    /// Outside intake (which names its own fields) a bad template is the `template` field.
    fn from(err: crate::templates::Error) -> Self {
        use crate::templates::Error as T;
        match err {
            T::Store(err) => err.into(),
            T::NotFound(message) => Error::NotFound(message),
            T::Invalid(problem) | T::Render(problem) => Error::invalid("template", problem),
        }
    }
}

impl From<IntakeError> for Error {
    fn from(err: IntakeError) -> Self {
        match err {
            IntakeError::Unavailable(_) => {
                Error::Unavailable("database unavailable; nothing was stored".into())
            }
            IntakeError::Full(detail) => {
                tracing::warn!(error = %detail, "intake: store is full");
                Error::ResourceExhausted(
                    "database storage is full; nothing was stored, try again later".into(),
                )
            }
            IntakeError::ShuttingDown => {
                Error::Unavailable("server is shutting down; nothing was stored".into())
            }
            IntakeError::Storage(detail) => {
                tracing::error!(error = %detail, "intake storage error");
                Error::Internal
            }
            mismatch @ IntakeError::Mismatch { .. } => {
                tracing::error!(error = %mismatch, "intake");
                Error::Internal
            }
        }
    }
}

impl From<PinError> for Error {
    /// Each pinning problem is the request field the caller has to fix.
    fn from(err: PinError) -> Self {
        match err {
            PinError::UnknownTemplate(problem) => Error::invalid("template_id", problem),
            PinError::Variables(problem) => Error::invalid("variables", problem),
            PinError::Channel(problem) => Error::invalid("channel", problem),
            PinError::NotJson => Error::Internal,
            PinError::Templates(other) => other.into(),
        }
    }
}
