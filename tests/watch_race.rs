//! A writer appends continuously while 20 watchers subscribe at random moments, from
//! random starting points; each must see a contiguous, duplicate-free run up to the end.

mod common;

use common::*;
use converge_ledger::proto;
use futures::StreamExt;
use rand::Rng;
use std::time::Duration;

const ENTRIES: u64 = 3000;
const WATCHERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_subscribing_during_appends_see_no_gap_and_no_duplicate() {
    let (ledger, c) = start_memory().await;
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..ENTRIES {
                c.append(append_req("race", "k", &format!("{i}")))
                    .await
                    .unwrap();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let delay = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(delay / WATCHERS as u64)).await;
        let latest = c.get_after("race", 0, 1).await.unwrap().latest_sequence;
        let from = rand::rng().random_range(0..=latest);
        let c = c.clone();
        watchers.push(tokio::spawn(async move {
            let mut s = c
                .watch(proto::WatchRequest {
                    context_id: "race".into(),
                    from_sequence: from,
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut expect = from + 1;
            while expect <= ENTRIES {
                let ev = tokio::time::timeout(Duration::from_secs(30), s.next())
                    .await
                    .expect("watcher stalled")
                    .expect("stream open")
                    .expect("event");
                let seq = ev.entry.unwrap().sequence;
                assert_eq!(seq, expect, "watcher from {from}: gap or duplicate");
                expect += 1;
            }
            from
        }));
    }
    writer.await.unwrap();
    for w in watchers {
        w.await.unwrap();
    }
    ledger.shutdown().await;
}

/// Thousands of watchers on one context: each gets every entry, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watchers_on_one_context_each_see_everything() {
    const MANY: usize = 2000;
    const N: u64 = 50;
    let (ledger, c) = start_memory().await;
    // A few connections, as many observers would use.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            converge_ledger::client::LedgerClient::connect(&ledger.url())
                .await
                .unwrap(),
        );
    }
    let mut streams = Vec::new();
    for i in 0..MANY {
        let s = clients[i % clients.len()]
            .watch(proto::WatchRequest {
                context_id: "crowd".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        streams.push(s);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                for want in 1..=N {
                    let ev = tokio::time::timeout(Duration::from_secs(120), s.next())
                        .await
                        .expect("watcher stalled")
                        .unwrap()
                        .unwrap();
                    assert_eq!(ev.entry.unwrap().sequence, want);
                }
            })
        })
        .collect();
    for i in 0..N {
        c.append(append_req("crowd", "k", &format!("{i}")))
            .await
            .unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    ledger.shutdown().await;
}
