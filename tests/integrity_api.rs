//! IntegrityService through a real gRPC client against a real server on a free port: every
//! argument rule of the contract, proofs that verify with the crate's RFC 9162 verifier,
//! historical roots equal to the roots the context had, and signed checkpoints.

mod common;

use common::*;
use converge_ledger::config::Config;
use converge_ledger::integrity::checkpoint;
use converge_ledger::integrity::merkle::{empty_root, leaf_hash};
use converge_ledger::integrity::proof::{
    consistency_proof, inclusion_proof, root_at, verify_consistency, verify_inclusion, MemoryTree,
};
use converge_ledger::integrity::{Checkpoint, NoteSigner, SignatureCheck};
use converge_ledger::model::Hash;
use converge_ledger::proto;
use converge_ledger::server::{Ledger, StartError};
use tonic::Code;

fn h(b: &[u8]) -> Hash {
    b.try_into().expect("32-byte hash")
}

fn hashes(v: &[bytes::Bytes]) -> Vec<Hash> {
    v.iter().map(|b| h(b)).collect()
}

/// Appends `n` entries to `ctx`, some with a received clock, and returns each entry with
/// the root Get reported right after it was appended (the root the context had then).
async fn grow(
    c: &converge_ledger::client::LedgerClient,
    ctx: &str,
    n: u64,
) -> Vec<(proto::Entry, Hash)> {
    let mut out = Vec::new();
    for i in 1..=n {
        let mut req = append_req(
            ctx,
            if i % 3 == 0 { "intents" } else { "facts" },
            &format!("p{i}"),
        );
        if i % 7 == 0 {
            req.received_lamport_clock = 10 * i;
        }
        let e = c.append(req).await.unwrap().entry.unwrap();
        let g = c.get_after(ctx, e.sequence, 1).await.unwrap();
        assert_eq!(g.latest_sequence, i);
        out.push((e, h(&g.merkle_root)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_context_has_the_empty_root_and_no_proofs() {
    let (ledger, c) = start_memory().await;
    let r = c.root("empty", 0).await.unwrap();
    assert_eq!(r.tree_size, 0);
    assert_eq!(h(&r.merkle_root), empty_root());
    assert_eq!(r.lamport_clock, 0);
    assert!(r.checkpoint.is_empty(), "no signing key: no checkpoint");

    let e = c.root("empty", 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message()
            .contains("tree_size 1 is beyond the latest tree size 0"),
        "{e:?}"
    );
    let e = c.prove_inclusion("empty", 1, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("has no entries"), "{e:?}");
    let e = c.prove_inclusion("empty", 1, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.prove_consistency("empty", 1, 1).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The context id is validated like everywhere else.
    assert_eq!(code(c.root("", 0).await), Code::InvalidArgument);
    assert_eq!(
        code(c.prove_inclusion("", 1, 0).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.prove_consistency("", 1, 1).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.root("x".repeat(257), 0).await),
        Code::InvalidArgument
    );
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_argument_rule_has_its_code_and_names_the_values() {
    let (ledger, c) = start_memory().await;
    grow(&c, "r", 5).await;

    let cases: Vec<(Result<(), tonic::Status>, Code, &str)> = vec![
        (
            c.prove_inclusion("r", 0, 0).await.map(drop),
            Code::InvalidArgument,
            "sequence 0",
        ),
        (
            c.prove_inclusion("r", 0, 3).await.map(drop),
            Code::InvalidArgument,
            "sequence 0",
        ),
        (
            c.prove_inclusion("r", 4, 3).await.map(drop),
            Code::InvalidArgument,
            "sequence 4 is above tree_size 3",
        ),
        (
            c.prove_inclusion("r", 6, 0).await.map(drop),
            Code::NotFound,
            "sequence 6 is beyond the latest sequence 5",
        ),
        (
            c.prove_inclusion("r", 1, 6).await.map(drop),
            Code::NotFound,
            "tree_size 6 is beyond the latest tree size 5",
        ),
        (
            c.root("r", 6).await.map(drop),
            Code::NotFound,
            "tree_size 6 is beyond the latest tree size 5",
        ),
        (
            c.prove_consistency("r", 0, 3).await.map(drop),
            Code::InvalidArgument,
            "first_size 0",
        ),
        (
            c.prove_consistency("r", 0, 0).await.map(drop),
            Code::InvalidArgument,
            "first_size 0",
        ),
        (
            c.prove_consistency("r", 4, 3).await.map(drop),
            Code::InvalidArgument,
            "first_size 4 is greater than second_size 3",
        ),
        (
            c.prove_consistency("r", 2, 6).await.map(drop),
            Code::NotFound,
            "second_size 6 is beyond the latest tree size 5",
        ),
        // Argument errors do not depend on the context's state: also on an empty context.
        (
            c.prove_inclusion("nothing", 0, 0).await.map(drop),
            Code::InvalidArgument,
            "sequence 0",
        ),
        (
            c.prove_consistency("nothing", 3, 2).await.map(drop),
            Code::InvalidArgument,
            "first_size 3 is greater than second_size 2",
        ),
    ];
    for (i, (result, want, needle)) in cases.into_iter().enumerate() {
        let e = result.expect_err("an error");
        assert_eq!(e.code(), want, "case {i}: {e:?}");
        assert!(
            e.message().contains(needle),
            "case {i}: {needle:?} not in {:?}",
            e.message()
        );
    }

    // first == second: OK with an empty proof and equal roots.
    let p = c.prove_consistency("r", 3, 3).await.unwrap();
    assert!(p.proof.is_empty());
    assert_eq!(p.first_root, p.second_root);
    assert_eq!(
        h(&p.first_root),
        h(&c.root("r", 3).await.unwrap().merkle_root)
    );
    let p = c.prove_consistency("r", 5, 5).await.unwrap();
    assert!(p.proof.is_empty());

    // tree_size 0 means the latest.
    let latest = c.root("r", 0).await.unwrap();
    assert_eq!(latest.tree_size, 5);
    let inc = c.prove_inclusion("r", 2, 0).await.unwrap();
    assert_eq!(inc.tree_size, 5);
    assert_eq!(inc.merkle_root, latest.merkle_root);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_and_historical_roots_never_change() {
    let (ledger, c) = start_memory().await;
    let n = 37u64;
    let grown = grow(&c, "hist", n).await;
    let leaves: Vec<Hash> = grown
        .iter()
        .map(|(e, _)| leaf_hash(&recomputed_hash("hist", e)))
        .collect();
    let tree = MemoryTree::new(leaves.clone());

    // Appends to another context do not disturb this one.
    grow(&c, "other", 3).await;

    for m in 1..=n {
        let (entry_m, root_then) = &grown[m as usize - 1];
        let r = c.root("hist", m).await.unwrap();
        assert_eq!(r.tree_size, m);
        assert_eq!(h(&r.merkle_root), *root_then, "root at size {m} changed");
        assert_eq!(h(&r.merkle_root), root_at(&tree, m).unwrap());
        assert_eq!(r.lamport_clock, entry_m.lamport_clock, "clock of entry {m}");

        for seq in 1..=m {
            let p = c.prove_inclusion("hist", seq, m).await.unwrap();
            assert_eq!((p.tree_size, h(&p.merkle_root)), (m, *root_then));
            let entry = p.entry.unwrap();
            assert_eq!(
                entry,
                grown[seq as usize - 1].0,
                "the proved entry is the appended one"
            );
            let leaf = leaf_hash(&recomputed_hash("hist", &entry));
            let path = hashes(&p.audit_path);
            assert_eq!(path, inclusion_proof(&tree, seq - 1, m).unwrap());
            assert_eq!(
                verify_inclusion(&leaf, seq - 1, m, &path, root_then),
                Ok(())
            );
            // The same path against another size's root fails.
            if m > 1 {
                let other = grown[m as usize - 2].1;
                assert!(verify_inclusion(&leaf, seq - 1, m, &path, &other).is_err());
            }
        }
        for first in 1..=m {
            let p = c.prove_consistency("hist", first, m).await.unwrap();
            let first_root = grown[first as usize - 1].1;
            assert_eq!(h(&p.first_root), first_root);
            assert_eq!(h(&p.second_root), *root_then);
            let proof = hashes(&p.proof);
            assert_eq!(proof, consistency_proof(&tree, first, m).unwrap());
            assert_eq!(
                verify_consistency(first, m, &first_root, root_then, &proof),
                Ok(()),
                "{first} -> {m}"
            );
        }
    }
    ledger.shutdown().await;
}

/// A fresh signing key file, as `keygen` writes it.
fn key_file(dir: &std::path::Path, seed: u8) -> (std::path::PathBuf, NoteSigner) {
    let signer = NoteSigner::from_seed("ledger.test", &[seed; 32]).unwrap();
    let path = dir.join(format!("key-{seed}"));
    std::fs::write(&path, format!("{}\n", signer.encode())).unwrap();
    (path, signer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_verify_with_the_key_and_fail_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let (path, signer) = key_file(dir.path(), 1);
    let (_, other) = key_file(dir.path(), 2);
    let (ledger, c) = start(Config {
        signing_key: Some(path),
        ..Config::for_test()
    })
    .await;

    // The empty tree has a checkpoint too.
    let r = c.root("signed", 0).await.unwrap();
    let (cp, check) = checkpoint::read(&r.checkpoint, Some(&signer.verifier())).unwrap();
    assert_eq!(cp, Checkpoint::new("signed", 0, empty_root()));
    assert!(matches!(check, SignatureCheck::Verified { .. }));

    let grown = grow(&c, "signed", 6).await;
    for m in [0u64, 3, 6] {
        let r = c.root("signed", m).await.unwrap();
        let size = if m == 0 { 6 } else { m };
        let text = std::str::from_utf8(&r.checkpoint).unwrap();
        assert!(
            text.starts_with(&format!("converge-ledger/signed\n{size}\n")),
            "{text}"
        );
        assert!(text.contains("\n\n\u{2014} ledger.test "), "{text}");
        let (cp, _) = checkpoint::read(&r.checkpoint, Some(&signer.verifier())).unwrap();
        assert_eq!(cp.tree_size, size);
        assert_eq!(cp.root, grown[size as usize - 1].1);
        assert_eq!(cp.root, h(&r.merkle_root));

        let e = checkpoint::read(&r.checkpoint, Some(&other.verifier())).unwrap_err();
        assert!(
            e.to_string().contains("no signature by key ledger.test+"),
            "{e}"
        );
    }
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signing_key_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.key");
    std::fs::write(&path, "not a key\n").unwrap();
    let config = Config {
        signing_key: Some(path.clone()),
        ..Config::for_test()
    };
    let e = Ledger::start(&config).await.err().expect("start fails");
    assert!(matches!(e, StartError::SigningKey { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("bad.key"), "{text}");
    assert!(text.contains("PRIVATE+KEY+"), "{text}");

    let config = Config {
        signing_key: Some(dir.path().join("missing.key")),
        ..Config::for_test()
    };
    let e = Ledger::start(&config).await.err().expect("start fails");
    assert!(e.to_string().contains("missing.key"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_service_reports_serving() {
    let (ledger, c) = start_memory().await;
    let channel = tonic::transport::Endpoint::from_shared(ledger.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    // The statuses are set by a task the router spawns: poll briefly.
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "converge.context.v1.IntegrityService".into(),
            })
            .await;
        match r {
            Ok(r) if r.get_ref().status == serving => break,
            other if std::time::Instant::now() > deadline => {
                panic!("IntegrityService never reported SERVING: {other:?}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    drop(c);
    ledger.shutdown().await;
}
