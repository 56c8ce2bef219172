//! The real binary: readiness line, clean SIGTERM, --memory writes nothing, GRPC_PORT,
//! configuration errors.

mod common;

use common::process::{killed_actor_kind, spawn_server, FAULT_INJECTION_MARKER};
use common::*;
use converge_ledger::proto;
use futures::StreamExt;
use std::process::Command;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_with_unavailable_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(Some(dir.path()), &["--durability", "none"], None);
    let c = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
        .await
        .unwrap();
    for i in 0..50 {
        c.append(append_req("t", "k", &format!("{i}")))
            .await
            .unwrap();
    }
    let mut w = c
        .watch(proto::WatchRequest {
            context_id: "t".into(),
            from_sequence: 49,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().entry.unwrap().sequence, 50);
    let status = tokio::task::spawn_blocking(move || server.sigterm())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let end = w.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);

    // Everything acknowledged (even without fsync per append) was flushed at shutdown.
    let server = spawn_server(Some(dir.path()), &[], None);
    let c = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(c.get_after("t", 0, 0).await.unwrap().latest_sequence, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_writes_no_files() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = spawn_server(None, &["--memory"], Some(cwd.path()));
    let c = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
        .await
        .unwrap();
    let r = c.append(append_req("m", "k", "v")).await.unwrap();
    assert_eq!(r.durability, proto::Durability::Memory as i32);
    assert!(tokio::task::spawn_blocking(move || server.sigterm())
        .await
        .unwrap()
        .success());
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "files written in --memory mode: {left:?}");
}

#[test]
fn grpc_port_environment_variable_sets_the_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args(["serve", "--memory"])
        .env_remove("LEDGER_LISTEN")
        .env("GRPC_PORT", port.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("converge-ledger ready"))
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(&format!("listen=127.0.0.1:{port}")), "{line}");
}

#[test]
fn bad_configuration_exits_2_naming_the_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args([
            "serve",
            "--memory",
            "--max-payload-bytes",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--max-payload-bytes is 0"), "{text}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = spawn_server(Some(dir.path()), &[], None);
    let out = Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot open"), "{text}");
}

/// `--fault-injection`: each SIGUSR1 kills the next actor in the rotation (on a single node:
/// a ContextActor, the StorageWriter, the WatchRegistry, the GrpcServerSupervisor, the
/// ContextSupervisor, the StorageSupervisor); the supervisors restart them, the process keeps
/// serving, and every acknowledged entry is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_kills_every_kind_of_actor_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(Some(dir.path()), &["--fault-injection"], None);
    let marker = FAULT_INJECTION_MARKER;
    let mut acked = 0u64;
    for round in 0..9 {
        let c = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
            .await
            .unwrap();
        // Appends retry UNAVAILABLE: the killed actor may be on the path for a moment.
        for i in 0..5 {
            let mut req = append_req("fi", "k", &format!("{round}-{i}"));
            req.idempotency_key = format!("{round}-{i}");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match c.append(req.clone()).await {
                    Ok(r) => {
                        assert_eq!(r.entry.unwrap().sequence, acked + 1);
                        acked += 1;
                        break;
                    }
                    Err(s)
                        if s.code() == Code::Unavailable
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(s) => panic!("append during fault injection: {s:?}"),
                }
            }
        }
        let before = server.log_lines(marker).len();
        server.sigusr1();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.log_lines(marker).len() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGUSR1 killed nothing"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let killed: std::collections::BTreeSet<String> = server
        .log_lines(marker)
        .iter()
        .filter_map(|l| killed_actor_kind(l))
        .collect();
    for kind in [
        "context actor",
        "storage_writer",
        "watch_registry",
        "grpc_server",
        "context_supervisor",
        "storage_supervisor",
    ] {
        assert!(killed.contains(kind), "{kind} never killed: {killed:?}");
    }
    let c = converge_ledger::client::wait_ready(&server.url, Duration::from_secs(10))
        .await
        .unwrap();
    let r = c.get_after("fi", 0, 0).await.unwrap();
    assert_eq!(r.latest_sequence, acked);
}
