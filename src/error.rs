//! The one error type the ledger's core and actors return. Each variant is something a
//! caller acts on differently; `api::status` maps each to exactly one gRPC code.

use crate::model::ValidationError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The request breaks the contract (a limit, an argument out of range, a malformed blob).
    #[error("{0}")]
    InvalidArgument(String),
    /// The payload (or a snapshot) is larger than the configured maximum.
    #[error("{0}")]
    TooLarge(String),
    /// A sequence, tree size or context that does not exist yet.
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key reused with other content; Load with fail_if_exists on a non-empty context.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the context's state forbids it (a diverging Load).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bytes that do not match their hashes: a tampered or corrupted snapshot or store.
    #[error("{0}")]
    DataLoss(String),
    /// A transient failure (an actor restarting, shutdown, a failed commit): retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected storage failure; logged with its cause.
    #[error("{0}")]
    Internal(String),
}

impl From<ValidationError> for LedgerError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::Invalid(m) => LedgerError::InvalidArgument(m),
            e @ ValidationError::PayloadTooLarge { .. } => LedgerError::TooLarge(e.to_string()),
        }
    }
}

pub type LedgerResult<T> = Result<T, LedgerError>;
