//! The byte layout of a stored entry value. Pure.
//!
//! The sequence lives in the key, so the value holds the rest. The content hash comes
//! first, at a fixed offset, so Merkle proofs read a leaf without decoding the entry.
//!
//! ```text
//! format 2 (written since layout converge-ledger/2):
//! u8 format (=2) ‖ content_hash[32] ‖ u8 n ‖ node[32] × n ‖ u64be lamport_clock ‖
//! u64be appended_at_ns ‖ u32be len ‖ id ‖ u32be len ‖ key ‖ u32be pairs ‖
//! (u32be len ‖ k ‖ u32be len ‖ v)* ‖ u32be len ‖ payload
//!
//! format 1 (layout converge-ledger/1): the same without `n` and the nodes.
//! ```
//!
//! **Why the Merkle nodes live in the entry.** The entry with sequence `s` is the leaf that
//! completes the subtrees at levels `1..=trailing_zeros(s)` ending at it; `node[l-1]` is the
//! hash of the level-`l` subtree. Storing them here instead of as rows of a separate table
//! removed one B-tree insert per append — and with it the copy-on-write of one more 4 KiB
//! leaf per append per commit, the costliest part of an append (see BENCHMARKS.md, "Storage
//! commit CPU"). On average an entry carries one node (32 bytes).

use crate::model::{Entry, Hash, Metadata};
use bytes::Bytes;

const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const HASH_START: usize = 1;
const HASH_END: usize = HASH_START + 32;
/// Offset of the node count in a format-2 value; the nodes follow it.
const NODES_START: usize = HASH_END + 1;
/// A subtree level fits in a u8 and a tree has at most 64 levels above its leaves.
const NODES_MAX: usize = 64;

/// A stored value that does not decode: the store is corrupt (or written by a newer version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored entry value is corrupt: {0}")]
pub struct CodecError(pub String);

/// Encodes everything but the sequence (which is in the key), with no Merkle nodes.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entry_into(&mut out, e);
    out
}

/// Like [`encode_entry`], into a cleared, reused buffer (the writer encodes every entry of
/// a batch into the same one).
pub fn encode_entry_into(out: &mut Vec<u8>, e: &Entry) {
    encode_entry_with_nodes_into(out, e, &[]);
}

