//! Three real `converge-ledger serve` processes on 127.0.0.1: reads and watches through
//! other nodes, `kill -9` of an owner under acks=all, and a partition healed through TCP
//! proxies (issue 5).

mod common;

use common::cluster_procs::{append_retrying, hash, hex, same_history, Cluster};
use common::*;
use converge_ledger::proto;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn req(ctx: &str, idem: &str, payload: &str) -> proto::AppendRequest {
    proto::AppendRequest {
        idempotency_key: idem.into(),
        ..append_req(ctx, "k", payload)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_on_a_read_and_watch_on_b_and_c() {
    let cluster = Cluster::start(3, "0", false).await;
    let ctx = "orders";
    // Watchers on B and C, started before the first append.
    let mut watchers = Vec::new();
    for i in [1, 2] {
        let c = cluster.client(i).await;
        let mut stream = c
            .watch(proto::WatchRequest {
                context_id: ctx.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        watchers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 200 {
                let ev = stream.message().await.unwrap().expect("stream open");
                if let Some(e) = ev.entry {
                    got.push(e);
                }
            }
            got
        }));
    }
    let a = cluster.client(0).await;
    let mut acked = Vec::new();
    for i in 0..200 {
        let r = a.append(req(ctx, &format!("w{i}"), &format!("p{i}"))).await;
        acked.push(r.unwrap().entry.unwrap());
    }
    for (n, e) in acked.iter().enumerate() {
        assert_eq!(e.sequence, n as u64 + 1);
    }
    for w in watchers {
        let got = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("watcher got every entry")
            .unwrap();
        let seqs: Vec<u64> = got.iter().map(|e| e.sequence).collect();
        assert_eq!(
            seqs,
            (1..=200).collect::<Vec<_>>(),
            "in order, no gap, no dup"
        );
        assert!(
            got == acked,
            "the watcher saw exactly the acknowledged entries"
        );
    }
    let ((latest, root), _) = cluster.converge(ctx, 200, Duration::from_secs(20)).await;
    assert_eq!(latest, 200);
    let history = same_history(&cluster, ctx).await;
    assert!(history == acked);
    assert_eq!(
        root,
        root_of(&history).to_vec(),
        "the root is over these entries"
    );
    // And the IntegrityService root agrees on every node.
    for i in 0..3 {
        let r = cluster.client(i).await.root(ctx, 0).await.unwrap();
        assert_eq!(r.tree_size, 200);
        assert_eq!(
            r.merkle_root.to_vec(),
            root,
            "IntegrityService root on node {i}"
        );
    }
}

/// What a writer had acknowledged: per context, sequence → content hash.
type Acked = Arc<Mutex<HashMap<String, BTreeMap<u64, Vec<u8>>>>>;

/// kill -9 of the owner during a stream of acks=all appends through another node: the
/// survivors take over, every acknowledged entry is on every node, and the victim rejoins.
/// (It once stalled in about half the runs: a retry of an append the victim had committed
/// before dying reached the new owner as a duplicate, and the new owner waited for replica
/// confirmations of an entry the replicas already held; see
/// `under_acks_all_a_retry_first_seen_by_the_new_owner_is_acknowledged` in replication.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_the_owner_under_acks_all_loses_no_acknowledged_entry() {
    let mut cluster = Cluster::start(3, "all", false).await;
    let contexts: Vec<String> = (0..4).map(|i| format!("stream-{i}")).collect();
    // The victim owns stream-0; the writer goes through a node that is not the victim.
    let victim_name = cluster
        .owner_seen_by(0, &contexts[0])
        .await
        .expect("an owner");
    let victim = cluster.index_of(&victim_name);
    let writer_node = (victim + 1) % 3;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i).to_string()).collect();

    let acked: Acked = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, count, stop, contexts, urls) = (
            acked.clone(),
            count.clone(),
            stop.clone(),
            contexts.clone(),
            urls.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ctx = &contexts[(i % contexts.len() as u64) as usize];
                let r = req(ctx, &format!("{ctx}-{i}"), &format!("payload {i}"));
                let e = append_retrying(&urls, writer_node, r, Duration::from_secs(15)).await;
                let prev = acked
                    .lock()
                    .unwrap()
                    .entry(ctx.clone())
                    .or_default()
                    .insert(e.sequence, hash(&e));
                assert!(
                    prev.is_none(),
                    "{ctx}: sequence {} acknowledged twice",
                    e.sequence
                );
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let wait_count = |n: u64| {
        let count = count.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while count.load(Ordering::Relaxed) < n {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            true
        }
    };
    assert!(wait_count(60).await, "writer stuck before the kill");
    cluster.kill9(victim);
    let killed_at = count.load(Ordering::Relaxed);
    if !wait_count(killed_at + 60).await {
        for i in 0..3 {
            eprintln!(
                "--- {} ---\n{}",
                cluster.names[i],
                cluster.nodes[i].last_lines(40)
            );
        }
        panic!("writer stuck after the kill of {victim_name}");
    }
    // stream-0 has a new owner among the survivors.
    let new_owner = cluster.owner_seen_by(writer_node, &contexts[0]).await;
    assert!(
        new_owner.is_some() && new_owner.as_deref() != Some(victim_name.as_str()),
        "new owner {new_owner:?}"
    );
    cluster.restart(victim);
    let restarted_at = count.load(Ordering::Relaxed);
    assert!(
        wait_count(restarted_at + 60).await,
        "writer stuck after the restart"
    );
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(45), writer)
        .await
        .expect("writer stops")
        .unwrap();

    let acked = acked.lock().unwrap().clone();
    for ctx in &contexts {
        let want = acked[ctx].keys().last().copied().unwrap_or(0);
        let ((latest, _), took) = cluster.converge(ctx, want, Duration::from_secs(30)).await;
        let history = same_history(&cluster, ctx).await;
        for (seq, h) in &acked[ctx] {
            let e = &history[*seq as usize - 1];
            assert_eq!(&hash(e), h, "{ctx}: acknowledged entry {seq} replaced");
        }
        eprintln!(
            "{ctx}: latest {latest}, {} acknowledged, converged in {took:?}",
            acked[ctx].len()
        );
    }
    eprintln!(
        "acked {} ({} before the kill of {victim_name}, {} before its restart)",
        count.load(Ordering::Relaxed),
        killed_at,
        restarted_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_and_quarantines_the_diverged_tail() {
    let cluster = Cluster::start(3, "0", true).await;
    let ctx = "split";
    let iso_name = cluster.owner_seen_by(0, ctx).await.expect("an owner");
    let iso = cluster.index_of(&iso_name);
    let majority: Vec<usize> = (0..3).filter(|&i| i != iso).collect();
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i).to_string()).collect();

    // A shared prefix, through the isolated-to-be owner and through the majority.
    for i in 0..10 {
        let n = if i % 2 == 0 { iso } else { majority[0] };
        append_retrying(
            &urls,
            n,
            req(ctx, &format!("pre{i}"), &format!("pre {i}")),
            Duration::from_secs(20),
        )
        .await;
    }
    cluster.converge(ctx, 10, Duration::from_secs(20)).await;

    cluster.isolate(iso);
    cluster.wait_members(&[iso], Duration::from_secs(30)).await;
    cluster
        .wait_members(&majority, Duration::from_secs(30))
        .await;

    // Both sides write: the isolated node owns everything it sees, the majority re-owns.
    let iso_client = cluster.client(iso).await;
    let mut iso_acked = Vec::new();
    for i in 0..5 {
        let a = iso_client
            .append(req(ctx, &format!("iso{i}"), &format!("isolated {i}")))
            .await
            .expect("the isolated node accepts (acks 0, it owns what it sees)");
        iso_acked.push(a.entry.unwrap());
    }
    let maj_urls: Vec<String> = majority.iter().map(|&m| urls[m].clone()).collect();
    let mut maj_acked = Vec::new();
    for i in 0..8 {
        let e = append_retrying(
            &maj_urls,
            0,
            req(ctx, &format!("maj{i}"), &format!("majority {i}")),
            Duration::from_secs(20),
        )
        .await;
        maj_acked.push(e);
    }
    for i in 0..20 {
        let other = "other";
        append_retrying(
            &urls,
            majority[1],
            req(other, &format!("o{i}"), "o"),
            Duration::from_secs(20),
        )
        .await;
    }
    assert_eq!(
        iso_acked[0].sequence, 11,
        "the isolated side continued the prefix"
    );
    assert_eq!(
        maj_acked[0].sequence, 11,
        "the majority side continued the prefix"
    );

    cluster.heal_all();
    cluster
        .wait_members(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let ((latest, _), took) = cluster.converge(ctx, 10, Duration::from_secs(30)).await;
    cluster.converge("other", 20, Duration::from_secs(30)).await;
    let history = same_history(&cluster, ctx).await;
    let quarantine = cluster.quarantine().await;
    let q_hashes: Vec<Vec<u8>> = quarantine
        .iter()
        .filter(|(_, q)| q.context_id == ctx)
        .map(|(_, q)| q.content_hash.to_vec())
        .collect();
    let in_history: Vec<Vec<u8>> = history.iter().map(hash).collect();
    eprintln!(
        "healed in {took:?}: latest {latest}; quarantine {:?}",
        quarantine
            .iter()
            .map(|(i, q)| (
                cluster.names[*i].clone(),
                q.context_id.clone(),
                q.sequence,
                q.epoch,
                hex(&q.content_hash),
                q.reason.clone()
            ))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "isolated {iso_name} acked {:?}\nmajority acked {:?}\nhistory {:?}",
        iso_acked
            .iter()
            .map(|e| (e.sequence, hex(&e.content_hash)))
            .collect::<Vec<_>>(),
        maj_acked
            .iter()
            .map(|e| (e.sequence, hex(&e.content_hash)))
            .collect::<Vec<_>>(),
        history
            .iter()
            .map(|e| (e.sequence, hex(&e.content_hash)))
            .collect::<Vec<_>>(),
    );
    for i in 0..3 {
        for l in cluster.nodes[i].log_lines("quarantin") {
            eprintln!("{}: {l}", cluster.names[i]);
        }
    }
    assert!(!q_hashes.is_empty(), "one side's tail was quarantined");
    // Nothing acknowledged on either side is lost: it is in the history or in quarantine.
    for e in iso_acked.iter().chain(&maj_acked) {
        let h = hash(e);
        assert!(
            in_history.contains(&h) || q_hashes.contains(&h),
            "entry {} ({}) is neither in the history nor in quarantine",
            e.sequence,
            hex(&h)
        );
    }
    // A quarantined entry is one the history does not hold (two concurrent catch-ups of one
    // context once quarantined the very entries the first had just fetched).
    for (i, q) in &quarantine {
        assert!(
            !in_history.contains(&q.content_hash.to_vec()),
            "node {} quarantined entry {} ({}) which is in the history",
            cluster.names[*i],
            q.sequence,
            hex(&q.content_hash)
        );
    }
    // One side won whole; the other side's tail is the quarantined one.
    let iso_won = in_history.contains(&hash(&iso_acked[0]));
    let losers = if iso_won { &maj_acked } else { &iso_acked };
    for e in losers {
        assert!(
            q_hashes.contains(&hash(e)),
            "the losing tail is quarantined"
        );
    }
    // The shared prefix survived and was not quarantined.
    assert!(history.len() >= 10);
    for e in &history[..10] {
        assert!(!q_hashes.contains(&hash(e)));
    }
    // And `status` lists it (the human view, from the CLI).
    let q_node = quarantine[0].0;
    let out = std::process::Command::new(common::process::server_binary())
        .args(["status", "--server", cluster.url(q_node), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["quarantined_entries"].as_u64().unwrap() > 0, "{json}");
}

/// A node that has not reached any peer (just restarted, or cut off) owns every context
/// it sees; under acks=all it must refuse, not acknowledge an entry no replica holds. The
/// chaos run found such entries acknowledged by a freshly restarted node and quarantined
/// once it joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_on_a_node_without_live_peers_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_port, nobody) = (common::process::free_port(), common::process::free_port());
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--log",
        "info,ractor_cluster=warn",
        "--data-dir",
        &dir.path().display().to_string(),
        "--node-name",
        "lonely",
        "--cluster-listen",
        &format!("127.0.0.1:{cluster_port}"),
        "--peer",
        &format!("127.0.0.1:{nobody}"),
        "--cluster-secret",
        common::cluster_procs::SECRET,
        "--replication-acks",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = tokio::task::spawn_blocking(move || common::process::spawn_args(args, None))
        .await
        .unwrap();
    let c = converge_ledger::client::wait_ready(&node.url, Duration::from_secs(20))
        .await
        .unwrap();
    let e = c
        .append(req("alone", "k1", "v"))
        .await
        .expect_err("no replica can acknowledge");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("nothing was written"), "{e:?}");
    let latest = match c.get_after("alone", 0, 0).await {
        Ok(r) => r.latest_sequence,
        Err(s) if s.code() == tonic::Code::NotFound => 0,
        Err(s) => panic!("{s:?}"),
    };
    assert_eq!(latest, 0, "nothing committed");
}
