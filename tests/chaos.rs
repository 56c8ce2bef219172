//! Chaos, in process: kill a ContextActor, the StorageWriter and the WatchRegistry while
//! clients append and watch. Supervisors restart them; no acknowledged entry is lost;
//! appends resume; a watcher either continues or ends with UNAVAILABLE and resumes from
//! its last sequence without missing anything.

mod common;

use common::*;
use converge_ledger::client::LedgerClient;
use converge_ledger::proto;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const CONTEXTS: usize = 3;
const APPENDS_PER_CONTEXT: u64 = 1500;
const KILLS_PER_KIND: usize = 6;

/// Appends with an idempotency key per item, retrying UNAVAILABLE: exactly-once per item.
async fn writer(c: LedgerClient, ctx: String) -> Vec<proto::Entry> {
    let mut acked = Vec::new();
    for i in 0..APPENDS_PER_CONTEXT {
        let mut req = append_req(&ctx, "k", &format!("item {i}"));
        req.idempotency_key = format!("item-{i}");
        let mut attempts = 0;
        loop {
            match c.append(req.clone()).await {
                Ok(r) => {
                    acked.push(r.entry.unwrap());
                    break;
                }
                Err(s) if s.code() == Code::Unavailable && attempts < 200 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(s) => panic!("{ctx} item {i}: {s:?}"),
            }
        }
    }
    acked
}

/// Watches from 0, resuming after UNAVAILABLE from the last sequence seen.
async fn watcher(c: LedgerClient, ctx: String) -> (Vec<u64>, usize) {
    let mut seen = Vec::new();
    let mut resumes = 0;
    while (seen.len() as u64) < APPENDS_PER_CONTEXT {
        let from = seen.last().copied().unwrap_or(0);
        let mut s = match c
            .watch(proto::WatchRequest {
                context_id: ctx.clone(),
                from_sequence: from,
                ..Default::default()
            })
            .await
        {
            Ok(s) => s,
            Err(e) if e.code() == Code::Unavailable => {
                resumes += 1;
                continue;
            }
            Err(e) => panic!("{e:?}"),
        };
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .expect("watch stalled")
        {
            match ev {
                Ok(ev) => seen.push(ev.entry.unwrap().sequence),
                Err(e) => {
                    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                    resumes += 1;
                    break;
                }
            }
            if seen.len() as u64 == APPENDS_PER_CONTEXT {
                break;
            }
        }
    }
    (seen, resumes)
}

fn kill(name: &str) -> bool {
    match ractor::registry::where_is(name) {
        Some(cell) => {
            cell.kill();
            true
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_actors_loses_nothing_and_clients_recover() {
    let (ledger, c) = start_memory().await;
    let shared = ledger.shared().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kills = [0usize; 3];
            let mut round = 0usize;
            // Within the supervisors' restart budgets: a node whose actors die faster
            // than that is meant to give up and exit, not spin.
            while !stop.load(Ordering::Relaxed) && round < 3 * KILLS_PER_KIND {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let ctx = format!("chaos-{}", round % CONTEXTS);
                let (i, name) = match round % 3 {
                    0 => (0, shared.actor_name(&format!("ctx:{ctx}"))),
                    1 => (1, shared.actor_name("storage_writer")),
                    _ => (2, shared.actor_name("watch_registry")),
                };
                if kill(&name) {
                    kills[i] += 1;
                }
                round += 1;
            }
            kills
        })
    };
    let watchers: Vec<_> = (0..CONTEXTS)
        .map(|i| tokio::spawn(watcher(c.clone(), format!("chaos-{i}"))))
        .collect();
    let writers: Vec<_> = (0..CONTEXTS)
        .map(|i| tokio::spawn(writer(c.clone(), format!("chaos-{i}"))))
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let kills = chaos.await.unwrap();
    assert!(
        kills.iter().all(|&k| k > 0),
        "every kind of actor was killed at least once: {kills:?}"
    );

    for (i, entries) in acked.iter().enumerate() {
        let ctx = format!("chaos-{i}");
        let stored = c.read_all(&ctx).await.unwrap();
        assert_eq!(
            stored.len() as u64,
            APPENDS_PER_CONTEXT,
            "{ctx}: exactly one entry per item"
        );
        for (n, e) in stored.iter().enumerate() {
            assert_eq!(e.sequence, n as u64 + 1);
            assert_eq!(
                e.payload,
                format!("item {n}").into_bytes(),
                "{ctx}: items in order, once each"
            );
        }
        for a in entries {
            assert_eq!(
                &stored[a.sequence as usize - 1],
                a,
                "{ctx}: acknowledged entry changed or lost"
            );
        }
        assert_eq!(
            &c.get_after(&ctx, 0, 1).await.unwrap().merkle_root[..],
            &root_of(&stored)[..]
        );
    }
    for w in watchers {
        let (seen, _resumes) = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("watcher finished")
            .unwrap();
        assert_eq!(
            seen,
            (1..=APPENDS_PER_CONTEXT).collect::<Vec<_>>(),
            "watcher saw a gap or duplicate"
        );
    }
    // Appends work after the chaos.
    c.append(append_req("chaos-0", "k", "after")).await.unwrap();
    ledger.shutdown().await;
}
