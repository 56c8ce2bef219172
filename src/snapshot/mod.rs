//! The versioned CBOR snapshot of a whole context, and the checks a Load runs on it.
//!
//! A snapshot is how a context leaves one ledger and enters another (backup, migration,
//! seeding a test). It carries every entry with its content hash and the Merkle root, so
//! the receiving side can prove, before writing anything, that nothing was lost, reordered
//! or altered. The exact layout is in docs/SNAPSHOT.md.
//!
//! - `codec`: `encode` / `decode` between entries and CBOR bytes (shape only).
//! - `verify`: every semantic check of a decoded snapshot, and rehashing for a new context.
//! - `error`: the error kinds, mapped onto `LedgerError`.
//!
//! Pure: no I/O, no async, no storage types.

mod codec;
mod error;
mod verify;

#[cfg(test)]
mod example;

use crate::model::{Entry, Hash};

pub use codec::{decode, encode};
pub use error::{SnapshotError, SnapshotErrorKind};
pub use verify::{rehash_for_context, verify, ID_BYTES_MAX};

/// The snapshot format version this code writes and the only one it reads. A reader
/// rejects every version it does not know.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A decoded snapshot: well-formed, not yet verified (see [`verify`]).
///
/// Invariant after [`decode`]: `version == SNAPSHOT_VERSION`, and the encoded
/// `entry_count` equalled `entries.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u32,
    pub context_id: String,
    pub created_at_ns: u64,
    pub merkle_root: Hash,
    pub entries: Vec<Entry>,
}
