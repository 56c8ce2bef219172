//! `LedgerError` → `tonic::Status`, in one place.

use crate::error::LedgerError;
use tonic::{Code, Status};

pub fn to_status(e: LedgerError) -> Status {
    let code = match &e {
        LedgerError::InvalidArgument(_) => Code::InvalidArgument,
        LedgerError::TooLarge(_) => Code::ResourceExhausted,
        LedgerError::NotFound(_) => Code::NotFound,
        LedgerError::AlreadyExists(_) => Code::AlreadyExists,
        LedgerError::FailedPrecondition(_) => Code::FailedPrecondition,
        LedgerError::DataLoss(_) => Code::DataLoss,
        LedgerError::Unavailable(_) => Code::Unavailable,
        LedgerError::Internal(m) => {
            tracing::error!(error = %m, "internal error answered to a client");
            Code::Internal
        }
    };
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code_and_keeps_its_message() {
        let cases = [
            (
                LedgerError::InvalidArgument("a".into()),
                Code::InvalidArgument,
            ),
            (LedgerError::TooLarge("b".into()), Code::ResourceExhausted),
            (LedgerError::NotFound("c".into()), Code::NotFound),
            (LedgerError::AlreadyExists("d".into()), Code::AlreadyExists),
            (
                LedgerError::FailedPrecondition("e".into()),
                Code::FailedPrecondition,
            ),
            (LedgerError::DataLoss("f".into()), Code::DataLoss),
            (LedgerError::Unavailable("g".into()), Code::Unavailable),
            (LedgerError::Internal("h".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            let s = to_status(e);
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), msg);
        }
    }
}
