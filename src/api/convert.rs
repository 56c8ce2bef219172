//! proto ↔ model conversion.

use crate::error::LedgerError;
use crate::model::{Entry, Hash};
use crate::proto;
use bytes::Bytes;

pub fn entry_to_proto(e: Entry) -> proto::Entry {
    proto::Entry {
        id: e.id,
        key: e.key,
        payload: e.payload,
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        metadata: e.metadata.into_iter().collect(),
        lamport_clock: e.lamport_clock,
        content_hash: Bytes::copy_from_slice(&e.content_hash),
    }
}

/// A wire entry back into the model (clients verifying what they received).
pub fn entry_from_proto(e: proto::Entry) -> Result<Entry, LedgerError> {
    Ok(Entry {
        content_hash: hash_from_bytes("content_hash", &e.content_hash)?,
        id: e.id,
        key: e.key,
        payload: e.payload,
        sequence: e.sequence,
        appended_at_ns: e.appended_at_ns,
        metadata: e.metadata.into_iter().collect(),
        lamport_clock: e.lamport_clock,
    })
}

pub fn hash_from_bytes(field: &str, b: &[u8]) -> Result<Hash, LedgerError> {
    b.try_into().map_err(|_| {
        LedgerError::InvalidArgument(format!("{field} is {} bytes; a hash is 32", b.len()))
    })
}

pub fn hash_bytes(h: &Hash) -> Bytes {
    Bytes::copy_from_slice(h)
}
