//! A watcher that stops reading while 100,000 entries are appended: appends are not held
//! up by it, server memory stays bounded, and when it reads again it gets every entry,
//! in order, from storage and then live.

mod common;

use common::*;
use converge_ledger::proto;
use futures::StreamExt;
use std::time::Duration;

const ENTRIES: u64 = 100_000;
const WRITERS: u64 = 8;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_costs_bounded_memory_and_later_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dir_config(dir.path());
    config.storage = converge_ledger::config::StorageConfig::Dir {
        path: dir.path().into(),
        fsync: false,
    };
    let (ledger, c) = start(config).await;
    c.append(append_req("slow", "k", "first")).await.unwrap();
    // Its own connection, like a real remote observer.
    let stalled_client = converge_ledger::client::LedgerClient::connect(&ledger.url())
        .await
        .unwrap();
    let mut stalled = stalled_client
        .watch(proto::WatchRequest {
            context_id: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        stalled
            .next()
            .await
            .unwrap()
            .unwrap()
            .entry
            .unwrap()
            .sequence,
        1
    );
    // A second watcher keeps reading: it must not be held up by the stalled one.
    let mut reader = c
        .watch(proto::WatchRequest {
            context_id: "slow".into(),
            from_sequence: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let live_reader = tokio::spawn(async move {
        let mut expect = 2;
        while expect <= ENTRIES {
            let ev = reader.next().await.unwrap().unwrap();
            assert_eq!(ev.entry.unwrap().sequence, expect);
            expect += 1;
        }
    });

    let rss_before = rss_bytes();
    let payload = "x".repeat(200);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (c, payload) = (c.clone(), payload.clone());
            tokio::spawn(async move {
                for _ in 0..(ENTRIES - 1) / WRITERS + 1 {
                    c.append(append_req("slow", "k", &payload)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(600), w)
            .await
            .expect("appends were held up by a stalled watcher")
            .unwrap();
    }
    let latest = c.get_after("slow", 0, 1).await.unwrap().latest_sequence;
    assert!(latest >= ENTRIES);
    tokio::time::timeout(Duration::from_secs(300), live_reader)
        .await
        .expect("reading watcher kept up")
        .unwrap();
    let grown = rss_bytes().saturating_sub(rss_before);
    // 100,000 entries of 200 B are ~20 MB of data in total; the stalled watcher may hold
    // one ring (1,024 events) and one stream queue, not the backlog.
    assert!(grown < 256 << 20, "resident memory grew by {grown} bytes");

    // Now read: every entry from 2 on, in order, no gap, no duplicate.
    let mut expect = 2;
    while expect <= latest {
        let ev = tokio::time::timeout(Duration::from_secs(60), stalled.next())
            .await
            .expect("stalled watcher resumes")
            .unwrap()
            .unwrap();
        assert_eq!(ev.entry.unwrap().sequence, expect);
        expect += 1;
    }
    ledger.shutdown().await;
}
