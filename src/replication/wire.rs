//! The messages nodes exchange over the `ClusterLink`: versioned CBOR (serde + ciborium).
//!
//! Every frame is a [`Frame`] `{ v: WIRE_VERSION, msg }`; a frame of another version is
//! refused (and logged by the receiver), so a rolling upgrade fails loudly rather than
//! misreading. Entries travel with every field the owner stored (id, sequence, timestamps,
//! Lamport clock, content hash), so a replica stores byte-identical entries and reaches the
//! same Merkle root. Shipments and fetch answers are cut into batches of at most
//! [`FRAME_BYTES_MAX`] (estimated; a single larger entry travels alone).

use crate::error::LedgerError;
use crate::model::{Entry, Hash, Metadata};
use serde::{Deserialize, Serialize};

/// The version this code writes and reads.
pub const WIRE_VERSION: u8 = 1;
/// Target size of one frame's entries.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// `[u8; 32]` as a CBOR byte string.
pub mod hash32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(h)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        <[u8; 32]>::try_from(v.as_slice())
            .map_err(|_| serde::de::Error::custom(format!("hash of {} bytes, not 32", v.len())))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub v: u8,
    pub msg: Msg,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Request {
        id: u64,
        body: Request,
    },
    Response {
        id: u64,
        body: Response,
    },
    /// Committed entries, from the owner to a replica.
    Ship(Shipment),
    /// From a replica to the owner: this context is applied through `sequence`.
    Applied {
        context: String,
        sequence: u64,
        epoch: u64,
    },
    /// The owner's head of a context: a replica that differs syncs.
    Head(Head),
    /// Heads of many contexts, sent to every peer when membership changes.
    Digest(Vec<Head>),
}

/// One node's state of one context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub context: String,
    pub epoch: u64,
    pub size: u64,
    #[serde(with = "hash32")]
    pub root: Hash,
}

