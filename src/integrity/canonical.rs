//! The canonical bytes of an entry and its content hash.
//!
//! Every client must be able to recompute an entry's `content_hash` from the fields it
//! receives, in any language, without our code. So the hashed bytes are a fixed,
//! length-prefixed, big-endian layout with no serialization library in between:
//!
//! ```text
//! u32be(len context_id) ‖ context_id ‖ u64be(sequence) ‖ u32be(len key) ‖ key
//! ‖ u32be(len payload) ‖ payload ‖ u64be(appended_at_ns) ‖ u64be(lamport_clock)
//! ‖ u32be(number of metadata pairs)
//! ‖ for each pair, sorted by key bytes: u32be(len k) ‖ k ‖ u32be(len v) ‖ v
//! content_hash = SHA-256(canonical bytes)
//! ```
//!
//! Every variable-length field is prefixed with its length, so no two distinct entries
//! share canonical bytes. The context id is hashed in, so an entry cannot be replayed into
//! another context under the same hash (a Load into another context rehashes).
//!
//! The layout is written once, in [`write_canonical`], against a byte sink: the same code
//! fills a `Vec` for [`canonical_bytes`] and a stack buffer (or, for large entries, the
//! hasher itself) for [`content_hash`], so they can never disagree
//! and the hot path allocates nothing. Hashing the bytes in one call rather than field by
//! field matters: a dozen small `update`s cost about a third more than the SHA-256 itself.

use sha2::{Digest, Sha256};

use crate::model::{Entry, Hash, Metadata};

/// Where canonical bytes go: a buffer or a hasher.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Canonical bytes of at most this many bytes are laid out on the stack and hashed in one
/// call; longer ones are streamed into the hasher.
const STACK_BYTES: usize = 1024;

/// A fixed buffer filled from the front. When a field does not fit, `full` is set and
/// nothing more is kept: the caller then streams instead.
struct StackBuf {
    buf: [u8; STACK_BYTES],
    len: usize,
    full: bool,
}

impl Sink for StackBuf {
    fn put(&mut self, bytes: &[u8]) {
        if self.full {
            return;
        }
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.full = true,
        }
    }
}

/// The u32 big-endian length prefix of a field.
///
/// Precondition (programmer error if broken): every field is shorter than 4 GiB. The
/// request limits (`model::Limits`) bound every field far below that before anything is
/// hashed; truncating the length instead would make two different entries hash alike.
fn len32(field: &str, len: usize) -> [u8; 4] {
    match u32::try_from(len) {
        Ok(n) => n.to_be_bytes(),
        Err(_) => panic!("{field} is {len} bytes: canonical bytes need every field < 4 GiB"),
    }
}

/// Writes the canonical bytes, field by field, into `out`. The single definition of the layout.
#[allow(clippy::too_many_arguments)]
fn write_canonical<S: Sink>(
    out: &mut S,
    context_id: &str,
    sequence: u64,
    key: &str,
    payload: &[u8],
    appended_at_ns: u64,
    lamport_clock: u64,
    metadata: &Metadata,
) {
    out.put(&len32("context_id", context_id.len()));
    out.put(context_id.as_bytes());
    out.put(&sequence.to_be_bytes());
    out.put(&len32("key", key.len()));
    out.put(key.as_bytes());
    out.put(&len32("payload", payload.len()));
    out.put(payload);
    out.put(&appended_at_ns.to_be_bytes());
    out.put(&lamport_clock.to_be_bytes());
    out.put(&len32("metadata", metadata.len()));
    // BTreeMap<String, _> iterates in byte order of the keys: the canonical order.
    for (k, v) in metadata {
        out.put(&len32("metadata key", k.len()));
        out.put(k.as_bytes());
        out.put(&len32("metadata value", v.len()));
        out.put(v.as_bytes());
    }
}

/// The exact bytes [`content_hash`] hashes. For clients, tests and documentation; the
/// ledger itself never materializes them.
///
/// Precondition: every field is shorter than 4 GiB (guaranteed by the request limits).
pub fn canonical_bytes(
    context_id: &str,
    sequence: u64,
    key: &str,
    payload: &[u8],
    appended_at_ns: u64,
    lamport_clock: u64,
    metadata: &Metadata,
) -> Vec<u8> {
    let meta_len: usize = metadata.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(
        4 + context_id.len() + 8 + 4 + key.len() + 4 + payload.len() + 20 + meta_len,
    );
    write_canonical(
        &mut out,
        context_id,
        sequence,
        key,
        payload,
        appended_at_ns,
        lamport_clock,
        metadata,
    );
    out
}

