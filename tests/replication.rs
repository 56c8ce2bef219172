//! Replication over an in-memory cluster (`MemoryNet`) of three in-process ledgers:
//! shipping, forwarding, watches on replicas, owner loss, acks=all, rejoin catch-up, and a
//! partition whose losing side's divergent entries are quarantined, not lost.

mod common;

use common::cluster::{append, converge, head, owned_by, shutdown, status_of, Node};

use converge_ledger::actors::cluster::MemoryNet;
use converge_ledger::config::{ClusterConfig, Config, ReplicationAcks};
use converge_ledger::proto;
use converge_ledger::server::Ledger;
use std::time::Duration;

fn config(name: &str, acks: ReplicationAcks) -> Config {
    Config {
        cluster: Some(ClusterConfig {
            node_name: name.into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            peers: Vec::new(),
            secret: "test".into(),
            replication_acks: acks,
            replication: converge_ledger::config::ReplicationProtocol::OwnerEpoch,
            raft_timing: Default::default(),
        }),
        ..Config::for_test()
    }
}

async fn start_node(net: &MemoryNet, name: &str, acks: ReplicationAcks) -> Node {
    start_node_with(net, name, &config(name, acks)).await
}

/// Starts a ledger named `name` on `net` with `cfg` and waits until it serves.
async fn start_node_with(net: &MemoryNet, name: &str, cfg: &Config) -> Node {
    common::init_logs();
    let ledger = Ledger::start_with_link(cfg, net.join(name))
        .await
        .expect("ledger starts");
    let client = converge_ledger::client::wait_ready(&ledger.url(), Duration::from_secs(10))
        .await
        .expect("ready");
    Node {
        name: name.into(),
        ledger,
        client,
    }
}