/// Encodes `e` with the hashes of the Merkle subtrees it completes: `nodes[l-1]` is the
/// level-`l` subtree ending at this entry, for `l` in `1..=nodes.len()`.
///
/// Precondition: at most 64 nodes (more would be levels that cannot exist); the writer
/// stores any further nodes elsewhere, so this only truncates on misuse.
pub fn encode_entry_with_nodes_into(out: &mut Vec<u8>, e: &Entry, nodes: &[Hash]) {
    let nodes = &nodes[..nodes.len().min(NODES_MAX)];
    let meta_len: usize = e.metadata.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    out.clear();
    out.reserve(
        NODES_START
            + 32 * nodes.len()
            + 16
            + 12
            + e.id.len()
            + e.key.len()
            + meta_len
            + 4
            + e.payload.len(),
    );
    out.push(FORMAT_V2);
    out.extend_from_slice(&e.content_hash);
    out.push(nodes.len() as u8);
    for n in nodes {
        out.extend_from_slice(n);
    }
    out.extend_from_slice(&e.lamport_clock.to_be_bytes());
    out.extend_from_slice(&e.appended_at_ns.to_be_bytes());
    put_bytes(out, e.id.as_bytes());
    put_bytes(out, e.key.as_bytes());
    out.extend_from_slice(&(e.metadata.len() as u32).to_be_bytes());
    for (k, v) in &e.metadata {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    put_bytes(out, &e.payload);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// The content hash of a stored value, without decoding the rest.
pub fn stored_content_hash(value: &[u8]) -> Result<Hash, CodecError> {
    let ok = matches!(value.first(), Some(&FORMAT_V1) | Some(&FORMAT_V2));
    if !ok || value.len() < HASH_END {
        return Err(CodecError(format!(
            "value of {} bytes has no format-1 or format-2 header",
            value.len()
        )));
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&value[HASH_START..HASH_END]);
    Ok(h)
}

/// The Merkle nodes stored with a value (`[l-1]` = level `l`), as a slice of the value, and
/// a reader positioned after them (at the Lamport clock).
fn stored_nodes(value: &[u8]) -> Result<(&[u8], Reader<'_>), CodecError> {
    stored_content_hash(value)?;
    let mut r = Reader {
        buf: value,
        pos: HASH_END,
    };
    if value[0] == FORMAT_V1 {
        return Ok((&[], r));
    }
    let n = r.take(1)?[0] as usize;
    if n > NODES_MAX {
        return Err(CodecError(format!("{n} Merkle nodes in one entry")));
    }
    let nodes = r.take(32 * n)?;
    Ok((nodes, r))
}

/// The hash of the level-`level` (≥ 1) Merkle subtree this stored entry completes, if the
/// value carries it.
pub fn stored_node(value: &[u8], level: u8) -> Result<Option<Hash>, CodecError> {
    let (nodes, _) = stored_nodes(value)?;
    let Some(l) = (level as usize).checked_sub(1) else {
        return Ok(None);
    };
    Ok(nodes.get(32 * l..32 * (l + 1)).map(|n| {
        let mut h = [0u8; 32];
        h.copy_from_slice(n);
        h
    }))
}

/// The Lamport clock of a stored value, without decoding the rest.
pub fn stored_lamport_clock(value: &[u8]) -> Result<u64, CodecError> {
    let (_, mut r) = stored_nodes(value)?;
    r.u64()
}

/// Decodes a stored value back into the entry with the given sequence.
pub fn decode_entry(sequence: u64, value: &[u8]) -> Result<Entry, CodecError> {
    decode_entry_with(sequence, value, Bytes::copy_from_slice)
}

/// Decodes a value that lies inside `page` (a buffer holding several stored values): the
/// payload is a slice of `page`, not a copy, so a page of entries costs one allocation
/// for all their payloads.
pub fn decode_entry_in(sequence: u64, page: &Bytes, value: &[u8]) -> Result<Entry, CodecError> {
    decode_entry_with(sequence, value, |p| page.slice_ref(p))
}

fn decode_entry_with(
    sequence: u64,
    value: &[u8],
    payload_bytes: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Entry, CodecError> {
    let content_hash = stored_content_hash(value)?;
    let (_, mut r) = stored_nodes(value)?;
    let lamport_clock = r.u64()?;
    let appended_at_ns = r.u64()?;
    let id = r.string("id")?;
    let key = r.string("key")?;
    let pairs = r.u32()? as usize;
    let mut metadata = Metadata::new();
    for _ in 0..pairs {
        let k = r.string("metadata key")?;
        let v = r.string("metadata value")?;
        metadata.insert(k, v);
    }
    let payload = payload_bytes(r.bytes()?);
    if r.pos != value.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after entry {sequence}",
            value.len() - r.pos
        )));
    }
    Ok(Entry {
        id,
        key,
        payload,
        sequence,
        appended_at_ns,
        metadata,
        lamport_clock,
        content_hash,
    })
}

