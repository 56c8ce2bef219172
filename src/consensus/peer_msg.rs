//! Appends forwarded between nodes: a node that is not its group's leader hands an append
//! to the leader it knows, and the leader answers with the outcome. Pure: versioned CBOR
//! (serde + ciborium), carried over the cluster link beside the Raft frames of `wire`.
//!
//! Frames are told apart by their first byte: `wire`'s Raft frames start with their
//! version (1); these start with [`PEER_MSG_TAG`], then the CBOR of a [`PeerMsg`] with its
//! own version field. A frame of another version is refused, naming both versions; the
//! forwarding node then times out and answers UNAVAILABLE (never a wrong outcome).

use super::leader_writer::NewEntry;
use super::member::Outcome;
use crate::error::LedgerError;
use crate::model::Metadata;
use crate::storage::{decode_entry, encode_entry_into};
use serde::{Deserialize, Serialize};

/// The first byte of a forwarded-append frame (a Raft frame starts with 1).
pub const PEER_MSG_TAG: u8 = 0xF1;
pub const PEER_MSG_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// Append `entry` to `context` of `group`, as its leader; answer with `id`.
    Forward {
        id: u64,
        group: u64,
        context: String,
        entry: NewEntry,
    },
    /// The outcome of forwarded append `id`.
    Answer { id: u64, outcome: Outcome },
}

#[derive(Serialize, Deserialize)]
struct Frame {
    v: u8,
    msg: WireMsg,
}

#[derive(Serialize, Deserialize)]
enum WireMsg {
    Forward {
        id: u64,
        group: u64,
        context: String,
        key: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: u64,
        idempotency_key: String,
    },
    Answer {
        id: u64,
        outcome: WireOutcome,
    },
}

