//! The whole cluster in one process: three ledgers whose ClusterManagers run real
//! ractor_cluster NodeServers on 127.0.0.1, with replication on top. Appends replicate and
//! are forwarded, a watch on one node sees appends made through another, a stopped owner is
//! replaced, a restarted node catches up from its data dir, and a node with the wrong secret
//! never joins. (tests/replication.rs covers the same rules over an in-memory link, with
//! partitions; tests/cluster_process.rs runs real processes.)

mod common;

use common::cluster::{append, converge, head, owned_by, shutdown, status_of, Node};
use converge_ledger::config::{ClusterConfig, Config, ReplicationAcks, StorageConfig};
use converge_ledger::proto;
use converge_ledger::server::Ledger;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "cluster-test-secret";

/// Distinct in this test process (two `bind(0)`s in a row can return the same port).
fn free_addr() -> SocketAddr {
    common::process::free_addr()
}

fn config(
    name: &str,
    listen: SocketAddr,
    peers: &[SocketAddr],
    secret: &str,
    dir: Option<&Path>,
) -> Config {
    let mut c = Config::for_test();
    if let Some(d) = dir {
        c.storage = StorageConfig::Dir {
            path: d.to_path_buf(),
            fsync: true,
        };
    }
    c.cluster = Some(ClusterConfig {
        node_name: name.to_string(),
        listen,
        peers: peers.iter().map(|p| p.to_string()).collect(),
        secret: secret.to_string(),
        replication_acks: ReplicationAcks::All,
        replication: converge_ledger::config::ReplicationProtocol::OwnerEpoch,
        raft_timing: Default::default(),
    });
    c
}

async fn start(config: &Config) -> Node {
    common::init_logs();
    let ledger = Ledger::start(config).await.expect("ledger starts");
    let client = converge_ledger::client::wait_ready(&ledger.url(), Duration::from_secs(10))
        .await
        .expect("ready");
    let name = config
        .cluster
        .as_ref()
        .expect("clustered")
        .node_name
        .clone();
    Node {
        name,
        ledger,
        client,
    }
}

