//! Every line of the ContextService contract, through a real gRPC client against a real
//! server on a free port.

mod common;

use common::*;
use converge_ledger::integrity::merkle::empty_root;
use converge_ledger::proto::{self, Durability};
use futures::StreamExt;
use std::collections::HashSet;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_assigns_contiguous_sequences_ids_clocks_and_hashes() {
    let (ledger, c) = start_memory().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut ids = HashSet::new();
    for i in 1..=5u64 {
        let r = c
            .append(append_req("ctx-a", "facts", &format!("p{i}")))
            .await
            .unwrap();
        let e = r.entry.unwrap();
        assert_eq!(e.sequence, i);
        assert_eq!(
            e.lamport_clock, i,
            "no received clock: clock = previous + 1"
        );
        assert!(!e.id.is_empty());
        assert!(ids.insert(e.id.clone()), "ids are unique");
        assert!(e.appended_at_ns >= before);
        assert_eq!(e.content_hash.len(), 32);
        assert_eq!(&e.content_hash[..], &recomputed_hash("ctx-a", &e)[..]);
        assert!(!r.duplicate);
        assert_eq!(r.durability, Durability::Memory as i32);
    }
    // Another context has its own sequence.
    let e = c
        .append(append_req("ctx-b", "k", "x"))
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(e.sequence, 1);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lamport_clock_honours_received_clock() {
    let (ledger, c) = start_memory().await;
    let mut req = append_req("lc", "k", "a");
    req.received_lamport_clock = 10;
    assert_eq!(
        c.append(req.clone())
            .await
            .unwrap()
            .entry
            .unwrap()
            .lamport_clock,
        11
    );
    req.received_lamport_clock = 3; // lower than current: max(11, 3) + 1
    assert_eq!(
        c.append(req.clone())
            .await
            .unwrap()
            .entry
            .unwrap()
            .lamport_clock,
        12
    );
    req.received_lamport_clock = 0; // none
    assert_eq!(
        c.append(req).await.unwrap().entry.unwrap().lamport_clock,
        13
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_empty_context_and_filters() {
    let (ledger, c) = start_memory().await;
    let r = c.get_after("nothing", 0, 0).await.unwrap();
    assert!(r.entries.is_empty());
    assert_eq!(r.latest_sequence, 0);
    assert_eq!(&r.merkle_root[..], &empty_root()[..]);

    for (k, p) in [
        ("facts", "1"),
        ("intents", "2"),
        ("facts", "3"),
        ("traces", "4"),
        ("facts", "5"),
    ] {
        c.append(append_req("g", k, p)).await.unwrap();
    }
    let all = c.get_after("g", 0, 0).await.unwrap();
    assert_eq!(
        all.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(&all.merkle_root[..], &root_of(&all.entries)[..]);

    let r = c.get_after("g", 2, 2).await.unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(r.latest_sequence, 5, "latest describes the whole context");
    assert_eq!(
        r.merkle_root, all.merkle_root,
        "root describes the whole context"
    );

    let r = c
        .get(proto::GetRequest {
            context_id: "g".into(),
            key: "facts".into(),
            after_sequence: 1,
            limit: 1,

            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3],
        "oldest match first"
    );
    assert_eq!(r.latest_sequence, 5);
    assert_eq!(r.merkle_root, all.merkle_root);
    let r = c
        .get(proto::GetRequest {
            context_id: "g".into(),
            key: "facts".into(),
            after_sequence: 0,
            limit: 0,

            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 3, 5]
    );
    let r = c.get_after("g", 5, 10).await.unwrap();
    assert!(r.entries.is_empty());
    ledger.shutdown().await;
}

/// What a Get must return, computed from the whole context: the filter, the bounds, the
/// order (key order first for a prefix), the limit.
fn expected_get(all: &[proto::Entry], req: &proto::GetRequest) -> Vec<u64> {
    let mut m: Vec<&proto::Entry> = all
        .iter()
        .filter(|e| e.sequence > req.after_sequence)
        .filter(|e| req.before_sequence == 0 || e.sequence < req.before_sequence)
        .filter(|e| req.key.is_empty() || e.key == req.key)
        .filter(|e| e.key.starts_with(&req.key_prefix))
        .collect();
    if !req.key_prefix.is_empty() {
        m.sort_by(|a, b| (&a.key, a.sequence).cmp(&(&b.key, b.sequence)));
    }
    if req.newest_first {
        m.reverse();
    }
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    m.iter().take(limit).map(|e| e.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_newest_first_before_sequence_and_key_prefix() {
    let (ledger, c) = start_memory().await;
    // 700 entries: several 256-sequence index blocks; keys sharing prefixes, one key ("c/a")
    // that is itself a prefix of others, one key sorting just after the "c/a/" range.
    let keys = [
        "c/a/1", "w/a", "c/a/2", "c/b/1", "c/a", "c/a0", "c/a/10", "",
    ];
    for i in 0..700usize {
        let key = keys[(i * 7 + i / 5) % keys.len()];
        c.append(append_req("np", key, &format!("p{i}")))
            .await
            .unwrap();
    }
    let all = c.read_all("np").await.unwrap();
    assert_eq!(all.len(), 700);
    let whole = c.get_after("np", 0, 1).await.unwrap();
    let mut checked = 0;
    for (key, prefix) in [
        ("", ""),
        ("c/a/1", ""),
        ("", "c/a/"),
        ("", "c/"),
        ("", "c/a"),
        ("", "zz"),
    ] {
        for (after, before) in [(0, 0), (0, 300), (10, 0), (255, 513), (600, 601), (5, 5)] {
            for limit in [0u32, 1, 3, 400] {
                for newest_first in [false, true] {
                    let req = proto::GetRequest {
                        context_id: "np".into(),
                        key: key.into(),
                        key_prefix: prefix.into(),
                        after_sequence: after,
                        before_sequence: before,
                        limit,
                        newest_first,
                    };
                    let r = c.get(req.clone()).await.unwrap();
                    let got: Vec<u64> = r.entries.iter().map(|e| e.sequence).collect();
                    assert_eq!(got, expected_get(&all, &req), "{req:?}");
                    for e in &r.entries {
                        assert_eq!(e, &all[e.sequence as usize - 1], "whole entries");
                    }
                    assert_eq!(r.latest_sequence, 700, "latest describes the whole context");
                    assert_eq!(
                        r.merkle_root, whole.merkle_root,
                        "root of the whole context"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 6 * 4 * 2);
    // Newest first without bounds: the last entries, latest first.
    let r = c
        .get(proto::GetRequest {
            context_id: "np".into(),
            newest_first: true,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [700, 699]
    );

    let s = c
        .get(proto::GetRequest {
            context_id: "np".into(),
            key: "c/a".into(),
            key_prefix: "c/".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("key_prefix") && s.message().contains("key and"),
        "{}",
        s.message()
    );
    let s = c
        .get(proto::GetRequest {
            context_id: "np".into(),
            key_prefix: "p".repeat(300),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("key_prefix is 300 bytes"),
        "{}",
        s.message()
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_second_size_zero_means_the_latest() {
    let (ledger, c) = start_memory().await;
    let s = c.prove_consistency("cz", 1, 0).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "empty context: {s:?}");
    for i in 0..7 {
        c.append(append_req("cz", "k", &format!("p{i}")))
            .await
            .unwrap();
    }
    let latest = c.prove_consistency("cz", 3, 0).await.unwrap();
    let explicit = c.prove_consistency("cz", 3, 7).await.unwrap();
    assert_eq!(latest.second_size, 7);
    assert_eq!(explicit.second_size, 7);
    assert_eq!(latest.proof, explicit.proof);
    assert_eq!(latest.first_root, explicit.first_root);
    assert_eq!(
        latest.second_root,
        c.root("cz", 0).await.unwrap().merkle_root
    );
    assert_eq!(
        c.prove_consistency("cz", 7, 0).await.unwrap().second_size,
        7
    );
    let s = c.prove_consistency("cz", 8, 0).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().contains("first_size 8"), "{}", s.message());
    let s = c.prove_consistency("cz", 5, 4).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_key_and_empty_metadata_key_are_allowed() {
    let (ledger, c) = start_memory().await;
    let mut req = append_req("e", "", "");
    req.metadata.insert(String::new(), String::new());
    let e = c.append(req).await.unwrap().entry.unwrap();
    assert_eq!(e.key, "");
    assert_eq!(e.metadata.get(""), Some(&String::new()));
    assert_eq!(&e.content_hash[..], &recomputed_hash("e", &e)[..]);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_append() {
    let (ledger, c) = start_memory().await;
    let mut req = append_req("idem", "facts", "payload");
    req.metadata.insert("step".into(), "1".into());
    req.idempotency_key = "step-1".into();
    let first = c.append(req.clone()).await.unwrap();
    assert!(!first.duplicate);
    let mut retry = req.clone();
    retry.received_lamport_clock = 99; // not content
    let again = c.append(retry).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.entry, first.entry);
    assert_eq!(
        c.get_after("idem", 0, 0).await.unwrap().latest_sequence,
        1,
        "nothing appended"
    );

    for change in 0..3 {
        let mut other = req.clone();
        match change {
            0 => other.payload = "different".as_bytes().to_vec().into(),
            1 => other.key = "intents".into(),
            _ => {
                other.metadata.insert("x".into(), "y".into());
            }
        }
        let s = c.append(other).await.unwrap_err();
        assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
        assert!(s.message().contains("step-1"), "{}", s.message());
    }
    // The same idempotency key in another context is independent.
    let mut elsewhere = req.clone();
    elsewhere.context_id = "idem-2".into();
    assert!(!c.append(elsewhere).await.unwrap().duplicate);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_idempotency_key_append_once() {
    let (ledger, c) = start_memory().await;
    let mut req = append_req("race", "k", "v");
    req.idempotency_key = "once".into();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, req) = (c.clone(), req.clone());
            tokio::spawn(async move { c.append(req).await.unwrap() })
        })
        .collect();
    let mut originals = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.entry.unwrap().sequence, 1);
        originals += usize::from(!r.duplicate);
    }
    assert_eq!(originals, 1);
    assert_eq!(c.get_after("race", 0, 0).await.unwrap().latest_sequence, 1);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_field_and_limit() {
    let (ledger, c) = start_memory().await;
    let s = c.append(append_req("", "k", "v")).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("context_id"), "{}", s.message());

    let s = c
        .append(append_req(&"c".repeat(257), "k", "v"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .contains("context_id is 257 bytes, over the limit of 256"),
        "{}",
        s.message()
    );
    assert!(c
        .append(append_req(&"c".repeat(256), "k", "v"))
        .await
        .is_ok());

    let s = c
        .append(append_req("v", &"k".repeat(257), "v"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .contains("key is 257 bytes, over the limit of 256"),
        "{}",
        s.message()
    );

    let mut req = append_req("v", "k", "v");
    for i in 0..65 {
        req.metadata.insert(format!("m{i}"), "x".into());
    }
    let s = c.append(req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("65 pairs, over the limit of 64"),
        "{}",
        s.message()
    );

    let mut req = append_req("v", "k", "v");
    req.metadata.insert("a".repeat(1025), "x".into());
    let s = c.append(req).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("over the limit of 1024 bytes"),
        "{}",
        s.message()
    );
    let mut req = append_req("v", "k", "v");
    req.metadata.insert("a".into(), "x".repeat(1025));
    assert_eq!(code(c.append(req).await), Code::InvalidArgument);

    // Get and Watch validate too.
    assert_eq!(code(c.get_after("", 0, 0).await), Code::InvalidArgument);
    assert_eq!(
        code(
            c.watch(proto::WatchRequest {
                context_id: "x".into(),
                key: "k".repeat(300),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );
    // The server is undisturbed.
    assert!(c.append(append_req("v", "k", "fine")).await.is_ok());
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_inclusive_and_over_it_is_resource_exhausted() {
    let (ledger, c) = start_memory().await;
    let max = 4 << 20;
    let mut req = append_req("big", "k", "");
    req.payload = vec![7u8; max].into();
    let e = c.append(req.clone()).await.unwrap().entry.unwrap();
    assert_eq!(e.payload.len(), max);
    req.payload = vec![7u8; max + 1].into();
    let s = c.append(req).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(
        s.message()
            .contains(&format!("{} bytes, over the limit of {max}", max + 1)),
        "{}",
        s.message()
    );
    ledger.shutdown().await;
}

async fn fill(c: &converge_ledger::client::LedgerClient, ctx: &str, n: usize) -> Vec<proto::Entry> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut req = append_req(
            ctx,
            ["facts", "intents", "traces"][i % 3],
            &format!("payload {i}"),
        );
        req.metadata.insert("step".into(), i.to_string());
        out.push(c.append(req).await.unwrap().entry.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_load_round_trip_into_empty_contexts() {
    let (ledger, c) = start_memory().await;
    let original = fill(&c, "src", 20).await;
    let snap = c.snapshot("src").await.unwrap();
    let meta = snap.metadata.clone().unwrap();
    assert_eq!(snap.sequence, 20);
    assert_eq!(meta.entry_count, 20);
    assert_eq!(meta.version, 1);
    assert_eq!(&meta.merkle_root[..], &root_of(&original)[..]);

    // Same id: identical entries, same root.
    let (ledger2, c2) = start_memory().await;
    let r = c2.load("src", snap.snapshot.clone(), true).await.unwrap();
    assert_eq!(r.entries_restored, 20);
    assert_eq!(r.latest_sequence, 20);
    assert_eq!(r.merkle_root, meta.merkle_root);
    assert_eq!(c2.read_all("src").await.unwrap(), original);

    // Another id: every field kept, content hashes recomputed for the new id.
    let r = c.load("copy", snap.snapshot.clone(), false).await.unwrap();
    assert_eq!(r.entries_restored, 20);
    let copy = c.read_all("copy").await.unwrap();
    for (a, b) in original.iter().zip(&copy) {
        assert_eq!(
            (
                a.id.clone(),
                a.key.clone(),
                a.payload.clone(),
                a.sequence,
                a.appended_at_ns,
                a.metadata.clone(),
                a.lamport_clock
            ),
            (
                b.id.clone(),
                b.key.clone(),
                b.payload.clone(),
                b.sequence,
                b.appended_at_ns,
                b.metadata.clone(),
                b.lamport_clock
            )
        );
        assert_eq!(&b.content_hash[..], &recomputed_hash("copy", b)[..]);
        assert_ne!(a.content_hash, b.content_hash);
    }
    assert_eq!(&r.merkle_root[..], &root_of(&copy)[..]);
    // After Load the clock continues from the last restored entry.
    let next = c
        .append(append_req("copy", "k", "after"))
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(next.sequence, 21);
    assert_eq!(next.lamport_clock, original[19].lamport_clock + 1);

    // An empty context snapshots to something that loads 0 entries.
    let empty = c.snapshot("never-written").await.unwrap();
    assert_eq!(empty.sequence, 0);
    assert_eq!(
        &empty.metadata.clone().unwrap().merkle_root[..],
        &empty_root()[..]
    );
    let r = c.load("also-empty", empty.snapshot, false).await.unwrap();
    assert_eq!((r.entries_restored, r.latest_sequence), (0, 0));
    ledger.shutdown().await;
    ledger2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_into_non_empty_contexts_prefix_and_divergence_rules() {
    let (ledger, c) = start_memory().await;
    fill(&c, "src", 10).await;
    let full = c.snapshot("src").await.unwrap().snapshot;

    let (ledger2, c2) = start_memory().await;

    // fail_if_exists on a non-empty context.
    assert_eq!(
        code(c.load("src", full.clone(), true).await),
        Code::AlreadyExists
    );
    // A snapshot equal to the stored history: OK, 0 restored.
    let r = c.load("src", full.clone(), false).await.unwrap();
    assert_eq!((r.entries_restored, r.latest_sequence), (0, 10));

    // Grow src; the old snapshot is now a shorter prefix: consistent, 0 restored.
    fill(&c, "src", 5).await;
    let r = c.load("src", full.clone(), false).await.unwrap();
    assert_eq!((r.entries_restored, r.latest_sequence), (0, 15));
    let longer = c.snapshot("src").await.unwrap().snapshot;

    // A context holding the first 10 gets the 5 missing from the longer snapshot.
    c2.load("grow", full.clone(), false).await.unwrap();
    let r = c2.load("grow", longer.clone(), false).await.unwrap();
    assert_eq!((r.entries_restored, r.latest_sequence), (5, 15));
    let grown = c2.read_all("grow").await.unwrap();
    assert_eq!(grown.len(), 15);
    assert_eq!(&r.merkle_root[..], &root_of(&grown)[..]);

    // Divergence: a context whose entry 3 differs refuses, and nothing is written.
    fill(&c2, "diverged", 12).await;
    let before = c2.read_all("diverged").await.unwrap();
    let s = c2
        .load("diverged", longer.clone(), false)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert_eq!(c2.read_all("diverged").await.unwrap(), before);
    ledger.shutdown().await;
    ledger2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_refuses_bad_blobs_and_writes_nothing() {
    let (ledger, c) = start_memory().await;
    fill(&c, "src", 5).await;
    let good = c.snapshot("src").await.unwrap().snapshot.to_vec();

    let s = c
        .load("t", b"not cbor at all".to_vec().into(), false)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Valid CBOR of the wrong shape.
    let mut wrong = Vec::new();
    ciborium::into_writer(
        &ciborium::Value::Array(vec![ciborium::Value::Integer(1.into())]),
        &mut wrong,
    )
    .unwrap();
    assert_eq!(
        code(c.load("t", wrong.into(), false).await),
        Code::InvalidArgument
    );

    // A flipped byte inside a payload: the content hash no longer matches.
    let needle = b"payload 3";
    let at = good
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("payload bytes in snapshot");
    let mut tampered = good.clone();
    tampered[at + 8] = b'X';
    let s = c.load("t", tampered.into(), false).await.unwrap_err();
    assert_eq!(s.code(), Code::DataLoss, "{s:?}");

    assert_eq!(
        c.get_after("t", 0, 0).await.unwrap().latest_sequence,
        0,
        "nothing written"
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_catches_up_then_streams_live_with_roots() {
    let (ledger, c) = start_memory().await;
    let stored = fill(&c, "w", 6).await;
    let mut stream = c
        .watch(proto::WatchRequest {
            context_id: "w".into(),
            key: String::new(),
            from_sequence: 2,
            signal_caught_up: true,
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    let marker = stream.next().await.unwrap().unwrap();
    assert!(marker.caught_up && marker.entry.is_none());
    let live = fill(&c, "w", 3).await;
    for _ in 0..3 {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    let all: Vec<_> = stored.iter().chain(&live).cloned().collect();
    assert_eq!(
        seen.iter()
            .map(|e| e.entry.as_ref().unwrap().sequence)
            .collect::<Vec<_>>(),
        [3, 4, 5, 6, 7, 8, 9]
    );
    for ev in &seen {
        let seq = ev.entry.as_ref().unwrap().sequence as usize;
        assert_eq!(ev.entry.as_ref().unwrap(), &all[seq - 1]);
        assert_eq!(
            &ev.merkle_root[..],
            &root_of(&all[..seq])[..],
            "root at tree size = sequence"
        );
        assert!(!ev.caught_up);
    }

    // Key filter, and no marker unless asked.
    let mut facts = c
        .watch(proto::WatchRequest {
            context_id: "w".into(),
            key: "facts".into(),
            from_sequence: 0,
            signal_caught_up: false,
        })
        .await
        .unwrap();
    for want in [1u64, 4, 7] {
        let ev = facts.next().await.unwrap().unwrap();
        assert_eq!(ev.entry.as_ref().unwrap().sequence, want);
        assert_eq!(&ev.merkle_root[..], &root_of(&all[..want as usize])[..]);
    }
    fill(&c, "w", 1).await; // seq 10, key facts (index 0 of fill's rotation)
    assert_eq!(
        facts.next().await.unwrap().unwrap().entry.unwrap().sequence,
        10
    );
    ledger.shutdown().await;
}

/// A backlog of several catch-up pages (128 entries each), filtered by key: every match in
/// order, the caught-up marker only after the last of them, then live matches — with the
/// non-matching tail of the backlog skipped rather than mistaken for a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_watch_over_several_pages_marks_caught_up_after_the_backlog() {
    let (ledger, c) = start_memory().await;
    let stored = fill(&c, "pages", 400).await; // keys rotate facts, intents, traces
    let mut stream = c
        .watch(proto::WatchRequest {
            context_id: "pages".into(),
            key: "intents".into(),
            from_sequence: 0,
            signal_caught_up: true,
        })
        .await
        .unwrap();
    let want: Vec<u64> = stored
        .iter()
        .filter(|e| e.key == "intents")
        .map(|e| e.sequence)
        .collect();
    assert_eq!(want.len(), 133);
    for &seq in &want {
        let ev = stream.next().await.unwrap().unwrap();
        assert!(!ev.caught_up, "marker before sequence {seq}");
        assert_eq!(ev.entry.unwrap().sequence, seq);
    }
    let marker = stream.next().await.unwrap().unwrap();
    assert!(marker.caught_up && marker.entry.is_none());
    // Stored entries end with 400 (key facts): the filter skipped it. Live: 401 facts,
    // 402 intents.
    fill(&c, "pages", 2).await;
    let live = stream.next().await.unwrap().unwrap();
    assert_eq!(live.entry.as_ref().unwrap().sequence, 402);
    assert_eq!(live.entry.unwrap().key, "intents");
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_with_unavailable_on_shutdown() {
    let (ledger, c) = start_memory().await;
    fill(&c, "s", 2).await;
    let mut stream = c
        .watch(proto::WatchRequest {
            context_id: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next_seq(&mut stream).await, 1);
    assert_eq!(next_seq(&mut stream).await, 2);
    let stop = tokio::spawn(ledger.shutdown());
    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        end.message().contains("from_sequence=2"),
        "{}",
        end.message()
    );
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let (ledger, c) = start_memory().await;
    assert!(c.health_serving().await.unwrap());
    let channel = tonic::transport::Channel::from_shared(ledger.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let MessageResponse::ListServicesResponse(list) = resp
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    else {
        panic!("list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"converge.context.v1.ContextService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_and_idempotency_keys_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, c) = start(dir_config(dir.path())).await;
    let mut req = append_req("durable", "k", "v");
    req.idempotency_key = "once".into();
    let first = c.append(req.clone()).await.unwrap();
    assert_eq!(first.durability, Durability::Fsynced as i32);
    fill(&c, "durable", 9).await;
    let before = c.get_after("durable", 0, 0).await.unwrap();
    ledger.shutdown().await;

    let (ledger, c) = start(dir_config(dir.path())).await;
    let after = c.get_after("durable", 0, 0).await.unwrap();
    assert_eq!(after, before);
    let again = c.append(req).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.entry, first.entry);
    let next = c
        .append(append_req("durable", "k", "more"))
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(next.sequence, 11);
    assert_eq!(next.lamport_clock, 11);
    ledger.shutdown().await;
}
