//! An entry as the ledger stores, streams, snapshots and proves it.

use bytes::Bytes;
use std::collections::BTreeMap;

/// A SHA-256 digest: content hashes, Merkle nodes and roots.
pub type Hash = [u8; 32];

/// Entry metadata, ordered by key bytes: the order the canonical bytes hash it in.
pub type Metadata = BTreeMap<String, String>;

/// One immutable entry of a context.
///
/// Invariant: `content_hash` is the hash of the canonical bytes of this entry under its
/// context id (see `integrity::canonical`); nothing outside a Load changes any field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unique within the context; generated at append, kept by Load.
    pub id: String,
    pub key: String,
    pub payload: Bytes,
    /// 1, 2, 3, ... within the context.
    pub sequence: u64,
    /// Wall clock at append, nanoseconds since the Unix epoch.
    pub appended_at_ns: u64,
    pub metadata: Metadata,
    /// Strictly increasing within the context.
    pub lamport_clock: u64,
    pub content_hash: Hash,
}

impl Entry {
    /// The parts an idempotent retry must repeat exactly to be a duplicate.
    pub fn content(&self) -> EntryContent<'_> {
        EntryContent {
            key: &self.key,
            payload: &self.payload,
            metadata: &self.metadata,
        }
    }
}

/// What "the same content" means for idempotency: key, payload and metadata.
/// The received Lamport clock is not content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryContent<'a> {
    pub key: &'a str,
    pub payload: &'a [u8],
    pub metadata: &'a Metadata,
}

/// Any entry (its hash need not match): for codec round-trip property tests.
#[cfg(test)]
pub fn arb_entry() -> impl proptest::strategy::Strategy<Value = Entry> {
    use proptest::prelude::*;
    (
        ".{0,10}",
        ".{0,10}",
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
        any::<u64>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(id, key, payload, sequence, at, metadata, clock, hash)| Entry {
                id,
                key,
                payload: Bytes::from(payload),
                sequence,
                appended_at_ns: at,
                metadata,
                lamport_clock: clock,
                content_hash: hash,
            },
        )
}
