//! The entry every bench measures with: 256-byte payload, two metadata pairs, fixed fields,
//! so numbers from different benches describe the same bytes.
#![allow(dead_code)]

use bytes::Bytes;
use converge_ledger::integrity::canonical::entry_content_hash;
use converge_ledger::model::{Entry, Metadata};

/// Entry `seq` of context `ctx` under `key`, with its content hash; `meta` adds the two
/// metadata pairs.
pub fn bench_entry(ctx: &str, key: &str, seq: u64, meta: bool) -> Entry {
    let mut metadata = Metadata::new();
    if meta {
        metadata.insert("agent".into(), "planner".into());
        metadata.insert("source".into(), format!("run-{}", seq % 17));
    }
    let mut e = Entry {
        id: format!("0190b6a4-0000-7000-8000-{seq:012}"),
        key: key.into(),
        payload: Bytes::from(vec![(seq % 251) as u8; 256]),
        sequence: seq,
        appended_at_ns: 1_700_000_000_000_000_000 + seq,
        metadata,
        lamport_clock: seq,
        content_hash: [0; 32],
    };
    e.content_hash = entry_content_hash(ctx, &e);
    e
}