/// SHA-256 of the canonical bytes, without allocating: laid out on the stack when they fit
/// in [`STACK_BYTES`], streamed into the hasher otherwise.
///
/// Invariant: `content_hash(..) == SHA-256(canonical_bytes(..))` for the same arguments.
/// Precondition: every field is shorter than 4 GiB (guaranteed by the request limits).
pub fn content_hash(
    context_id: &str,
    sequence: u64,
    key: &str,
    payload: &[u8],
    appended_at_ns: u64,
    lamport_clock: u64,
    metadata: &Metadata,
) -> Hash {
    // One layout, written to the stack buffer, or when it does not fit, to the hasher.
    macro_rules! write_to {
        ($sink:expr) => {
            write_canonical(
                $sink,
                context_id,
                sequence,
                key,
                payload,
                appended_at_ns,
                lamport_clock,
                metadata,
            )
        };
    }
    let mut stack = StackBuf {
        buf: [0; STACK_BYTES],
        len: 0,
        full: false,
    };
    write_to!(&mut stack);
    if !stack.full {
        return Sha256::digest(&stack.buf[..stack.len]).into();
    }
    let mut hasher = Sha256::new();
    write_to!(&mut hasher);
    hasher.finalize().into()
}

/// The content hash `e` must carry in context `context_id`. Ignores `e.id` (an id is a
/// handle, not content) and `e.content_hash` (the value being checked or set).
pub fn entry_content_hash(context_id: &str, e: &Entry) -> Hash {
    content_hash(
        context_id,
        e.sequence,
        &e.key,
        &e.payload,
        e.appended_at_ns,
        e.lamport_clock,
        &e.metadata,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Known answer. Derived independently of this code with python3:
    ///
    /// ```text
    /// import hashlib, struct
    /// def s(b): return struct.pack(">I", len(b)) + b
    /// meta = {"source": "agent-α", "a": "1"}
    /// c = (s(b"ctx-1") + struct.pack(">Q", 1) + s(b"facts") + s(b"hello")
    ///      + struct.pack(">QQ", 1700000000000000000, 1) + struct.pack(">I", len(meta))
    ///      + b"".join(s(k.encode()) + s(v.encode())
    ///                 for k, v in sorted(meta.items(), key=lambda kv: kv[0].encode())))
    /// print(c.hex(), hashlib.sha256(c).hexdigest())
    /// ```
    #[test]
    fn known_answer_vector() {
        let m = meta(&[("source", "agent-α"), ("a", "1")]);
        let bytes = canonical_bytes(
            "ctx-1",
            1,
            "facts",
            b"hello",
            1_700_000_000_000_000_000,
            1,
            &m,
        );
        assert_eq!(hex::encode(&bytes), CANONICAL_HEX);
        let h = content_hash(
            "ctx-1",
            1,
            "facts",
            b"hello",
            1_700_000_000_000_000_000,
            1,
            &m,
        );
        assert_eq!(hex::encode(h), HASH_HEX);
    }

    const CANONICAL_HEX: &str = concat!(
        "000000056374782d31",                           // len 5, "ctx-1"
        "0000000000000001",                             // sequence 1
        "000000056661637473",                           // len 5, "facts"
        "0000000568656c6c6f",                           // len 5, "hello"
        "17979cfe362a0000",                             // appended_at_ns 1.7e18
        "0000000000000001",                             // lamport_clock 1
        "00000002",                                     // 2 metadata pairs
        "00000001610000000131",                         // "a" = "1"
        "00000006736f75726365000000086167656e742dceb1", // "source" = "agent-α"
    );
    const HASH_HEX: &str = "547dcc1d8b336c432d4493c786c493cf6b6ab577dca34c6b6a631a6eccd31a3e";

    #[test]
    fn entry_content_hash_ignores_id_and_stored_hash() {
        let mut e = Entry {
            id: "a".into(),
            key: "facts".into(),
            payload: bytes::Bytes::from_static(b"hello"),
            sequence: 1,
            appended_at_ns: 1_700_000_000_000_000_000,
            metadata: meta(&[("source", "agent-α"), ("a", "1")]),
            lamport_clock: 1,
            content_hash: [0; 32],
        };
        let h = entry_content_hash("ctx-1", &e);
        assert_eq!(hex::encode(h), HASH_HEX);
        e.id = "b".into();
        e.content_hash = [7; 32];
        assert_eq!(entry_content_hash("ctx-1", &e), h);
        assert_ne!(entry_content_hash("ctx-2", &e), h);
    }

    #[test]
    fn empty_fields_are_length_prefixed() {
        let b = canonical_bytes("", 0, "", b"", 0, 0, &Metadata::new());
        assert_eq!(b, vec![0u8; 4 + 8 + 4 + 4 + 8 + 8 + 4]);
    }

    #[test]
    fn metadata_order_is_independent_of_insertion() {
        let mut a = Metadata::new();
        a.insert("z".into(), "1".into());
        a.insert("a".into(), "2".into());
        a.insert("é".into(), "3".into());
        let mut b = Metadata::new();
        b.insert("é".into(), "3".into());
        b.insert("a".into(), "2".into());
        b.insert("z".into(), "1".into());
        assert_eq!(
            canonical_bytes("c", 1, "k", b"p", 2, 3, &a),
            canonical_bytes("c", 1, "k", b"p", 2, 3, &b)
        );
        assert_eq!(
            content_hash("c", 1, "k", b"p", 2, 3, &a),
            content_hash("c", 1, "k", b"p", 2, 3, &b)
        );
    }

    /// Moving bytes between adjacent fields must change the hash: the length prefixes.
    #[test]
    fn field_boundaries_are_unambiguous() {
        let m = Metadata::new();
        assert_ne!(
            content_hash("ab", 1, "c", b"", 0, 0, &m),
            content_hash("a", 1, "bc", b"", 0, 0, &m)
        );
        assert_ne!(
            content_hash("c", 1, "ab", b"", 0, 0, &m),
            content_hash("c", 1, "a", b"b", 0, 0, &m)
        );
        assert_ne!(
            content_hash("c", 1, "k", b"", 0, 0, &meta(&[("ab", "")])),
            content_hash("c", 1, "k", b"", 0, 0, &meta(&[("a", "b")]))
        );
    }

    fn arb_metadata() -> impl Strategy<Value = Metadata> {
        proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..5)
    }

    #[derive(Clone, Debug)]
    struct Fields {
        ctx: String,
        seq: u64,
        key: String,
        payload: Vec<u8>,
        at: u64,
        clock: u64,
        meta: Metadata,
    }

    fn arb_fields() -> impl Strategy<Value = Fields> {
        (
            ".{0,12}",
            any::<u64>(),
            ".{0,12}",
            proptest::collection::vec(any::<u8>(), 0..1500),
            any::<u64>(),
            any::<u64>(),
            arb_metadata(),
        )
            .prop_map(|(ctx, seq, key, payload, at, clock, meta)| Fields {
                ctx,
                seq,
                key,
                payload,
                at,
                clock,
                meta,
            })
    }

    fn hash_of(f: &Fields) -> Hash {
        content_hash(&f.ctx, f.seq, &f.key, &f.payload, f.at, f.clock, &f.meta)
    }

    /// Entries too long for the stack buffer take the streamed path; both equal SHA-256 of
    /// the canonical bytes, on either side of the boundary.
    #[test]
    fn stack_and_streamed_paths_agree_at_the_boundary() {
        let empty = canonical_bytes("c", 1, "k", b"", 2, 3, &Metadata::new()).len();
        for payload_len in [
            0,
            STACK_BYTES - empty - 1,
            STACK_BYTES - empty,
            STACK_BYTES - empty + 1,
            5000,
        ] {
            let payload = vec![0xa5u8; payload_len];
            let bytes = canonical_bytes("c", 1, "k", &payload, 2, 3, &Metadata::new());
            let expected: Hash = Sha256::digest(&bytes).into();
            assert_eq!(
                content_hash("c", 1, "k", &payload, 2, 3, &Metadata::new()),
                expected,
                "{payload_len}"
            );
        }
    }

    proptest! {
        #[test]
        fn streamed_hash_equals_hash_of_canonical_bytes(f in arb_fields()) {
            let bytes = canonical_bytes(&f.ctx, f.seq, &f.key, &f.payload, f.at, f.clock, &f.meta);
            let expected: Hash = Sha256::digest(&bytes).into();
            prop_assert_eq!(hash_of(&f), expected);
        }

        #[test]
        fn any_changed_field_changes_the_hash(f in arb_fields(), which in 0usize..8, salt in 1u64..) {
            let mut g = f.clone();
            match which {
                0 => g.ctx.push('x'),
                1 => g.seq = g.seq.wrapping_add(salt),
                2 => g.key.push('x'),
                3 => g.payload.push(salt as u8),
                4 => g.at = g.at.wrapping_add(salt),
                5 => g.clock = g.clock.wrapping_add(salt),
                6 => { g.meta.insert(format!("new-{salt}"), String::new()); }
                _ => match g.meta.iter().next().map(|(k, v)| (k.clone(), v.clone())) {
                    Some((k, v)) => { g.meta.insert(k, format!("{v}x")); }
                    None => { g.meta.insert(String::new(), String::new()); }
                },
            }
            prop_assert_ne!(hash_of(&f), hash_of(&g));
        }
    }
}
