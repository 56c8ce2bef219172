//! The client's error type and the one rendering of a gRPC status that the CLI, the
//! examples and the tests share.

use std::time::Duration;

/// Why a client could not be built or did not become ready.
///
/// Calls on a connected [`LedgerClient`](super::LedgerClient) return `tonic::Status`
/// directly; this type is for connecting and waiting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a valid `http://host:port` endpoint.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The endpoint is valid but nothing answered there (refused, unreachable, timed out).
    #[error("cannot connect to {url}: {}", transport_cause(.source))]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered a call with an error.
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    /// Something a node sent does not verify (a watch's recomputed root or content hash).
    #[error("verification failed: {0}")]
    Unverified(String),
    /// [`wait_ready`](super::wait_ready) gave up.
    #[error("server at {url} not ready after {waited:.1?}; last attempt: {last}")]
    Timeout {
        url: String,
        waited: Duration,
        last: String,
    },
}

/// An error and its sources joined with ": ", skipping a source that repeats its parent
/// (transport errors are layered and their top level only says "transport error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The cause of a transport error without its uninformative top level ("transport error").
fn transport_cause(e: &tonic::transport::Error) -> String {
    match std::error::Error::source(e) {
        Some(inner) => error_chain(inner),
        None => e.to_string(),
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec ("INVALID_ARGUMENT").
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `<CODE_NAME> (<code number>): <message>`, plus the transport cause when the status
/// carries one (a dropped connection, a refused stream) that the message does not repeat.
pub fn status_line(status: &tonic::Status) -> String {
    let code = status.code();
    let mut line = format!(
        "{} ({}): {}",
        grpc_code_name(code),
        code as i32,
        status.message()
    );
    // Each cause in the chain that the message (or an earlier cause) does not already say.
    let mut cur = std::error::Error::source(status);
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(if line.ends_with(": ") { "" } else { ": " });
            line.push_str(&text);
        }
        cur = cause.source();
    }
    if line.ends_with(": ") {
        line.push_str("(no message)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn status_line_names_code_and_number() {
        let s = Status::new(Code::InvalidArgument, "key is 300 bytes");
        assert_eq!(status_line(&s), "INVALID_ARGUMENT (3): key is 300 bytes");
        let s = Status::new(Code::DataLoss, "root mismatch");
        assert_eq!(status_line(&s), "DATA_LOSS (15): root mismatch");
        assert_eq!(
            ClientError::from(Status::unimplemented("later")).to_string(),
            "UNIMPLEMENTED (12): later"
        );
    }

    #[test]
    fn status_line_adds_only_new_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("error reading a body from connection")]
        struct Body(#[source] std::io::Error);
        let mut s = Status::unknown("h2 protocol error: error reading a body from connection");
        s.set_source(std::sync::Arc::new(Body(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        ))));
        assert_eq!(
            status_line(&s),
            "UNKNOWN (2): h2 protocol error: error reading a body from connection: \
             stream closed because of a broken pipe"
        );
        let mut s = Status::unavailable("");
        s.set_source(std::sync::Arc::new(std::io::Error::other("refused")));
        assert_eq!(status_line(&s), "UNAVAILABLE (14): refused");
        assert_eq!(
            status_line(&Status::internal("")),
            "INTERNAL (13): (no message)"
        );
    }

    #[test]
    fn every_code_has_its_spec_name() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let name = grpc_code_name(code);
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert_eq!(code as i32, n);
        }
        assert_eq!(grpc_code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn error_chain_skips_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&e), "outer: connection refused");
    }
}