#[derive(Serialize, Deserialize)]
enum WireOutcome {
    Acked {
        sequence: u64,
        /// The entry as storage encodes it.
        #[serde(with = "serde_bytes")]
        entry: Vec<u8>,
        duplicate: bool,
    },
    NotLeader {
        hint: u64,
    },
    Retry(String),
    Failed {
        code: String,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMsgError {
    #[error("forwarded-append frame version {0}, this node reads version {PEER_MSG_VERSION}")]
    Version(u8),
    #[error("undecodable forwarded-append frame: {0}")]
    Corrupt(String),
}

/// Whether `frame` is a forwarded-append frame (else a Raft frame).
pub fn is_peer_msg(frame: &[u8]) -> bool {
    frame.first() == Some(&PEER_MSG_TAG)
}

fn error_parts(e: &LedgerError) -> (&'static str, String) {
    let code = match e {
        LedgerError::InvalidArgument(_) => "invalid_argument",
        LedgerError::TooLarge(_) => "too_large",
        LedgerError::NotFound(_) => "not_found",
        LedgerError::AlreadyExists(_) => "already_exists",
        LedgerError::FailedPrecondition(_) => "failed_precondition",
        LedgerError::DataLoss(_) => "data_loss",
        LedgerError::Unavailable(_) => "unavailable",
        LedgerError::Internal(_) => "internal",
    };
    (code, e.to_string())
}

fn error_from(code: &str, message: String) -> LedgerError {
    match code {
        "invalid_argument" => LedgerError::InvalidArgument(message),
        "too_large" => LedgerError::TooLarge(message),
        "not_found" => LedgerError::NotFound(message),
        "already_exists" => LedgerError::AlreadyExists(message),
        "failed_precondition" => LedgerError::FailedPrecondition(message),
        "data_loss" => LedgerError::DataLoss(message),
        "unavailable" => LedgerError::Unavailable(message),
        _ => LedgerError::Internal(message),
    }
}

pub fn encode(msg: &PeerMsg) -> Vec<u8> {
    let wire = match msg {
        PeerMsg::Forward {
            id,
            group,
            context,
            entry,
        } => WireMsg::Forward {
            id: *id,
            group: *group,
            context: context.clone(),
            key: entry.key.clone(),
            payload: entry.payload.to_vec(),
            metadata: entry.metadata.clone(),
            received_lamport_clock: entry.received_lamport_clock,
            idempotency_key: entry.idempotency_key.clone(),
        },
        PeerMsg::Answer { id, outcome } => WireMsg::Answer {
            id: *id,
            outcome: match outcome {
                Outcome::Acked { entry, duplicate } => {
                    let mut value = Vec::new();
                    encode_entry_into(&mut value, entry);
                    WireOutcome::Acked {
                        sequence: entry.sequence,
                        entry: value,
                        duplicate: *duplicate,
                    }
                }
                Outcome::NotLeader { hint } => WireOutcome::NotLeader { hint: *hint },
                Outcome::Retry(m) => WireOutcome::Retry(m.clone()),
                Outcome::Failed(e) => {
                    let (code, message) = error_parts(e);
                    WireOutcome::Failed {
                        code: code.into(),
                        message,
                    }
                }
            },
        },
    };
    let mut out = vec![PEER_MSG_TAG];
    ciborium::into_writer(
        &Frame {
            v: PEER_MSG_VERSION,
            msg: wire,
        },
        &mut out,
    )
    .expect("writing CBOR to a Vec cannot fail");
    out
}

pub fn decode(frame: &[u8]) -> Result<PeerMsg, PeerMsgError> {
    let corrupt = |e: String| PeerMsgError::Corrupt(e);
    let body = match frame.split_first() {
        Some((&PEER_MSG_TAG, body)) => body,
        _ => return Err(corrupt("not a forwarded-append frame".into())),
    };
    let f: Frame = ciborium::from_reader(body).map_err(|e| corrupt(e.to_string()))?;
    if f.v != PEER_MSG_VERSION {
        return Err(PeerMsgError::Version(f.v));
    }
    Ok(match f.msg {
        WireMsg::Forward {
            id,
            group,
            context,
            key,
            payload,
            metadata,
            received_lamport_clock,
            idempotency_key,
        } => PeerMsg::Forward {
            id,
            group,
            context,
            entry: NewEntry {
                key,
                payload: payload.into(),
                metadata,
                received_lamport_clock,
                idempotency_key,
            },
        },
        WireMsg::Answer { id, outcome } => PeerMsg::Answer {
            id,
            outcome: match outcome {
                WireOutcome::Acked {
                    sequence,
                    entry,
                    duplicate,
                } => Outcome::Acked {
                    entry: decode_entry(sequence, &entry).map_err(|e| corrupt(e.0))?,
                    duplicate,
                },
                WireOutcome::NotLeader { hint } => Outcome::NotLeader { hint },
                WireOutcome::Retry(m) => Outcome::Retry(m),
                WireOutcome::Failed { code, message } => {
                    Outcome::Failed(error_from(&code, message))
                }
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arb_entry;
    use proptest::prelude::*;

    fn round_trip(m: PeerMsg) {
        let bytes = encode(&m);
        assert!(is_peer_msg(&bytes));
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn every_outcome_and_a_forward_round_trip() {
        round_trip(PeerMsg::Forward {
            id: 7,
            group: 3,
            context: "ctx".into(),
            entry: NewEntry {
                key: "k".into(),
                payload: bytes::Bytes::from_static(b"\x00payload"),
                metadata: [("a".to_string(), "b".to_string())].into(),
                received_lamport_clock: 9,
                idempotency_key: "idem".into(),
            },
        });
        for outcome in [
            Outcome::NotLeader { hint: 4 },
            Outcome::Retry("leadership changed".into()),
            Outcome::Failed(LedgerError::AlreadyExists("key reused".into())),
            Outcome::Failed(LedgerError::InvalidArgument("bad".into())),
        ] {
            round_trip(PeerMsg::Answer { id: 1, outcome });
        }
    }

    #[test]
    fn a_raft_frame_is_not_a_peer_msg_and_another_version_is_refused() {
        assert!(!is_peer_msg(
            &super::super::wire::encode(1, &[Default::default()])[0]
        ));
        let mut bytes = vec![PEER_MSG_TAG];
        ciborium::into_writer(
            &Frame {
                v: 9,
                msg: WireMsg::Answer {
                    id: 1,
                    outcome: WireOutcome::NotLeader { hint: 0 },
                },
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(decode(&bytes), Err(PeerMsgError::Version(9)));
    }

    proptest! {
        #[test]
        fn acked_entries_round_trip(entry in arb_entry(), duplicate: bool) {
            round_trip(PeerMsg::Answer { id: 2, outcome: Outcome::Acked { entry, duplicate } });
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut framed = vec![PEER_MSG_TAG];
            framed.extend(bytes);
            let _ = decode(&framed);
        }
    }
}