async fn cluster(acks: ReplicationAcks) -> (MemoryNet, Vec<Node>) {
    let net = MemoryNet::new();
    let mut nodes = Vec::new();
    for n in ["a", "b", "c"] {
        nodes.push(start_node(&net, n, acks).await);
    }
    (net, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reach_every_node_with_the_same_root() {
    let (_net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let ctxs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|o| owned_by(o, &["a", "b", "c"], "reach"))
        .collect();
    for i in 0..20 {
        for (j, ctx) in ctxs.iter().enumerate() {
            append(&nodes[(i + j) % 3].client, ctx, &format!("p{i}")).await;
        }
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    for ctx in &ctxs {
        converge(&refs, ctx, 20).await;
    }
    // The owner tracks its replicas: both report everything applied (acks travel after the
    // entries, so allow them a moment).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = status_of(&nodes[0].client).await;
        let own = status
            .contexts
            .iter()
            .find(|c| c.context_id == ctxs[0])
            .expect("context listed");
        let lags: Vec<(&str, u64, u64)> = own
            .replicas
            .iter()
            .map(|r| (r.node.as_str(), r.applied_sequence, r.lag))
            .collect();
        if lags == [("b", 20, 0), ("c", 20, 0)] {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica progress: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.node_name, "a");
    assert!(status.clustered);
    let states: Vec<(&str, &str)> = status
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(states, [("a", "this"), ("b", "up"), ("c", "up")]);
    let own = status
        .contexts
        .iter()
        .find(|c| c.context_id == ctxs[0])
        .expect("context listed");
    assert_eq!(own.owner, "a");
    assert_eq!(own.latest_sequence, 20);
    assert!(own.epoch >= 1);
    assert_eq!(status.quarantined_entries, 0);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_through_a_non_owner_is_forwarded_and_readable_there() {
    let (_net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let ctx = owned_by("a", &["a", "b", "c"], "fwd");
    for i in 1..=5u64 {
        let e = append(&nodes[1].client, &ctx, &format!("via-b-{i}")).await;
        assert_eq!(e.sequence, i);
        // Read-your-write on the node it went through.
        assert!(head(&nodes[1].client, &ctx).await.0 >= i);
    }
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 5).await;
    // Load writes, so only the owner takes it; elsewhere it names the owner.
    let snap = nodes[0]
        .client
        .snapshot(&ctx)
        .await
        .expect("snapshot")
        .snapshot;
    let err = nodes[1]
        .client
        .load(&ctx, snap.clone(), false)
        .await
        .expect_err("a replica refuses Load");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("\"a\""), "{}", err.message());
    let ok = nodes[0]
        .client
        .load(&ctx, snap, false)
        .await
        .expect("owner loads");
    assert_eq!(ok.entries_restored, 0);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_replica_sees_appends_through_the_owner_in_order() {
    let (_net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let ctx = owned_by("a", &["a", "b", "c"], "watch");
    let mut stream = nodes[1]
        .client
        .watch(proto::WatchRequest {
            context_id: ctx.clone(),
            from_sequence: 0,
            ..Default::default()
        })
        .await
        .expect("watch");
    let writer = nodes[0].client.clone();
    let c = ctx.clone();
    let appends = tokio::spawn(async move {
        for i in 0..200 {
            append(&writer, &c, &format!("w{i}")).await;
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(e) = ev.entry {
            seen.push(e.sequence);
        }
    }
    appends.await.expect("appender");
    assert_eq!(seen, (1..=200).collect::<Vec<u64>>());
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_owner_leaves_a_new_owner_takes_over() {
    let (net, mut nodes) = cluster(ReplicationAcks::All).await;
    let ctx = owned_by("a", &["a", "b", "c"], "failover");
    for i in 0..20 {
        append(&nodes[1].client, &ctx, &format!("before-{i}")).await;
    }
    let a = nodes.remove(0);
    net.leave("a");
    a.ledger.shutdown().await;
    for i in 0..20 {
        append(&nodes[0].client, &ctx, &format!("after-{i}")).await;
        append(&nodes[1].client, &ctx, &format!("after-c-{i}")).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 60).await;
    // Idempotency keys travelled with the entries: a retry of an append acknowledged by
    // the old owner is a duplicate on the new one.
    let retry = nodes[1]
        .client
        .append(proto::AppendRequest {
            context_id: ctx.clone(),
            key: "k".into(),
            payload: b"before-3".to_vec().into(),
            idempotency_key: "before-3".into(),
            ..Default::default()
        })
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.entry.map(|e| e.sequence), Some(4));
    shutdown(nodes).await;
}

/// The kill -9 failover bug of issue 5: an append the old owner committed and shipped,
/// retried with its idempotency key as the first request the new owner sees, is a
/// duplicate whose entry every replica already holds. Under acks=all the new owner must
/// count those replicas (its claim saw their heads) instead of waiting for a shipment
/// that never comes and answering "fewer than 1 replicas confirmed it" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_acks_all_a_retry_first_seen_by_the_new_owner_is_acknowledged() {
    let (net, mut nodes) = cluster(ReplicationAcks::All).await;
    let ctx = owned_by("a", &["a", "b", "c"], "retry-after-failover");
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(append(&nodes[1].client, &ctx, &format!("before-{i}")).await);
    }
    let a = nodes.remove(0);
    net.leave("a");
    a.ledger.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let retry = loop {
        let r = nodes[0]
            .client
            .append(proto::AppendRequest {
                context_id: ctx.clone(),
                key: "k".into(),
                payload: b"before-4".to_vec().into(),
                idempotency_key: "before-4".into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => break r,
            Err(s) if s.message().contains("confirmed") => {
                panic!("the retry waited for acks no replica would send: {s:?}")
            }
            // The survivors are still settling the new membership or the claim.
            Err(s)
                if s.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("retry failed: {s:?}"),
        }
    };
    assert!(
        retry.duplicate,
        "the retry is answered from the idempotency index"
    );
    assert_eq!(retry.entry.map(|e| e.sequence), Some(acked[4].sequence));
    shutdown(nodes).await;
}

/// A burst of appends from many clients through one node, to contexts another node owns:
/// more forwarded requests at once than the owner answered concurrently before (256), and
/// none is refused as "busy" (found by a 3,000-writer failover benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_forwarded_appends_is_not_refused_as_busy() {
    let (_net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let contexts: Vec<String> = (0..800)
        .map(|i| owned_by("b", &["a", "b", "c"], &format!("burst-{i}")))
        .collect();
    let via = nodes[0].client.clone();
    let calls = contexts.iter().map(|ctx| {
        let via = via.clone();
        let req = proto::AppendRequest {
            context_id: ctx.clone(),
            key: "k".into(),
            payload: b"burst".to_vec().into(),
            ..Default::default()
        };
        async move { via.append(req).await }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acks_all_an_acknowledged_entry_is_on_every_live_node() {
    let (_net, nodes) = cluster(ReplicationAcks::All).await;
    let ctx = owned_by("a", &["a", "b", "c"], "acks");
    for i in 0..30 {
        let via = &nodes[i % 3].client;
        let e = append(via, &ctx, &format!("ack-{i}")).await;
        for n in &nodes {
            let r = n
                .client
                .get(proto::GetRequest {
                    context_id: ctx.clone(),
                    after_sequence: e.sequence - 1,
                    limit: 1,
                    ..Default::default()
                })
                .await
                .expect("get");
            assert_eq!(
                r.entries.first().map(|x| x.sequence),
                Some(e.sequence),
                "entry {} missing on {} when acknowledged",
                e.sequence,
                n.name
            );
        }
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_1000_entries_catches_up_after_healing() {
    let (net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let ctx = owned_by("a", &["a", "b", "c"], "rejoin");
    append(&nodes[0].client, &ctx, "first").await;
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 1).await;
    net.cut("a", "c");
    net.cut("b", "c");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = nodes[0].client.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                append(&client, &ctx, &format!("missed-{w}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(head(&nodes[2].client, &ctx).await.0, 1, "c was cut off");
    net.heal("a", "c");
    net.heal("b", "c");
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 1001).await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_the_losing_tail_is_quarantined_not_lost() {
    let (net, nodes) = cluster(ReplicationAcks::Count(0)).await;
    let ctx = owned_by("a", &["a", "b", "c"], "split");
    for i in 0..5 {
        append(&nodes[0].client, &ctx, &format!("common-{i}")).await;
    }
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 5).await;
    net.cut("a", "b");
    net.cut("a", "c");
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..3 {
        append(&nodes[0].client, &ctx, &format!("lonely-a-{i}")).await;
    }
    for i in 0..7 {
        append(&nodes[1].client, &ctx, &format!("majority-{i}")).await;
    }
    net.heal("a", "b");
    net.heal("a", "c");
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 12).await;
    let all = nodes[0].client.read_all(&ctx).await.expect("read");
    let payloads: Vec<String> = all
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).to_string())
        .collect();
    assert!(payloads[5..].iter().all(|p| p.starts_with("majority-")));
    let status = status_of(&nodes[0].client).await;
    assert_eq!(status.quarantined_entries, 3, "{status:?}");
    assert!(status.quarantine.iter().all(|q| q.context_id == ctx));
    let quarantined = nodes[0]
        .ledger
        .shared()
        .store
        .reader()
        .unwrap()
        .quarantined(10)
        .unwrap();
    let q: Vec<String> = quarantined
        .0
        .iter()
        .map(|q| String::from_utf8_lossy(&q.entry.payload).to_string())
        .collect();
    assert_eq!(q, ["lonely-a-0", "lonely-a-1", "lonely-a-2"]);
    let hashes: Vec<Vec<u8>> = quarantined
        .0
        .iter()
        .map(|q| q.entry.content_hash.to_vec())
        .collect();
    let listed: Vec<Vec<u8>> = status
        .quarantine
        .iter()
        .map(|q| q.content_hash.to_vec())
        .collect();
    assert_eq!(
        listed, hashes,
        "status lists the quarantined entries by content hash"
    );
    // Appends continue on the healed cluster.
    append(&nodes[2].client, &ctx, "after-heal").await;
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 13).await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_restarted_from_its_data_dir_catches_up_and_owns_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemoryNet::new();
    let dir_node = |name: &str| Config {
        cluster: config(name, ReplicationAcks::All).cluster,
        ..common::dir_config(dir.path())
    };
    let start = |name: &'static str, cfg: Config| {
        let net = net.clone();
        async move {
            let ledger = Ledger::start_with_link(&cfg, net.join(name))
                .await
                .expect("ledger starts");
            let client =
                converge_ledger::client::wait_ready(&ledger.url(), Duration::from_secs(10))
                    .await
                    .expect("ready");
            Node {
                name: name.into(),
                ledger,
                client,
            }
        }
    };
    let a = start("a", dir_node("a")).await;
    let b = start_node(&net, "b", ReplicationAcks::All).await;
    let c = start_node(&net, "c", ReplicationAcks::All).await;
    let ctx = owned_by("a", &["a", "b", "c"], "restart");
    for i in 0..50 {
        append(&b.client, &ctx, &format!("one-{i}")).await;
    }
    net.leave("a");
    a.ledger.shutdown().await;
    for i in 0..50 {
        append(&c.client, &ctx, &format!("two-{i}")).await;
    }
    let a = start("a", dir_node("a")).await;
    assert!(head(&a.client, &ctx).await.0 >= 50, "a kept its data");
    let nodes = vec![a, b, c];
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 100).await;
    // a owns the context again and appends continue through any node.
    append(&nodes[1].client, &ctx, "three").await;
    converge(&nodes.iter().collect::<Vec<_>>(), &ctx, 101).await;
    let status = status_of(&nodes[0].client).await;
    assert_eq!(status.quarantined_entries, 0);
    let ours = status
        .contexts
        .iter()
        .find(|c| c.context_id == ctx)
        .expect("listed");
    assert_eq!(ours.owner, "a");
    assert_eq!(ours.latest_sequence, 101);
    shutdown(nodes).await;
}

/// A three-node cluster (acks=all) whose owner `a` (on `dir`) of the returned context held
/// 20 entries and left; `b` and `c` then took over and hold 50, at a higher epoch.
async fn owner_away_while_the_others_moved_on(
    net: &MemoryNet,
    dir: &std::path::Path,
) -> (String, Node, Node) {
    let a = start_dir_node(net, "a", dir).await;
    let b = start_node(net, "b", ReplicationAcks::All).await;
    let c = start_node(net, "c", ReplicationAcks::All).await;
    let ctx = owned_by("a", &["a", "b", "c"], "rejoin");
    for i in 0..20 {
        append(&b.client, &ctx, &format!("before-{i}")).await;
    }
    converge(&[&a, &b, &c], &ctx, 20).await;
    net.leave("a");
    a.ledger.shutdown().await;
    for i in 0..30 {
        let via = if i % 2 == 0 { &b } else { &c };
        append(&via.client, &ctx, &format!("during-{i}")).await;
    }
    converge(&[&b, &c], &ctx, 50).await;
    (ctx, b, c)
}

async fn start_dir_node(net: &MemoryNet, name: &str, dir: &std::path::Path) -> Node {
    let cfg = Config {
        cluster: config(name, ReplicationAcks::All).cluster,
        ..common::dir_config(dir)
    };
    start_node_with(net, name, &cfg).await
}

async fn assert_nothing_quarantined(nodes: &[&Node]) {
    for n in nodes {
        let s = status_of(&n.client).await;
        assert_eq!(s.quarantined_entries, 0, "{}: {:?}", n.name, s.quarantine);
    }
}

/// The race seen on real sockets: the returning owner is seen by the others before it sees
/// them, so their digests reach it while it has claimed the context alone on its old 20
/// entries (and intends a higher epoch it has not written anything under). Its answer must
/// not make them quarantine their 50 acknowledged entries; once it sees them, it catches
/// up, and everyone converges with nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_owner_seen_before_it_sees_the_others_truncates_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemoryNet::new();
    let (ctx, b, c) = owner_away_while_the_others_moved_on(&net, dir.path()).await;
    net.cut("a", "b");
    net.cut("a", "c");
    net.hold_members("a");
    let a = start_dir_node(&net, "a", dir.path()).await;
    assert_eq!(head(&a.client, &ctx).await.0, 20, "a kept its data");
    // Its claim alone is done (no peer to ask).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // b and c see a (and send it their heads); a still sees only itself.
    net.heal("a", "b");
    net.heal("a", "c");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for n in [&b, &c] {
        assert_eq!(
            head(&n.client, &ctx).await.0,
            50,
            "{} kept its entries",
            n.name
        );
    }
    // A forwarded append is refused (retried) until a sees the forwarder.
    let late = tokio::spawn({
        let (client, ctx) = (b.client.clone(), ctx.clone());
        async move { append(&client, &ctx, "while-a-sees-nobody").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(head(&a.client, &ctx).await.0, 20, "a wrote nothing yet");
    net.release_members("a");
    let e = late.await.expect("append task");
    assert_eq!(e.sequence, 51);
    let nodes = [&a, &b, &c];
    converge(&nodes, &ctx, 51).await;
    append(&c.client, &ctx, "after").await;
    converge(&nodes, &ctx, 52).await;
    assert_nothing_quarantined(&nodes).await;
    shutdown(vec![a, b, c]).await;
}

/// The returning owner's membership grows twice within moments ({a} → {a,b} → {a,b,c}):
/// its two claims of the context, one per membership version, must not interleave, and
/// the replicas must not take its history for the authoritative one before it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_owner_whose_membership_grows_twice_at_once_catches_up_cleanly() {
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = MemoryNet::new();
        let (ctx, b, c) = owner_away_while_the_others_moved_on(&net, dir.path()).await;
        net.cut("a", "b");
        net.cut("a", "c");
        let a = start_dir_node(&net, "a", dir.path()).await;
        assert_eq!(head(&a.client, &ctx).await.0, 20, "a kept its data");
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
        net.heal("a", "b");
        net.heal("a", "c");
        let nodes = [&a, &b, &c];
        converge(&nodes, &ctx, 50).await;
        append(&b.client, &ctx, "after").await;
        converge(&nodes, &ctx, 51).await;
        assert_nothing_quarantined(&nodes).await;
        let s = status_of(&a.client).await;
        let ours = s
            .contexts
            .iter()
            .find(|c| c.context_id == ctx)
            .expect("listed");
        assert_eq!(ours.owner, "a");
        shutdown(vec![a, b, c]).await;
    }
}
