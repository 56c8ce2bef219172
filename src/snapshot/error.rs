//! Snapshot errors: one kind per gRPC outcome, with a message that names the culprit.

use crate::error::LedgerError;

/// What kind of failure a snapshot hit; each maps to one `LedgerError` (and gRPC code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotErrorKind {
    /// Not CBOR, the wrong shape, an unknown version, or an entry breaking the rules
    /// (sequence, clock, id, limits). → `InvalidArgument`.
    Invalid,
    /// An entry's payload is over the configured maximum. → `TooLarge`.
    TooLarge,
    /// Well-formed, but a content hash or the root does not match the bytes: the snapshot
    /// was tampered with or corrupted. → `DataLoss`.
    DataLoss,
}

/// A snapshot that cannot be loaded. `Display` is the message alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SnapshotError {
    pub kind: SnapshotErrorKind,
    pub message: String,
}

impl SnapshotError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        SnapshotError {
            kind: SnapshotErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        SnapshotError {
            kind: SnapshotErrorKind::TooLarge,
            message: message.into(),
        }
    }

    pub(crate) fn data_loss(message: impl Into<String>) -> Self {
        SnapshotError {
            kind: SnapshotErrorKind::DataLoss,
            message: message.into(),
        }
    }
}

impl From<SnapshotError> for LedgerError {
    fn from(e: SnapshotError) -> Self {
        match e.kind {
            SnapshotErrorKind::Invalid => LedgerError::InvalidArgument(e.message),
            SnapshotErrorKind::TooLarge => LedgerError::TooLarge(e.message),
            SnapshotErrorKind::DataLoss => LedgerError::DataLoss(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_kind_to_one_ledger_error() {
        assert_eq!(
            LedgerError::from(SnapshotError::invalid("a")),
            LedgerError::InvalidArgument("a".into())
        );
        assert_eq!(
            LedgerError::from(SnapshotError::too_large("b")),
            LedgerError::TooLarge("b".into())
        );
        assert_eq!(
            LedgerError::from(SnapshotError::data_loss("c")),
            LedgerError::DataLoss("c".into())
        );
        assert_eq!(SnapshotError::invalid("msg").to_string(), "msg");
    }
}