/// A cursor over big-endian, length-prefixed fields (the entry codec's and the write-ahead
/// log's); every read is bounds-checked and names the offset that ran out.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                CodecError(format!(
                    "needs {n} bytes at offset {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn string(&mut self, what: &str) -> Result<String, CodecError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(key: &str, payload: &[u8], meta: &[(&str, &str)]) -> Entry {
        Entry {
            id: "0193-abc".into(),
            key: key.into(),
            payload: Bytes::copy_from_slice(payload),
            sequence: 7,
            appended_at_ns: 1_700_000_000_123_456_789,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            lamport_clock: 42,
            content_hash: [9; 32],
        }
    }

    #[test]
    fn round_trip_and_fixed_offsets() {
        let e = entry("facts", b"market_size: 2.4B", &[("step", "1"), ("", "")]);
        let v = encode_entry(&e);
        assert_eq!(decode_entry(7, &v).unwrap(), e);
        assert_eq!(stored_content_hash(&v).unwrap(), [9; 32]);
        assert_eq!(stored_lamport_clock(&v).unwrap(), 42);
    }

    #[test]
    fn nodes_round_trip_and_leave_the_entry_unchanged() {
        let e = entry("facts", b"payload", &[("step", "1")]);
        let nodes = [[1u8; 32], [2; 32], [3; 32]];
        let mut v = Vec::new();
        encode_entry_with_nodes_into(&mut v, &e, &nodes);
        assert_eq!(decode_entry(7, &v).unwrap(), e);
        assert_eq!(stored_content_hash(&v).unwrap(), [9; 32]);
        assert_eq!(stored_lamport_clock(&v).unwrap(), 42);
        assert_eq!(stored_node(&v, 0).unwrap(), None);
        assert_eq!(stored_node(&v, 1).unwrap(), Some([1; 32]));
        assert_eq!(stored_node(&v, 3).unwrap(), Some([3; 32]));
        assert_eq!(stored_node(&v, 4).unwrap(), None);
        assert_eq!(stored_node(&encode_entry(&e), 1).unwrap(), None);
    }

    #[test]
    fn format_1_values_still_decode() {
        let e = entry("k", b"old", &[("a", "b")]);
        let v2 = encode_entry(&e);
        // Format 1 = format 2 without the node count byte (and no nodes).
        let mut v1 = vec![FORMAT_V1];
        v1.extend_from_slice(&v2[HASH_START..HASH_END]);
        v1.extend_from_slice(&v2[NODES_START..]);
        assert_eq!(decode_entry(7, &v1).unwrap(), e);
        assert_eq!(stored_lamport_clock(&v1).unwrap(), 42);
        assert_eq!(stored_node(&v1, 1).unwrap(), None);
    }

    #[test]
    fn decoding_inside_a_page_shares_the_page() {
        let a = entry("k", b"first payload", &[("m", "1")]);
        let b = entry("", b"second", &[]);
        let (va, vb) = (encode_entry(&a), encode_entry(&b));
        let mut reused = Vec::new();
        encode_entry_into(&mut reused, &b);
        assert_eq!(reused, vb);
        let page = Bytes::from([va.clone(), vb.clone()].concat());
        let (pa, pb) = page.split_at(va.len());
        assert_eq!(decode_entry_in(7, &page, pa).unwrap(), a);
        let db = decode_entry_in(7, &page, pb).unwrap();
        assert_eq!(db, b);
        // The payload points into the page.
        let start = page.as_ptr() as usize;
        let p = db.payload.as_ptr() as usize;
        assert!(p >= start && p < start + page.len());
    }

    #[test]
    fn truncated_or_extended_values_are_errors_not_panics() {
        let v = encode_entry(&entry("k", b"payload", &[("a", "b")]));
        for cut in 0..v.len() {
            assert!(decode_entry(1, &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(decode_entry(1, &longer).is_err());
    }

    proptest! {
        #[test]
        fn truncated_values_with_nodes_are_errors(n in 0usize..4, cut_back in 1usize..200) {
            let e = entry("k", b"payload", &[("a", "b")]);
            let mut v = Vec::new();
            encode_entry_with_nodes_into(&mut v, &e, &vec![[5u8; 32]; n]);
            let cut = v.len().saturating_sub(cut_back);
            prop_assert!(decode_entry(1, &v[..cut]).is_err());
        }

        #[test]
        fn round_trips(key in ".{0,20}", payload in proptest::collection::vec(any::<u8>(), 0..300),
                       meta in proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..5),
                       seq in 1u64.., clock in any::<u64>(), at in any::<u64>()) {
            let e = Entry { id: "id".into(), key, payload: payload.into(), sequence: seq,
                appended_at_ns: at, metadata: meta, lamport_clock: clock, content_hash: [3; 32] };
            prop_assert_eq!(decode_entry(seq, &encode_entry(&e)).unwrap(), e);
        }

        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_entry(1, &v);
            let _ = stored_lamport_clock(&v);
            let _ = stored_node(&v, 1);
        }
    }
}
