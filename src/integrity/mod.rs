//! Integrity: what makes the ledger verifiable rather than merely stored.
//!
//! - `canonical`: the canonical bytes of an entry and its content hash.
//! - `merkle`: the RFC 9162 tree over a context's entries and its O(log n) frontier.
//! - `proof`: inclusion and consistency proofs and historical roots from stored subtree
//!   hashes, and their verification.
//! - `lamport`: the Lamport clock rule.
//! - `replay`: what an auditor recomputes from entries it does not trust.
//! - `note_key`, `note`: Ed25519 keys and C2SP signed notes.
//! - `checkpoint`: a root as a C2SP tlog-checkpoint, signed as a note.
//!
//! Pure: no I/O, no async, no storage types. See docs/INTEGRITY.md for the exact contract.

pub mod canonical;
pub mod checkpoint;
pub mod lamport;
pub mod merkle;
pub mod note;
pub mod note_key;
pub mod proof;
pub mod replay;

#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

pub use canonical::{canonical_bytes, content_hash, entry_content_hash};
pub use checkpoint::{Checkpoint, CheckpointError, SignatureCheck};
pub use lamport::{next_clock, ClockOverflow};
pub use merkle::{
    empty_root, frontier_positions, leaf_hash, node_hash, root_of_frontier, Frontier,
    FrontierError, NodePos,
};
pub use note::{Note, NoteError};
pub use note_key::{KeyError, NoteSigner, NoteVerifier};
pub use proof::{
    consistency_proof, frontier_at, inclusion_proof, root_at, verify_consistency, verify_inclusion,
    MemoryTree, NodeOutOfRange, NodeSource, ProofError,
};
pub use replay::{Mismatch, Replay};
