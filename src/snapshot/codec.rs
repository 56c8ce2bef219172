//! CBOR encoding and decoding of snapshots: the shape of the bytes, nothing more.
//!
//! Encoding borrows straight from `&[Entry]` (no payload is copied before it reaches the
//! output buffer). Decoding is strict, because a snapshot comes from outside: unknown or
//! duplicate fields, byte fields given as arrays of integers, hashes that are not 32 bytes,
//! duplicate metadata keys and trailing bytes are all rejected with a precise message.
//! Whether the entries make sense (sequences, clocks, hashes, root) is `verify`'s job.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{Snapshot, SnapshotError, SNAPSHOT_VERSION};
use crate::model::{Entry, Hash, Metadata};

#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    context_id: &'a str,
    created_at_ns: u64,
    entry_count: u64,
    #[serde(with = "serde_bytes")]
    merkle_root: &'a [u8],
    entries: EntriesOut<'a>,
}

/// Serializes `&[Entry]` as a definite-length CBOR array of borrowed entry maps.
struct EntriesOut<'a>(&'a [Entry]);

impl Serialize for EntriesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|e| EntryOut {
            id: &e.id,
            key: &e.key,
            payload: &e.payload,
            sequence: e.sequence,
            appended_at_ns: e.appended_at_ns,
            lamport_clock: e.lamport_clock,
            metadata: &e.metadata,
            content_hash: &e.content_hash,
        }))
    }
}

#[derive(Serialize)]
struct EntryOut<'a> {
    id: &'a str,
    key: &'a str,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    sequence: u64,
    appended_at_ns: u64,
    lamport_clock: u64,
    metadata: &'a Metadata,
    #[serde(with = "serde_bytes")]
    content_hash: &'a [u8],
}

/// Encodes a snapshot of `entries` (all of a context, in sequence order) with the root the
/// caller computed over them. Every byte field is a CBOR byte string.
pub fn encode(
    context_id: &str,
    created_at_ns: u64,
    entries: &[Entry],
    merkle_root: &Hash,
) -> Vec<u8> {
    // Payloads and strings plus ~150 bytes of keys and headers per entry.
    let estimate: usize = entries
        .iter()
        .map(|e| {
            let meta: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
            e.payload.len() + e.id.len() + e.key.len() + meta + 160
        })
        .sum();
    let mut out = Vec::with_capacity(estimate + context_id.len() + 128);
    let snapshot = SnapshotOut {
        version: SNAPSHOT_VERSION,
        context_id,
        created_at_ns,
        entry_count: entries.len() as u64,
        merkle_root,
        entries: EntriesOut(entries),
    };
    match ciborium::ser::into_writer(&snapshot, &mut out) {
        Ok(()) => out,
        // Writing to a Vec cannot fail, and every value here has a CBOR form.
        Err(e) => unreachable!("CBOR encoding into a Vec failed: {e}"),
    }
}

/// A CBOR byte string, and only that: an array of integers is a wrong type here.
struct StrictBytes(Vec<u8>);