/// Waits until `node` reports exactly `names` as up (besides itself).
async fn wait_members(node: &Node, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_of(&node.client).await;
        let mut up: Vec<&str> = s
            .members
            .iter()
            .filter(|m| m.state == "this" || m.state == "up")
            .map(|m| m.name.as_str())
            .collect();
        up.sort();
        if up == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} sees {up:?}, want {names:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Three {
    addrs: [SocketAddr; 3],
    names: [String; 3],
    nodes: Vec<Node>,
}

async fn three(tag: &str, dirs: Option<&[tempfile::TempDir; 3]>) -> Three {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let names = [format!("{tag}a"), format!("{tag}b"), format!("{tag}c")];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers: Vec<SocketAddr> = (0..3).filter(|j| *j != i).map(|j| addrs[j]).collect();
        let dir = dirs.map(|d| d[i].path());
        nodes.push(start(&config(&names[i], addrs[i], &peers, SECRET, dir)).await);
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    for n in &nodes {
        wait_members(n, &all).await;
    }
    Three {
        addrs,
        names,
        nodes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_replicate_are_forwarded_and_watched_across_nodes() {
    let t = three("x", None).await;
    let names: Vec<&str> = t.names.iter().map(String::as_str).collect();
    let ctx = owned_by(names[0], &names, "orders");
    // A watcher on C, subscribed before anything is appended.
    let mut watch = t.nodes[2]
        .client
        .watch(proto::WatchRequest {
            context_id: ctx.clone(),
            ..Default::default()
        })
        .await
        .expect("watch on c");
    // Appends through the owner (A) and through a non-owner (B, forwarded to A).
    for i in 0..50 {
        let via = &t.nodes[i % 2];
        let e = append(&via.client, &ctx, &format!("e{i}")).await;
        assert_eq!(e.sequence, i as u64 + 1);
    }
    let root = converge(&t.nodes.iter().collect::<Vec<_>>(), &ctx, 50).await;
    // C's watcher saw 1..=50 in order, each once, with the payloads appended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let ev = tokio::time::timeout(deadline - Instant::now(), watch.message())
            .await
            .expect("watch event in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(e) = ev.entry {
            assert_eq!(e.payload.as_ref(), format!("e{}", seen.len()).as_bytes());
            seen.push(e.sequence);
        }
    }
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
    // Every node proves the same history.
    for n in &t.nodes {
        let r = n.client.root(ctx.clone(), 0).await.expect("root");
        assert_eq!((r.tree_size, r.merkle_root.to_vec()), (50, root.clone()));
    }
    // Status on the owner names it, and both replicas caught up.
    let s = status_of(&t.nodes[0].client).await;
    let c = s
        .contexts
        .iter()
        .find(|c| c.context_id == ctx)
        .expect("listed");
    assert_eq!(c.owner, names[0]);
    assert!(c.epoch >= 1);
    shutdown(t.nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_owner_is_replaced_and_catches_up_when_it_returns() {
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let mut t = three("y", Some(&dirs)).await;
    let names: Vec<String> = t.names.to_vec();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let ctx = owned_by(all[0], &all, "jobs");
    for i in 0..20 {
        append(&t.nodes[1].client, &ctx, &format!("before-{i}")).await;
    }
    converge(&t.nodes.iter().collect::<Vec<_>>(), &ctx, 20).await;

    // Stop the owner: B and C elect a new one and appends continue (acks=all: both have
    // every acknowledged entry).
    let a = t.nodes.remove(0);
    a.ledger.shutdown().await;
    wait_members(&t.nodes[0], &all[1..]).await;
    for i in 0..30 {
        append(&t.nodes[i % 2].client, &ctx, &format!("during-{i}")).await;
    }
    converge(&t.nodes.iter().collect::<Vec<_>>(), &ctx, 50).await;
    let s = status_of(&t.nodes[0].client).await;
    let owner = &s
        .contexts
        .iter()
        .find(|c| c.context_id == ctx)
        .expect("listed")
        .owner;
    assert!(owner == all[1] || owner == all[2], "new owner {owner}");

    // A comes back on the same address and data dir: it catches up by itself, owns the
    // context again, and nothing was quarantined (its history was a prefix).
    let peers = [t.addrs[1], t.addrs[2]];
    let a = start(&config(
        all[0],
        t.addrs[0],
        &peers,
        SECRET,
        Some(dirs[0].path()),
    ))
    .await;
    assert!(head(&a.client, &ctx).await.0 >= 20, "a kept its data");
    t.nodes.insert(0, a);
    converge(&t.nodes.iter().collect::<Vec<_>>(), &ctx, 50).await;
    append(&t.nodes[2].client, &ctx, "after").await;
    converge(&t.nodes.iter().collect::<Vec<_>>(), &ctx, 51).await;
    for n in &t.nodes {
        assert_eq!(status_of(&n.client).await.quarantined_entries, 0);
    }
    shutdown(t.nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_the_wrong_secret_never_joins() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start(&config("za", a_addr, &[b_addr], SECRET, None)).await;
    let b = start(&config("zb", b_addr, &[a_addr], SECRET, None)).await;
    wait_members(&a, &["za", "zb"]).await;
    let x = start(&config("zx", free_addr(), &[a_addr, b_addr], "wrong", None)).await;
    // Give it several dial attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_members(&a, &["za", "zb"]).await;
    wait_members(&x, &["zx"]).await;
    // X is alone: under acks=all it refuses appends (no replica could confirm them), and
    // nothing it has reaches the cluster or comes from it.
    let refused = x
        .client
        .append(common::append_req("solo", "k", "only-on-x"))
        .await
        .expect_err("a lone node under acks=all refuses");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("needs 1 live replica"),
        "{}",
        refused.message()
    );
    append(&a.client, "shared", "on-a").await;
    converge(&[&a, &b], "shared", 1).await;
    assert_eq!(head(&x.client, "solo").await.0, 0);
    assert_eq!(head(&x.client, "shared").await.0, 0);
    shutdown(vec![a, b, x]).await;
}
