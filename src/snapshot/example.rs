//! The 1-entry example of docs/SNAPSHOT.md, generated from the real encoder.
//!
//! The document's example section must equal what `render` produces, so the published hex
//! can never drift from the format. When the format legitimately changes, the failing test
//! prints the new section to paste in.

use std::fmt::Write as _;

use bytes::Bytes;

use super::{decode, encode, verify};
use crate::integrity::{entry_content_hash, leaf_hash, Frontier};
use crate::model::{Entry, Limits, Metadata};

const BEGIN: &str = "<!-- BEGIN GENERATED EXAMPLE (src/snapshot/example.rs) -->\n";
const END: &str = "<!-- END GENERATED EXAMPLE -->";

fn example() -> (Entry, Vec<u8>, [u8; 32]) {
    let mut e = Entry {
        id: "entry-1".into(),
        key: "facts".into(),
        payload: Bytes::from_static(b"hello"),
        sequence: 1,
        appended_at_ns: 1_700_000_000_000_000_000,
        metadata: [("source".to_string(), "agent-a".to_string())]
            .into_iter()
            .collect::<Metadata>(),
        lamport_clock: 1,
        content_hash: [0; 32],
    };
    e.content_hash = entry_content_hash("demo-ctx", &e);
    let mut f = Frontier::empty();
    f.push(leaf_hash(&e.content_hash), &mut Vec::new());
    let root = f.root();
    let bytes = encode(
        "demo-ctx",
        1_700_000_000_500_000_000,
        std::slice::from_ref(&e),
        &root,
    );
    (e, bytes, root)
}

fn render() -> String {
    let (e, bytes, root) = example();
    let mut s = String::new();
    s.push_str(BEGIN);
    let _ = writeln!(
        s,
        "A snapshot of context `demo-ctx` taken at `created_at_ns` 1700000000500000000, holding \
one entry: id `{}`, key `{}`, payload `hello`, sequence {}, appended_at_ns {}, lamport_clock {}, \
metadata `source`=`agent-a`; its content hash is `{}` and the root of the 1-leaf tree is `{}`.\n",
        e.id,
        e.key,
        e.sequence,
        e.appended_at_ns,
        e.lamport_clock,
        hex::encode(e.content_hash),
        hex::encode(root)
    );
    let _ = writeln!(s, "{} bytes:\n\n```text", bytes.len());
    for line in bytes.chunks(32) {
        let _ = writeln!(s, "{}", hex::encode(line));
    }
    s.push_str("```\n");
    s.push_str(END);
    s
}

#[test]
fn the_example_decodes_and_verifies() {
    let (e, bytes, root) = example();
    let s = decode(&bytes).unwrap();
    assert_eq!(s.entries, vec![e]);
    assert_eq!(verify(&s, &Limits::with_payload_max(1024)), Ok(root));
}

#[test]
fn docs_snapshot_md_carries_the_generated_example() {
    let doc = include_str!("../../docs/SNAPSHOT.md");
    crate::doc_check::assert_generated_section("docs/SNAPSHOT.md", doc, BEGIN, END, &render());
}
