//! The cluster transport (ClusterManager + RactorLink over ractor_cluster) with real
//! NodeServers on 127.0.0.1: three in-process ledgers find each other, frames arrive in
//! order, a stopped node leaves and a restarted one rejoins by itself, a wrong secret is
//! refused (and logged), an unreachable peer does not block start-up.
//!
//! ractor's registry and process groups are process-global, so these tests also check that
//! several nodes in one process (and tests running in parallel) do not see each other's
//! sessions.
//!
//! The nodes start with `Ledger::start_transport_only` (no Raft group), so the frames these
//! tests send reach the test's own inbound channel; tests/cluster.rs runs the Raft group over
//! this transport.

mod common;

use bytes::Bytes;
use converge_ledger::actors::cluster::{ClusterLink, Inbound, MemberStatus, FRAME_BYTES_MAX};
use converge_ledger::config::{ClusterConfig, Config, ReplicationAcks};
use converge_ledger::server::Ledger;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

const SECRET: &str = "test-secret";
const WAIT: Duration = Duration::from_secs(10);

/// Every log line of this test binary, so tests can check what was logged.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let filter = std::env::var("TEST_LOG")
            .unwrap_or_else(|_| "converge_ledger=debug,ractor_cluster=info".into());
        let echo = std::env::var("TEST_LOG").is_ok();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || LogWriter {
                sink: sink.clone(),
                echo,
            })
            .try_init();
        buf
    })
}

