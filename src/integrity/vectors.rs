//! The test vectors of docs/INTEGRITY.md, generated from the real code.
//!
//! The document's vector section must equal what `render` produces, byte for byte, so the
//! published vectors can never drift from the implementation. When the code legitimately
//! changes, the failing test prints the new section to paste in.

use std::fmt::Write as _;

use bytes::Bytes;

use super::*;
use crate::model::{Entry, Hash, Metadata};

const BEGIN: &str = "<!-- BEGIN GENERATED VECTORS (src/integrity/vectors.rs) -->\n";
const END: &str = "<!-- END GENERATED VECTORS -->";
const CONTEXT: &str = "demo-ctx";

/// The 7-entry demo context: varied keys, payloads, metadata, an empty entry, and a clock
/// jump (entry 5 was derived from an entry with clock 8 read from another context).
pub(crate) fn demo_entries() -> Vec<Entry> {
    type Spec<'a> = (&'a str, &'a [u8], u64, &'a [(&'a str, &'a str)]);
    let spec: [Spec; 7] = [
        ("facts", b"the sky is blue", 1, &[]),
        (
            "facts",
            b"water boils at 100 C",
            2,
            &[("source", "agent-a")],
        ),
        (
            "intents",
            b"plan a trip",
            3,
            &[("agent", "planner"), ("priority", "high")],
        ),
        ("", b"", 4, &[]),
        (
            "facts",
            &[0x00, 0x01, 0x02, 0xff],
            9,
            &[("derived_from", "ctx-b#12")],
        ),
        ("intents", b"book flights", 10, &[]),
        ("decisions", b"go", 11, &[("b", "2"), ("a", "1")]),
    ];
    spec.iter()
        .enumerate()
        .map(|(i, (key, payload, clock, meta))| {
            let sequence = i as u64 + 1;
            let mut e = Entry {
                id: format!("entry-{sequence}"),
                key: key.to_string(),
                payload: Bytes::copy_from_slice(payload),
                sequence,
                appended_at_ns: 1_700_000_000_000_000_000 + sequence * 1_000_000,
                metadata: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Metadata>(),
                lamport_clock: *clock,
                content_hash: [0; 32],
            };
            e.content_hash = entry_content_hash(CONTEXT, &e);
            e
        })
        .collect()
}

const DEMO_KEY_NAME: &str = "demo-ledger";
/// RFC 8032 §7.1 TEST 1: a published seed, so anyone can reproduce the signature (never use
/// it for a real ledger).
const DEMO_SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn demo_signer() -> NoteSigner {
    let seed: [u8; 32] = hex::decode(DEMO_SEED_HEX).unwrap().try_into().unwrap();
    NoteSigner::from_seed(DEMO_KEY_NAME, &seed).unwrap()
}

fn hexes(hs: &[Hash]) -> String {
    hs.iter()
        .enumerate()
        .map(|(i, h)| format!("  [{i}] {}\n", hex::encode(h)))
        .collect()
}

/// The generated section of docs/INTEGRITY.md.
fn render() -> String {
    let entries = demo_entries();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.content_hash)).collect();
    let tree = MemoryTree::new(leaves.clone());
    let mut s = String::new();
    s.push_str(BEGIN);
    let _ = writeln!(s, "Context id: `{CONTEXT}` (7 entries).\n");
    s.push_str(
        "| sequence | id | key | payload (hex) | appended_at_ns | lamport_clock | metadata |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for e in &entries {
        let meta: Vec<String> = e
            .metadata
            .iter()
            .map(|(k, v)| format!("`{k}`=`{v}`"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | `{}` | `{}` | `{}` | {} | {} | {} |",
            e.sequence,
            e.id,
            e.key,
            hex::encode(&e.payload),
            e.appended_at_ns,
            e.lamport_clock,
            if meta.is_empty() {
                "(none)".into()
            } else {
                meta.join(", ")
            },
        );
    }
    let e1 = &entries[0];
    let _ = writeln!(
        s,
        "\nCanonical bytes of entry 1:\n\n```text\n{}\n```\n",
        hex::encode(canonical_bytes(
            CONTEXT,
            e1.sequence,
            &e1.key,
            &e1.payload,
            e1.appended_at_ns,
            e1.lamport_clock,
            &e1.metadata
        ))
    );
    let hashes: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
    let _ = writeln!(
        s,
        "Content hashes (`[i]` = leaf index i = sequence i+1):\n\n```text\n{}```\n",
        hexes(&hashes)
    );
    let _ = writeln!(s, "Leaf hashes:\n\n```text\n{}```\n", hexes(&leaves));
    let roots: String = (1..=7u64)
        .map(|n| format!("  size {n}: {}\n", hex::encode(root_at(&tree, n).unwrap())))
        .collect();
    let _ = writeln!(s, "Roots:\n\n```text\n{roots}```\n");
    let path = inclusion_proof(&tree, 4, 7).unwrap();
    let _ = writeln!(
        s,
        "Inclusion proof of sequence 5 (leaf index 4) in the tree of size 7, from the leaf upward:\n\n```text\n{}```\n",
        hexes(&path)
    );
    let proof = consistency_proof(&tree, 3, 7).unwrap();
    let _ = writeln!(
        s,
        "Consistency proof from size 3 to size 7:\n\n```text\n{}```\n",
        hexes(&proof)
    );
    let signer = demo_signer();
    let _ = writeln!(
        s,
        "Signed checkpoint of size 7, with the test key whose Ed25519 seed is RFC 8032 §7.1 \
         TEST 1's (`{DEMO_SEED_HEX}`), named `{DEMO_KEY_NAME}`; verifier key \
         `{}`, key id `{:08x}`:\n\n```text\n{}```",
        signer.verifier().encode(),
        signer.key_id(),
        Checkpoint::new(CONTEXT, 7, root_at(&tree, 7).unwrap()).sign(&signer)
    );
    s.push_str(END);
    s
}

#[test]
fn the_published_vectors_verify() {
    let entries = demo_entries();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(&e.content_hash)).collect();
    let tree = MemoryTree::new(leaves.clone());
    let root7 = root_at(&tree, 7).unwrap();
    let path = inclusion_proof(&tree, 4, 7).unwrap();
    assert_eq!(verify_inclusion(&leaves[4], 4, 7, &path, &root7), Ok(()));
    let proof = consistency_proof(&tree, 3, 7).unwrap();
    let root3 = root_at(&tree, 3).unwrap();
    assert_eq!(verify_consistency(3, 7, &root3, &root7, &proof), Ok(()));
    let note = Checkpoint::new(CONTEXT, 7, root7).sign(&demo_signer());
    let (cp, _) = checkpoint::read(note.as_bytes(), Some(&demo_signer().verifier())).unwrap();
    assert_eq!((cp.tree_size, cp.root), (7, root7));
}

#[test]
fn docs_integrity_md_carries_the_generated_vectors() {
    let doc = include_str!("../../docs/INTEGRITY.md");
    crate::doc_check::assert_generated_section("docs/INTEGRITY.md", doc, BEGIN, END, &render());
}
