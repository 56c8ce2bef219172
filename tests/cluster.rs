//! The whole cluster in one process: three ledgers whose ClusterManagers run real
//! ractor_cluster NodeServers on 127.0.0.1, with the Raft group on top. Appends replicate
//! and are forwarded to the leader, a watch on a follower sees appends made through another
//! node, a stopped leader is replaced and catches up from its data dir when it returns,
//! `--replication-acks all` refuses while a voter is missing, and a node with the wrong
//! secret never joins. (tests/raft_cluster.rs runs real processes through the failures
//! machines have; tests/raft_sim.rs simulates thousands of schedules.)

mod common;

use common::cluster::{append, converge, head, shutdown, status_of, Node};
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
    acks: ReplicationAcks,
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
        replication_acks: acks,
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

async fn three(tag: &str, dirs: Option<&[tempfile::TempDir; 3]>, acks: ReplicationAcks) -> Three {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let names = [format!("{tag}a"), format!("{tag}b"), format!("{tag}c")];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers: Vec<SocketAddr> = (0..3).filter(|j| *j != i).map(|j| addrs[j]).collect();
        let dir = dirs.map(|d| d[i].path());
        nodes.push(start(&config(&names[i], addrs[i], &peers, SECRET, dir, acks)).await);
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

/// The leader's index, once every node in `nodes` names the same one.
async fn leader_of(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for n in nodes {
            let s = status_of(&n.client).await;
            assert_eq!(s.replication, "raft");
            seen.push(
                s.raft_groups
                    .first()
                    .map(|g| g.leader.clone())
                    .unwrap_or_default(),
            );
        }
        if !seen[0].is_empty() && seen.iter().all(|l| *l == seen[0]) {
            return nodes
                .iter()
                .position(|n| n.name == seen[0])
                .expect("a member leads");
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_replicate_are_forwarded_and_watched_across_nodes() {
    let t = three("x", None, ReplicationAcks::Majority).await;
    let ctx = "orders".to_string();
    // A watcher on C, subscribed before anything is appended.
    let mut watch = t.nodes[2]
        .client
        .watch(proto::WatchRequest {
            context_id: ctx.clone(),
            ..Default::default()
        })
        .await
        .expect("watch on c");
    // Appends through A and B: one of them forwards to the leader (or both do).
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
    // Status: one leader for all, every node a voter, the leader sees every follower.
    let l = leader_of(&t.nodes).await;
    let s = status_of(&t.nodes[l].client).await;
    let g = &s.raft_groups[0];
    assert_eq!(
        (g.role.as_str(), g.voters.len(), g.followers.len()),
        ("leader", 3, 3)
    );
    assert_eq!(s.replication_acks, "majority");
    let listed = s
        .contexts
        .iter()
        .find(|c| c.context_id == ctx)
        .expect("listed");
    assert_eq!(listed.latest_sequence, 50);
    shutdown(t.nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_is_replaced_and_catches_up_when_it_returns() {
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let mut t = three("y", Some(&dirs), ReplicationAcks::Majority).await;
    let names: Vec<String> = t.names.to_vec();
    let ctx = "jobs";
    for i in 0..20 {
        append(&t.nodes[i % 3].client, ctx, &format!("before-{i}")).await;
    }
    converge(&t.nodes.iter().collect::<Vec<_>>(), ctx, 20).await;

    // Stop the leader: the other two elect one and appends continue.
    let l = leader_of(&t.nodes).await;
    let stopped = t.nodes.remove(l);
    stopped.ledger.shutdown().await;
    for i in 0..30 {
        append(&t.nodes[i % 2].client, ctx, &format!("during-{i}")).await;
    }
    converge(&t.nodes.iter().collect::<Vec<_>>(), ctx, 50).await;
    let new_leader = leader_of(&t.nodes).await;
    assert_ne!(t.nodes[new_leader].name, names[l]);

    // It comes back on the same address and data dir and catches up from the log.
    let peers: Vec<SocketAddr> = (0..3).filter(|&j| j != l).map(|j| t.addrs[j]).collect();
    let back = start(&config(
        &names[l],
        t.addrs[l],
        &peers,
        SECRET,
        Some(dirs[l].path()),
        ReplicationAcks::Majority,
    ))
    .await;
    assert!(head(&back.client, ctx).await.0 >= 20, "it kept its data");
    t.nodes.insert(l, back);
    converge(&t.nodes.iter().collect::<Vec<_>>(), ctx, 50).await;
    append(&t.nodes[l].client, ctx, "after").await;
    converge(&t.nodes.iter().collect::<Vec<_>>(), ctx, 51).await;
    shutdown(t.nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_all_refuses_while_a_voter_is_missing_and_resumes_when_it_returns() {
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let mut t = three("w", Some(&dirs), ReplicationAcks::All).await;
    append(&t.nodes[0].client, "all", "first").await;
    converge(&t.nodes.iter().collect::<Vec<_>>(), "all", 1).await;
    assert_eq!(status_of(&t.nodes[0].client).await.replication_acks, "all");
    // Stop a follower: a majority still commits, but not every voter confirms.
    let l = leader_of(&t.nodes).await;
    let f = (l + 1) % 3;
    let name = t.names[f].clone();
    let stopped = t.nodes.remove(f);
    stopped.ledger.shutdown().await;
    let survivor = &t.nodes[0].client;
    let req = proto::AppendRequest {
        idempotency_key: "second".into(),
        ..common::append_req("all", "k", "second")
    };
    let refused = survivor
        .append(req.clone())
        .await
        .expect_err("a voter is missing");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("replication-acks all") && refused.message().contains(&name),
        "names the setting and the missing voter: {}",
        refused.message()
    );
    // It returns: the retry with the same key is acknowledged, once.
    let peers: Vec<SocketAddr> = (0..3).filter(|&j| j != f).map(|j| t.addrs[j]).collect();
    let back = start(&config(
        &name,
        t.addrs[f],
        &peers,
        SECRET,
        Some(dirs[f].path()),
        ReplicationAcks::All,
    ))
    .await;
    t.nodes.insert(f, back);
    let deadline = Instant::now() + Duration::from_secs(20);
    let e = loop {
        match t.nodes[0].client.append(req.clone()).await {
            Ok(r) => break r.entry.expect("entry"),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("append after the voter returned: {s:?}"),
        }
    };
    assert_eq!(
        e.sequence, 2,
        "the refused append was committed once, never twice"
    );
    converge(&t.nodes.iter().collect::<Vec<_>>(), "all", 2).await;
    shutdown(t.nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_the_wrong_secret_never_joins() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let maj = ReplicationAcks::Majority;
    let a = start(&config("za", a_addr, &[b_addr], SECRET, None, maj)).await;
    let b = start(&config("zb", b_addr, &[a_addr], SECRET, None, maj)).await;
    wait_members(&a, &["za", "zb"]).await;
    let x = start(&config(
        "zx",
        free_addr(),
        &[a_addr, b_addr],
        "wrong",
        None,
        maj,
    ))
    .await;
    // Give it several dial attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_members(&a, &["za", "zb"]).await;
    wait_members(&x, &["zx"]).await;
    // X never reached its seeds: its group is not founded, and it refuses appends.
    let refused = x
        .client
        .append(common::append_req("solo", "k", "only-on-x"))
        .await
        .expect_err("a node that never reached its seeds refuses");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("forming"),
        "{}",
        refused.message()
    );
    append(&a.client, "shared", "on-a").await;
    converge(&[&a, &b], "shared", 1).await;
    assert_eq!(head(&x.client, "solo").await.0, 0);
    assert_eq!(head(&x.client, "shared").await.0, 0);
    shutdown(vec![a, b, x]).await;
}