struct LogWriter {
    sink: Arc<Mutex<Vec<u8>>>,
    echo: bool,
}

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.echo {
            let _ = std::io::stderr().write_all(b);
        }
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(all: &[&str]) -> Vec<String> {
    let buf = logs().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| all.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// A free port on 127.0.0.1 (ractor_cluster does not report the port it got for 0).
/// Distinct in this test process (two `bind(0)`s in a row can return the same port).
fn free_addr() -> SocketAddr {
    common::process::free_addr()
}

fn config(name: &str, listen: SocketAddr, peers: &[SocketAddr], secret: &str) -> Config {
    let mut c = Config::for_test();
    c.cluster = Some(ClusterConfig {
        node_name: name.to_string(),
        listen,
        peers: peers.iter().map(|p| p.to_string()).collect(),
        secret: secret.to_string(),
        replication_acks: ReplicationAcks::Majority,
        raft_timing: Default::default(),
    });
    c
}

async fn start(name: &str, listen: SocketAddr, peers: &[SocketAddr], secret: &str) -> Ledger {
    logs();
    Ledger::start_transport_only(&config(name, listen, peers, secret))
        .await
        .expect("ledger starts")
}

fn link(l: &Ledger) -> Arc<dyn ClusterLink> {
    l.shared().cluster_link().expect("clustered").clone()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits until `l` sees exactly `live` as the live members.
async fn wait_live(l: &Ledger, live: &[&str]) {
    let want = set(live);
    let mut rx = link(l).members();
    let name = link(l).node_name().to_string();
    // Never keep the watch's `Ref` while borrowing again: a writer waiting for it (the
    // ClusterManager publishing) would block the second borrow, and itself with it.
    let ok = tokio::time::timeout(WAIT, rx.wait_for(|m| m.live == want))
        .await
        .is_ok_and(|r| r.is_ok());
    let now = link(l).members().borrow().clone();
    assert!(ok, "{name}: live is {:?}, expected {want:?}", now.live);
}

/// Three nodes, each configured with the other two.
async fn three(prefix: &str) -> (Vec<Ledger>, Vec<SocketAddr>, Vec<String>) {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers: Vec<SocketAddr> = (0..3).filter(|j| *j != i).map(|j| addrs[j]).collect();
        nodes.push(start(&names[i], addrs[i], &peers, SECRET).await);
    }
    (nodes, addrs.to_vec(), names)
}

fn inbound(l: &Ledger, cap: usize) -> mpsc::Receiver<Inbound> {
    let (tx, rx) = mpsc::channel(cap);
    link(l).set_inbound(tx);
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_see_each_other_and_frames_arrive_in_order() {
    let (nodes, _addrs, names) = three("t1").await;
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    for n in &nodes {
        wait_live(n, &all).await;
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rx_b = inbound(b, 4096);
    let mut rx_c = inbound(&nodes[2], 16);

    let n = 2000u32;
    for i in 0..n {
        link(a)
            .send(&names[1], Bytes::from(i.to_be_bytes().to_vec()))
            .expect("send a→b");
    }
    for i in 0..n {
        let got = tokio::time::timeout(WAIT, rx_b.recv())
            .await
            .expect("frame in time")
            .expect("open");
        assert_eq!(got.from, names[0]);
        assert_eq!(got.frame.as_ref(), &i.to_be_bytes());
    }
    // Nothing leaked to C.
    assert!(rx_c.try_recv().is_err());

    // Sending to itself or to an unknown node fails at once.
    assert!(link(a).send(&names[0], Bytes::from_static(b"x")).is_err());
    assert!(link(a).send("nobody", Bytes::from_static(b"x")).is_err());

    // member_states: this node first, then the two peers Up.
    let states = link(a).member_states();
    assert_eq!(states[0].status, MemberStatus::This);
    assert_eq!(states[0].name, names[0]);
    let up: BTreeSet<String> = states
        .iter()
        .filter(|s| s.status == MemberStatus::Up)
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(up, set(&[&names[1], &names[2]]));

    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_frame_goes_through_and_an_oversized_one_is_dropped() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start("t2a", a_addr, &[b_addr], SECRET).await;
    let b = start("t2b", b_addr, &[a_addr], SECRET).await;
    wait_live(&a, &["t2a", "t2b"]).await;
    wait_live(&b, &["t2a", "t2b"]).await;
    let mut rx = inbound(&b, 16);

    let big: Vec<u8> = (0..FRAME_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    let started = std::time::Instant::now();
    for i in 0..3u8 {
        let mut f = big.clone();
        f[0] = i;
        link(&a).send("t2b", Bytes::from(f)).expect("send big");
    }
    for i in 0..3u8 {
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("big frame in time")
            .expect("open");
        assert_eq!(got.frame.len(), FRAME_BYTES_MAX);
        assert_eq!(got.frame[0], i);
        assert_eq!(&got.frame[1..], &big[1..]);
    }
    eprintln!(
        "3 frames of {FRAME_BYTES_MAX} bytes in {:?}",
        started.elapsed()
    );
    // Too large: dropped and counted, and the session survives it.
    let too_big = Bytes::from(vec![0u8; FRAME_BYTES_MAX + 1]);
    link(&a)
        .send("t2b", too_big)
        .expect("dropped, not an error");
    assert_eq!(a.cluster_link().expect("link").dropped_outbound(), 1);
    link(&a)
        .send("t2b", Bytes::from_static(b"after"))
        .expect("still up");
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.frame.as_ref(), b"after");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_node_leaves_and_rejoins_by_itself() {
    let (mut nodes, addrs, names) = three("t3").await;
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    for n in &nodes {
        wait_live(n, &all).await;
    }
    let version_before = link(&nodes[0]).members().borrow().version;
    let c = nodes.pop().expect("c");
    c.shutdown().await;
    for n in &nodes {
        wait_live(n, &all[..2]).await;
    }
    assert!(link(&nodes[0]).members().borrow().version > version_before);
    assert!(link(&nodes[0]).send(&names[2], Bytes::new()).is_err());
    let states = link(&nodes[0]).member_states();
    let c_state = states.iter().find(|s| s.name == names[2]).expect("c known");
    assert_eq!(c_state.status, MemberStatus::Down);
    assert_eq!(
        c_state.address.as_deref(),
        Some(addrs[2].to_string().as_str())
    );

    // C comes back on the same address (configured with no peers: A and B redial it).
    let c = start(&names[2], addrs[2], &[], SECRET).await;
    nodes.push(c);
    for n in &nodes {
        wait_live(n, &all).await;
    }
    // And frames flow to the new incarnation.
    let mut rx_c = inbound(&nodes[2], 16);
    link(&nodes[0])
        .send(&names[2], Bytes::from_static(b"welcome back"))
        .expect("send to c");
    let got = tokio::time::timeout(WAIT, rx_c.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.from, names[0]);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_wrong_secret_is_refused_and_logged() {
    let (a_addr, b_addr, w_addr) = (free_addr(), free_addr(), free_addr());
    let a = start("t4a", a_addr, &[b_addr], SECRET).await;
    let b = start("t4b", b_addr, &[a_addr], SECRET).await;
    let w = start("t4w", w_addr, &[a_addr, b_addr], "not-the-secret").await;
    wait_live(&a, &["t4a", "t4b"]).await;
    // W keeps trying (with backoff); give it time for a few attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (l, me, other) in [(&a, "t4a", "t4b"), (&b, "t4b", "t4a")] {
        assert_eq!(link(l).members().borrow().live, set(&[me, other]));
    }
    assert_eq!(link(&w).members().borrow().live, set(&["t4w"]));
    assert!(a.cluster_link().expect("link").refused() > 0);
    assert!(w.cluster_link().expect("link").refused() > 0);
    // The refusal says what happened and with whom, on both sides.
    let on_a = log_lines_with(&["WARN", "refused", "t4w"]);
    assert!(!on_a.is_empty(), "no refusal of t4w logged");
    let on_w = log_lines_with(&["WARN", "refused", "t4a"]);
    assert!(!on_w.is_empty(), "t4w did not log its refusal by t4a");
    a.shutdown().await;
    b.shutdown().await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_peer_does_not_block_start_up() {
    let nobody = free_addr(); // nothing listens there
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let started = std::time::Instant::now();
    let a = start("t5a", a_addr, &[nobody, b_addr], SECRET).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(link(&a).members().borrow().live, set(&["t5a"]));
    // The configured-but-never-seen peer is listed Down under its address.
    let states = link(&a).member_states();
    assert!(states
        .iter()
        .any(|s| s.name == nobody.to_string() && s.status == MemberStatus::Down));
    // A peer that starts later is found by the retries.
    let b = start("t5b", b_addr, &[], SECRET).await;
    wait_live(&a, &["t5a", "t5b"]).await;
    wait_live(&b, &["t5a", "t5b"]).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_manager_restarts_and_the_link_survives() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = start("t6a", a_addr, &[b_addr], SECRET).await;
    let b = start("t6b", b_addr, &[a_addr], SECRET).await;
    // Both must have seen each other before the kill, or B's first view of A may be the
    // session after the restart (one membership change, not two).
    wait_live(&a, &["t6a", "t6b"]).await;
    wait_live(&b, &["t6a", "t6b"]).await;
    let link_before = link(&a);
    let manager = ractor::registry::where_is(a.shared().actor_name("cluster_manager"))
        .expect("manager registered");
    let mut rx_b = link(&b).members();
    let v0 = rx_b.borrow().version;
    manager.kill();
    // B sees A go and come back (at least two changes); A's link (the same object) sees B
    // again.
    let both = set(&["t6a", "t6b"]);
    let ok = tokio::time::timeout(
        WAIT,
        rx_b.wait_for(|m| m.version >= v0 + 2 && m.live == both),
    )
    .await;
    assert!(
        ok.is_ok_and(|r| r.is_ok()),
        "B did not see A leave and come back"
    );
    wait_live(&a, &["t6a", "t6b"]).await;
    assert!(Arc::ptr_eq(&link_before, &link(&a)));
    let mut rx = inbound(&b, 4);
    link_before
        .send("t6b", Bytes::from_static(b"still here"))
        .expect("send after restart");
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.from, "t6a");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namesake_is_refused_and_a_peer_pointing_at_itself_is_ignored() {
    let (a_addr, x_addr) = (free_addr(), free_addr());
    // A lists its own address among its peers: it must not dial itself.
    let a = start("t7a", a_addr, &[a_addr], SECRET).await;
    // X has the same name as A and the right secret: ractor_cluster refuses the session.
    let x = start("t7a", x_addr, &[a_addr], SECRET).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(link(&a).members().borrow().live, set(&["t7a"]));
    assert_eq!(link(&x).members().borrow().live, set(&["t7a"]));
    assert!(!log_lines_with(&["WARN", "same --node-name", "t7a"]).is_empty());
    // A's own address is not listed as a peer.
    assert!(link(&a)
        .member_states()
        .iter()
        .all(|s| s.status == MemberStatus::This || s.address != Some(a_addr.to_string())));
    a.shutdown().await;
    x.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_cluster_address_fails_start_up_clearly() {
    logs();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let started = std::time::Instant::now();
    let err = match Ledger::start_transport_only(&config("t8a", addr, &[], SECRET)).await {
        Ok(_) => panic!("started on a taken cluster address"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("cannot listen for the cluster"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