impl<'de> Deserialize<'de> for StrictBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrictBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CBOR byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<StrictBytes, E> {
                Ok(StrictBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<StrictBytes, E> {
                Ok(StrictBytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Metadata as a text→text map whose keys appear once: a repeated key would silently
/// drop a value the hash may have covered.
struct StrictMetadata(Metadata);

impl<'de> Deserialize<'de> for StrictMetadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictMetadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of text keys to text values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictMetadata, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate metadata key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(StrictMetadata(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    version: u32,
    context_id: String,
    created_at_ns: u64,
    entry_count: u64,
    merkle_root: StrictBytes,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    id: String,
    key: String,
    payload: StrictBytes,
    sequence: u64,
    appended_at_ns: u64,
    lamport_clock: u64,
    metadata: StrictMetadata,
    content_hash: StrictBytes,
}

/// Just the version, read when a full decode fails, to tell "a version we do not know"
/// from "a broken version 1".
#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

/// A 32-byte hash from a byte string; `what` names it in the error (built only on error).
fn hash32(bytes: Vec<u8>, what: impl FnOnce() -> String) -> Result<Hash, SnapshotError> {
    let len = bytes.len();
    Hash::try_from(bytes).map_err(|_| {
        SnapshotError::invalid(format!(
            "invalid snapshot: {} is {len} bytes, expected 32",
            what()
        ))
    })
}

fn unsupported(version: u64) -> SnapshotError {
    SnapshotError::invalid(format!(
        "unsupported snapshot version {version}; this server reads version {SNAPSHOT_VERSION}"
    ))
}

fn describe<T: fmt::Debug>(e: ciborium::de::Error<T>) -> String {
    match e {
        ciborium::de::Error::Io(io) => {
            format!("invalid snapshot: the CBOR ends early or cannot be read ({io:?})")
        }
        ciborium::de::Error::Syntax(at) => {
            format!("invalid snapshot: not CBOR (syntax error at byte {at})")
        }
        ciborium::de::Error::Semantic(Some(at), m) => {
            format!("invalid snapshot: wrong shape at byte {at}: {m}")
        }
        ciborium::de::Error::Semantic(None, m) => format!("invalid snapshot: wrong shape: {m}"),
        ciborium::de::Error::RecursionLimitExceeded => {
            "invalid snapshot: CBOR nested too deeply".into()
        }
    }
}

/// Decodes snapshot bytes into a [`Snapshot`], checking the shape only: exactly one CBOR
/// map of the documented layout, version [`SNAPSHOT_VERSION`], 32-byte hashes and
/// `entry_count == entries.len()`. Every failure is kind `Invalid`. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let mut rest = bytes;
    let raw: SnapshotIn = match ciborium::de::from_reader(&mut rest) {
        Ok(raw) => raw,
        Err(e) => {
            // A shape we do not know may be a version we do not know: say so if it is.
            if let Ok(probe) = ciborium::de::from_reader::<VersionProbe, _>(bytes) {
                if probe.version != u64::from(SNAPSHOT_VERSION) {
                    return Err(unsupported(probe.version));
                }
            }
            return Err(SnapshotError::invalid(describe(e)));
        }
    };
    if raw.version != SNAPSHOT_VERSION {
        return Err(unsupported(u64::from(raw.version)));
    }
    if !rest.is_empty() {
        return Err(SnapshotError::invalid(format!(
            "invalid snapshot: {} trailing bytes after the CBOR map",
            rest.len()
        )));
    }
    if raw.entry_count != raw.entries.len() as u64 {
        return Err(SnapshotError::invalid(format!(
            "invalid snapshot: entry_count is {} but the snapshot holds {} entries",
            raw.entry_count,
            raw.entries.len()
        )));
    }
    let merkle_root = hash32(raw.merkle_root.0, || "merkle_root".into())?;
    let mut entries = Vec::with_capacity(raw.entries.len());
    for (i, e) in raw.entries.into_iter().enumerate() {
        let sequence = e.sequence;
        entries.push(Entry {
            content_hash: hash32(e.content_hash.0, || {
                format!("content_hash of entry {i} (sequence {sequence})")
            })?,
            id: e.id,
            key: e.key,
            payload: Bytes::from(e.payload.0),
            sequence: e.sequence,
            appended_at_ns: e.appended_at_ns,
            metadata: e.metadata.0,
            lamport_clock: e.lamport_clock,
        });
    }
    Ok(Snapshot {
        version: raw.version,
        context_id: raw.context_id,
        created_at_ns: raw.created_at_ns,
        merkle_root,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotErrorKind;
    use ciborium::Value;
    use proptest::prelude::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            id: format!("id-{seq}"),
            key: "facts".into(),
            payload: Bytes::from(vec![seq as u8; 3]),
            sequence: seq,
            appended_at_ns: 1000 + seq,
            metadata: [("a".to_string(), "1".to_string())].into_iter().collect(),
            lamport_clock: seq,
            content_hash: [seq as u8; 32],
        }
    }

    fn to_value(bytes: &[u8]) -> Value {
        ciborium::de::from_reader(bytes).unwrap()
    }

    fn from_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn field<'a>(map: &'a mut Value, name: &str) -> &'a mut Value {
        let Value::Map(pairs) = map else {
            panic!("not a map")
        };
        &mut pairs
            .iter_mut()
            .find(|(k, _)| k.as_text() == Some(name))
            .unwrap()
            .1
    }

    fn first_entry(v: &mut Value) -> &mut Value {
        let Value::Array(entries) = field(v, "entries") else {
            panic!("no entries")
        };
        &mut entries[0]
    }

    fn invalid_message(bytes: &[u8]) -> String {
        let e = decode(bytes).unwrap_err();
        assert_eq!(e.kind, SnapshotErrorKind::Invalid, "{e}");
        e.message
    }

    fn valid() -> Vec<u8> {
        encode("ctx", 42, &[entry(1), entry(2)], &[9; 32])
    }

    #[test]
    fn byte_fields_are_cbor_byte_strings_and_fields_are_named() {
        let mut v = to_value(&valid());
        let Value::Map(top) = &v else { panic!() };
        let keys: Vec<_> = top
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "version",
                "context_id",
                "created_at_ns",
                "entry_count",
                "merkle_root",
                "entries"
            ]
        );
        assert_eq!(*field(&mut v, "version"), Value::Integer(1.into()));
        assert_eq!(*field(&mut v, "merkle_root"), Value::Bytes(vec![9; 32]));
        let e = first_entry(&mut v);
        let Value::Map(pairs) = &*e else { panic!() };
        let keys: Vec<_> = pairs
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "key",
                "payload",
                "sequence",
                "appended_at_ns",
                "lamport_clock",
                "metadata",
                "content_hash"
            ]
        );
        assert_eq!(*field(e, "payload"), Value::Bytes(vec![1; 3]));
        assert_eq!(*field(e, "content_hash"), Value::Bytes(vec![1; 32]));
        assert_eq!(
            *field(e, "metadata"),
            Value::Map(vec![(Value::Text("a".into()), Value::Text("1".into()))])
        );
    }

    #[test]
    fn round_trip_small() {
        let s = decode(&valid()).unwrap();
        assert_eq!(s.version, SNAPSHOT_VERSION);
        assert_eq!(s.context_id, "ctx");
        assert_eq!(s.created_at_ns, 42);
        assert_eq!(s.merkle_root, [9; 32]);
        assert_eq!(s.entries, vec![entry(1), entry(2)]);
    }

    #[test]
    fn not_cbor() {
        // Additional information 28 is reserved in every major type.
        let m = invalid_message(&[0x1c]);
        assert!(m.starts_with("invalid snapshot: not CBOR"), "{m}");
        let m = invalid_message(b"{\"version\": 1}");
        assert!(m.starts_with("invalid snapshot: wrong shape"), "{m}");
        let m = invalid_message(&[]);
        assert!(m.contains("ends early"), "{m}");
        let m = invalid_message(&valid()[..40]);
        assert!(m.contains("ends early"), "{m}");
    }

    #[test]
    fn wrong_top_level_type() {
        let m = invalid_message(&from_value(&Value::Array(vec![])));
        assert!(m.starts_with("invalid snapshot: wrong shape"), "{m}");
    }

    #[test]
    fn missing_field() {
        let mut v = to_value(&valid());
        let Value::Map(pairs) = &mut v else { panic!() };
        pairs.retain(|(k, _)| k.as_text() != Some("created_at_ns"));
        let m = invalid_message(&from_value(&v));
        assert!(m.contains("missing field `created_at_ns`"), "{m}");
    }

    #[test]
    fn unknown_and_duplicate_fields() {
        let mut v = to_value(&valid());
        let Value::Map(pairs) = &mut v else { panic!() };
        pairs.push((Value::Text("extra".into()), Value::Bool(true)));
        let m = invalid_message(&from_value(&v));
        assert!(m.contains("unknown field `extra`"), "{m}");

        let mut v = to_value(&valid());
        let Value::Map(pairs) = &mut v else { panic!() };
        pairs.push((
            Value::Text("created_at_ns".into()),
            Value::Integer(1.into()),
        ));
        let m = invalid_message(&from_value(&v));
        assert!(m.contains("duplicate field `created_at_ns`"), "{m}");
    }

    #[test]
    fn payload_as_array_of_integers_is_rejected() {
        let mut v = to_value(&valid());
        *field(first_entry(&mut v), "payload") = Value::Array(vec![Value::Integer(1.into()); 3]);
        let m = invalid_message(&from_value(&v));
        assert!(m.contains("expected a CBOR byte string"), "{m}");
    }

    #[test]
    fn wrong_field_type() {
        let mut v = to_value(&valid());
        *field(first_entry(&mut v), "sequence") = Value::Text("1".into());
        let m = invalid_message(&from_value(&v));
        assert!(m.starts_with("invalid snapshot: wrong shape"), "{m}");
        let mut v = to_value(&valid());
        *field(first_entry(&mut v), "metadata") =
            Value::Map(vec![(Value::Text("a".into()), Value::Integer(1.into()))]);
        let m = invalid_message(&from_value(&v));
        assert!(m.starts_with("invalid snapshot: wrong shape"), "{m}");
    }

    #[test]
    fn duplicate_metadata_key() {
        let mut v = to_value(&valid());
        let kv = (Value::Text("a".into()), Value::Text("2".into()));
        let Value::Map(meta) = field(first_entry(&mut v), "metadata") else {
            panic!()
        };
        meta.push(kv);
        let m = invalid_message(&from_value(&v));
        assert!(m.contains("duplicate metadata key \"a\""), "{m}");
    }

    #[test]
    fn hashes_must_be_32_bytes() {
        let mut v = to_value(&valid());
        *field(&mut v, "merkle_root") = Value::Bytes(vec![0; 31]);
        assert_eq!(
            invalid_message(&from_value(&v)),
            "invalid snapshot: merkle_root is 31 bytes, expected 32"
        );
        let mut v = to_value(&valid());
        *field(first_entry(&mut v), "content_hash") = Value::Bytes(vec![0; 33]);
        assert_eq!(
            invalid_message(&from_value(&v)),
            "invalid snapshot: content_hash of entry 0 (sequence 1) is 33 bytes, expected 32"
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut b = valid();
        b.push(0x00);
        assert_eq!(
            invalid_message(&b),
            "invalid snapshot: 1 trailing bytes after the CBOR map"
        );
    }

    #[test]
    fn entry_count_must_match() {
        let mut v = to_value(&valid());
        *field(&mut v, "entry_count") = Value::Integer(3.into());
        assert_eq!(
            invalid_message(&from_value(&v)),
            "invalid snapshot: entry_count is 3 but the snapshot holds 2 entries"
        );
    }

    #[test]
    fn unknown_versions_are_rejected() {
        let mut v = to_value(&valid());
        *field(&mut v, "version") = Value::Integer(2.into());
        let expected = "unsupported snapshot version 2; this server reads version 1";
        assert_eq!(invalid_message(&from_value(&v)), expected);
        // A future version may change the shape too: still reported as the version.
        let Value::Map(pairs) = &mut v else { panic!() };
        pairs.push((Value::Text("signature".into()), Value::Bytes(vec![1])));
        pairs.retain(|(k, _)| k.as_text() != Some("entries"));
        assert_eq!(invalid_message(&from_value(&v)), expected);
        let mut v = to_value(&valid());
        *field(&mut v, "version") = Value::Integer(0.into());
        assert!(invalid_message(&from_value(&v)).starts_with("unsupported snapshot version 0"));
    }

    use crate::model::arb_entry;

    proptest! {
        #[test]
        fn round_trip(ctx in ".{0,16}", at in any::<u64>(), root in any::<[u8; 32]>(),
                      entries in proptest::collection::vec(arb_entry(), 0..12)) {
            let s = decode(&encode(&ctx, at, &entries, &root)).unwrap();
            prop_assert_eq!(s.version, SNAPSHOT_VERSION);
            prop_assert_eq!(s.context_id, ctx);
            prop_assert_eq!(s.created_at_ns, at);
            prop_assert_eq!(s.merkle_root, root);
            prop_assert_eq!(s.entries, entries);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = decode(&bytes) {
                prop_assert_eq!(e.kind, SnapshotErrorKind::Invalid);
            }
        }

        #[test]
        fn mutated_snapshots_never_panic(
            entries in proptest::collection::vec(arb_entry(), 0..4),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
        ) {
            let mut b = encode("ctx", 1, &entries, &[7; 32]);
            for (at, byte, op) in edits {
                let i = at % (b.len() + 1);
                match op {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 if i < b.len() => { b.remove(i); }
                    _ => b.truncate(i),
                }
            }
            if let Err(e) = decode(&b) {
                prop_assert_eq!(e.kind, SnapshotErrorKind::Invalid);
            }
        }
    }
}
