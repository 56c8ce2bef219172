//! Appends in flight, `kill -9` the server, restart it on the same data dir: every
//! acknowledged entry is there, sequences are contiguous, the root matches — repeated at
//! many kill points. Fsync mode (the default): acknowledged entries may exist only in the
//! write-ahead log at the kill (redb is made durable about once a second), so each restart
//! exercises its replay; the kills land at 20–250 ms, before the first checkpoint.

mod common;

use common::process::spawn_server;
use common::*;
use converge_ledger::client::LedgerClient;
use converge_ledger::proto;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KILL_POINTS: usize = 8;
const CONTEXTS: usize = 8;

type Acked = Arc<Mutex<HashMap<String, Vec<proto::Entry>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_appends_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    for round in 0..KILL_POINTS {
        let mut server = spawn_server(Some(dir.path()), &[], None);
        let client = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
            .await
            .unwrap();
        verify(&client, &acked).await;
        let writers: Vec<_> = (0..CONTEXTS)
            .map(|w| {
                let (client, acked) = (client.clone(), acked.clone());
                tokio::spawn(async move {
                    let ctx = format!("crash-{w}");
                    for i in 0.. {
                        let mut req = append_req(&ctx, "k", &format!("round {round} item {i}"));
                        req.metadata.insert("i".into(), i.to_string());
                        match client.append(req).await {
                            Ok(r) => {
                                assert_eq!(r.durability, proto::Durability::Fsynced as i32);
                                acked
                                    .lock()
                                    .unwrap()
                                    .entry(ctx.clone())
                                    .or_default()
                                    .push(r.entry.unwrap())
                            }
                            Err(_) => return, // the server died under us: unacknowledged
                        }
                    }
                })
            })
            .collect();
        let delay = rand::rng().random_range(20..250);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        for w in writers {
            w.await.unwrap();
        }
    }
    let server = spawn_server(Some(dir.path()), &[], None);
    let client = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
        .await
        .unwrap();
    verify(&client, &acked).await;
    let total: usize = acked.lock().unwrap().values().map(Vec::len).sum();
    assert!(total > 0, "some appends were acknowledged");
}

async fn verify(client: &LedgerClient, acked: &Acked) {
    let acked = acked.lock().unwrap().clone();
    for (ctx, entries) in acked {
        let stored = client.read_all(&ctx).await.unwrap();
        for (i, e) in stored.iter().enumerate() {
            assert_eq!(e.sequence, i as u64 + 1, "{ctx}: contiguous");
            assert_eq!(
                &e.content_hash[..],
                &recomputed_hash(&ctx, e)[..],
                "{ctx}: hash"
            );
        }
        // Every acknowledged entry is there, unchanged, in acknowledgement order.
        let mut last = 0;
        for a in &entries {
            assert!(
                a.sequence > last,
                "{ctx}: acknowledgements in sequence order"
            );
            last = a.sequence;
            assert_eq!(
                stored.get(a.sequence as usize - 1),
                Some(a),
                "{ctx}: acknowledged entry {} lost",
                a.sequence
            );
        }
        let got = client.get_after(&ctx, 0, 1).await.unwrap();
        assert_eq!(
            &got.merkle_root[..],
            &root_of(&stored)[..],
            "{ctx}: root matches the entries"
        );
    }
}
