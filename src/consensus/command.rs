//! The commands a Raft group replicates: one Raft log entry is one [`Proposal`], a batch of
//! ledger operations the group's leader assembled (group commit: every append that arrived
//! while the previous proposal was being made rides in the next one). Pure.
//!
//! Entries travel with every field the leader assigned (id, sequence, timestamps, Lamport
//! clock, content hash), so every member applies byte-identical entries and reaches the same
//! Merkle root. The layout reuses the storage codec for the entry itself:
//!
//! ```text
//! proposal := u8 version (=1) ‖ u64be node ‖ u64be incarnation ‖ u64be batch ‖ u32be n ‖ op × n
//! op       := u8 kind (=1 append) ‖ u32be len ‖ context ‖ u32be len ‖ idempotency_key ‖
//!             u64be sequence ‖ u32be len ‖ stored entry value (storage::codec, no nodes)
//! ```
//!
//! A proposal of another version is refused when decoded, so a mixed-version group fails
//! loudly instead of misapplying.

use crate::model::Entry;
use crate::storage::codec::{decode_entry, encode_entry_into, CodecError, Reader};

/// The version this code writes and reads.
pub const COMMAND_VERSION: u8 = 1;
const OP_APPEND: u8 = 1;

/// Who proposed a batch: a node, in one incarnation (a restart gets a new one, so a batch
/// number is never reused for a different batch), and the batch's number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId {
    pub node: u64,
    pub incarnation: u64,
    pub batch: u64,
}

/// One Raft log entry's worth of ledger operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub id: ProposalId,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Append(AppendOp),
}

impl Op {
    pub fn context(&self) -> &str {
        match self {
            Op::Append(a) => &a.context,
        }
    }
}

/// An entry the leader built for `context`; `idempotency_key` is "" when none was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOp {
    pub context: String,
    pub idempotency_key: String,
    pub entry: Entry,
}

pub fn encode(p: &Proposal) -> Vec<u8> {
    let payload: usize = p
        .ops
        .iter()
        .map(|Op::Append(a)| 128 + a.context.len() + a.entry.payload.len())
        .sum();
    let mut out = Vec::with_capacity(32 + payload);
    out.push(COMMAND_VERSION);
    out.extend_from_slice(&p.id.node.to_be_bytes());
    out.extend_from_slice(&p.id.incarnation.to_be_bytes());
    out.extend_from_slice(&p.id.batch.to_be_bytes());
    out.extend_from_slice(&(p.ops.len() as u32).to_be_bytes());
    let mut value = Vec::new();
    for Op::Append(a) in &p.ops {
        out.push(OP_APPEND);
        put_bytes(&mut out, a.context.as_bytes());
        put_bytes(&mut out, a.idempotency_key.as_bytes());
        out.extend_from_slice(&a.entry.sequence.to_be_bytes());
        value.clear();
        encode_entry_into(&mut value, &a.entry);
        put_bytes(&mut out, &value);
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// A Raft entry whose data is not a proposal of this version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("proposal version {0}, this node reads version {COMMAND_VERSION}")]
    Version(u8),
    #[error("undecodable proposal: {0}")]
    Codec(String),
}

impl From<CodecError> for CommandError {
    fn from(e: CodecError) -> Self {
        CommandError::Codec(e.0)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Proposal, CommandError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.take(1)?[0];
    if version != COMMAND_VERSION {
        return Err(CommandError::Version(version));
    }
    let id = ProposalId {
        node: r.u64()?,
        incarnation: r.u64()?,
        batch: r.u64()?,
    };
    let n = r.u32()? as usize;
    // Each op takes at least 21 bytes: a count beyond that is corrupt, not a reason to
    // reserve memory.
    if n > bytes.len() / 21 {
        return Err(CommandError::Codec(format!(
            "{n} ops cannot fit in {} bytes",
            bytes.len()
        )));
    }
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.take(1)?[0];
        if kind != OP_APPEND {
            return Err(CommandError::Codec(format!("unknown op kind {kind}")));
        }
        let context = r.string("context id")?;
        let idempotency_key = r.string("idempotency key")?;
        let sequence = r.u64()?;
        let entry = decode_entry(sequence, r.bytes()?)?;
        ops.push(Op::Append(AppendOp {
            context,
            idempotency_key,
            entry,
        }));
    }
    if r.pos != bytes.len() {
        return Err(CommandError::Codec(format!(
            "{} trailing bytes",
            bytes.len() - r.pos
        )));
    }
    Ok(Proposal { id, ops })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::model::arb_entry;

    proptest! {
        #[test]
        fn proposals_round_trip(
            ids in any::<(u64, u64, u64)>(),
            ops in proptest::collection::vec(("[a-z/]{1,10}", "[a-z]{0,6}", arb_entry()), 0..5),
        ) {
            let p = Proposal {
                id: ProposalId { node: ids.0, incarnation: ids.1, batch: ids.2 },
                ops: ops.into_iter().map(|(context, idempotency_key, entry)| {
                    Op::Append(AppendOp { context, idempotency_key, entry })
                }).collect(),
            };
            prop_assert_eq!(decode(&encode(&p)).unwrap(), p);
        }

        #[test]
        fn truncated_or_garbage_proposals_are_errors_not_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode(&bytes);
        }
    }

    fn empty_proposal() -> Vec<u8> {
        encode(&Proposal {
            id: ProposalId {
                node: 1,
                incarnation: 2,
                batch: 3,
            },
            ops: vec![],
        })
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let mut b = empty_proposal();
        b[0] = 9;
        let err = decode(&b).unwrap_err();
        assert_eq!(err, CommandError::Version(9));
        assert!(err.to_string().contains("version 9") && err.to_string().contains("version 1"));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = empty_proposal();
        b.push(0);
        assert!(matches!(decode(&b), Err(CommandError::Codec(m)) if m.contains("trailing")));
    }
}