impl Head {
    /// This head as `node`'s claim to the context's history (`epoch::authority`).
    pub fn claim_of(&self, node: &str) -> crate::replication::epoch::Claim {
        crate::replication::epoch::Claim {
            node: node.to_string(),
            epoch: self.epoch,
            size: self.size,
            root: self.root,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    pub id: String,
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub sequence: u64,
    pub appended_at_ns: u64,
    pub metadata: Metadata,
    pub lamport_clock: u64,
    #[serde(with = "hash32")]
    pub content_hash: Hash,
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> Self {
        WireEntry {
            id: e.id.clone(),
            key: e.key.clone(),
            payload: e.payload.to_vec(),
            sequence: e.sequence,
            appended_at_ns: e.appended_at_ns,
            metadata: e.metadata.clone(),
            lamport_clock: e.lamport_clock,
            content_hash: e.content_hash,
        }
    }
}

impl From<WireEntry> for Entry {
    fn from(e: WireEntry) -> Self {
        Entry {
            id: e.id,
            key: e.key,
            payload: e.payload.into(),
            sequence: e.sequence,
            appended_at_ns: e.appended_at_ns,
            metadata: e.metadata,
            lamport_clock: e.lamport_clock,
            content_hash: e.content_hash,
        }
    }
}

/// Consecutive committed entries of one context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub context: String,
    pub epoch: u64,
    pub entries: Vec<WireEntry>,
    /// (idempotency key, sequence) pairs of these entries, so a future owner honours them.
    pub idempotency: Vec<(String, u64)>,
    /// The owner's root after the last entry.
    #[serde(with = "hash32")]
    pub root: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReq {
    pub context: String,
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub metadata: Metadata,
    pub received_lamport_clock: u64,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A forwarded append (to the owner).
    Append(AppendReq),
    /// The peer's head of a context.
    State { context: String },
    /// The peer's root of a context at `size`.
    RootAt { context: String, size: u64 },
    /// Entries after `after`, up to about `bytes_max`.
    Fetch {
        context: String,
        after: u64,
        bytes_max: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub entry: WireEntry,
    pub duplicate: bool,
    /// 0 memory, 1 written, 2 fsynced.
    pub durability: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub entries: Vec<WireEntry>,
    pub idempotency: Vec<(String, u64)>,
    /// The peer's head when it answered.
    pub head: Head,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Append(Result<Appended, WireError>),
    State(Result<Head, WireError>),
    RootAt(Result<serde_bytes::ByteBuf, WireError>),
    Fetch(Result<Fetched, WireError>),
}

/// A `LedgerError` across the wire: its kind and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: u8,
    pub message: String,
}

impl From<LedgerError> for WireError {
    fn from(e: LedgerError) -> Self {
        let kind = match &e {
            LedgerError::InvalidArgument(_) => 1,
            LedgerError::TooLarge(_) => 2,
            LedgerError::NotFound(_) => 3,
            LedgerError::AlreadyExists(_) => 4,
            LedgerError::FailedPrecondition(_) => 5,
            LedgerError::DataLoss(_) => 6,
            LedgerError::Unavailable(_) => 7,
            LedgerError::Internal(_) => 8,
        };
        WireError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<WireError> for LedgerError {
    fn from(e: WireError) -> Self {
        let m = e.message;
        match e.kind {
            1 => LedgerError::InvalidArgument(m),
            2 => LedgerError::TooLarge(m),
            3 => LedgerError::NotFound(m),
            4 => LedgerError::AlreadyExists(m),
            5 => LedgerError::FailedPrecondition(m),
            6 => LedgerError::DataLoss(m),
            7 => LedgerError::Unavailable(m),
            _ => LedgerError::Internal(m),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireDecodeError {
    #[error("undecodable frame: {0}")]
    Cbor(String),
    #[error("frame version {0}, this node reads version {WIRE_VERSION}")]
    Version(u8),
}

pub fn encode(msg: Msg) -> bytes::Bytes {
    let mut out = Vec::with_capacity(256);
    let frame = Frame {
        v: WIRE_VERSION,
        msg,
    };
    // Writing CBOR into a Vec cannot fail for these types (no maps with non-string keys
    // that could error, no I/O); an error would leave an empty frame, which decodes to an
    // error on the other side.
    if let Err(e) = ciborium::into_writer(&frame, &mut out) {
        tracing::error!(error = %e, "cannot encode a replication frame");
        out.clear();
    }
    out.into()
}

pub fn decode(bytes: &[u8]) -> Result<Msg, WireDecodeError> {
    let frame: Frame =
        ciborium::from_reader(bytes).map_err(|e| WireDecodeError::Cbor(e.to_string()))?;
    if frame.v != WIRE_VERSION {
        return Err(WireDecodeError::Version(frame.v));
    }
    Ok(frame.msg)
}

/// The estimated encoded size of an entry.
pub fn entry_bytes(e: &Entry) -> usize {
    64 + e.id.len()
        + e.key.len()
        + e.payload.len()
        + e.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
}

/// Splits consecutive entries into runs of at most `bytes_max` estimated bytes each (a
/// single larger entry forms a run of its own). Order is kept; nothing is dropped.
pub fn batches(entries: &[Entry], bytes_max: usize) -> Vec<&[Entry]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let b = entry_bytes(e);
        if i > start && size + b > bytes_max {
            out.push(&entries[start..i]);
            start = i;
            size = 0;
        }
        size += b;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(seq: u64, payload: usize) -> Entry {
        Entry {
            id: format!("id-{seq}"),
            key: "k".into(),
            payload: vec![7u8; payload].into(),
            sequence: seq,
            appended_at_ns: 1_700_000_000_000_000_000 + seq,
            metadata: [("a".to_string(), "b".to_string())].into_iter().collect(),
            lamport_clock: seq * 2,
            content_hash: [seq as u8; 32],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let e = entry(3, 10);
        let head = Head {
            context: "c".into(),
            epoch: 2,
            size: 3,
            root: [9; 32],
        };
        let msgs = vec![
            Msg::Ship(Shipment {
                context: "c".into(),
                epoch: 4,
                entries: vec![(&e).into()],
                idempotency: vec![("k1".into(), 3)],
                root: [1; 32],
            }),
            Msg::Applied {
                context: "c".into(),
                sequence: 3,
                epoch: 4,
            },
            Msg::Head(head.clone()),
            Msg::Digest(vec![head.clone(), head.clone()]),
            Msg::Request {
                id: 1,
                body: Request::Append(AppendReq {
                    context: "c".into(),
                    key: "k".into(),
                    payload: vec![1, 2],
                    metadata: Metadata::new(),
                    received_lamport_clock: 5,
                    idempotency_key: "i".into(),
                }),
            },
            Msg::Request {
                id: 2,
                body: Request::Fetch {
                    context: "c".into(),
                    after: 1,
                    bytes_max: 10,
                },
            },
            Msg::Response {
                id: 2,
                body: Response::Fetch(Ok(Fetched {
                    entries: vec![(&e).into()],
                    idempotency: vec![],
                    head: head.clone(),
                })),
            },
            Msg::Response {
                id: 3,
                body: Response::Append(Err(LedgerError::Unavailable("x".into()).into())),
            },
            Msg::Response {
                id: 4,
                body: Response::RootAt(Ok(serde_bytes::ByteBuf::from(vec![0u8; 32]))),
            },
        ];
        for m in msgs {
            assert_eq!(decode(&encode(m.clone())), Ok(m));
        }
        let back: Entry = WireEntry::from(&e).into();
        assert_eq!(back, e);
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut out = Vec::new();
        ciborium::into_writer(
            &Frame {
                v: 9,
                msg: Msg::Digest(vec![]),
            },
            &mut out,
        )
        .expect("encode");
        assert_eq!(decode(&out), Err(WireDecodeError::Version(9)));
        assert!(matches!(decode(b"\xff\x00"), Err(WireDecodeError::Cbor(_))));
    }

    #[test]
    fn errors_keep_kind_and_message() {
        for e in [
            LedgerError::InvalidArgument("a".into()),
            LedgerError::TooLarge("b".into()),
            LedgerError::NotFound("c".into()),
            LedgerError::AlreadyExists("d".into()),
            LedgerError::FailedPrecondition("e".into()),
            LedgerError::DataLoss("f".into()),
            LedgerError::Unavailable("g".into()),
            LedgerError::Internal("h".into()),
        ] {
            assert_eq!(LedgerError::from(WireError::from(e.clone())), e);
        }
    }

    proptest! {
        #[test]
        fn batches_keep_order_and_bound_size(sizes in proptest::collection::vec(0usize..5000, 0..60), max in 100usize..20_000) {
            let entries: Vec<Entry> = sizes.iter().enumerate().map(|(i, s)| entry(i as u64 + 1, *s)).collect();
            let bs = batches(&entries, max);
            let flat: Vec<u64> = bs.iter().flat_map(|b| b.iter().map(|e| e.sequence)).collect();
            prop_assert_eq!(flat, entries.iter().map(|e| e.sequence).collect::<Vec<_>>());
            for b in &bs {
                prop_assert!(!b.is_empty());
                let total: usize = b.iter().map(entry_bytes).sum();
                prop_assert!(b.len() == 1 || total <= max);
            }
        }
    }
}
