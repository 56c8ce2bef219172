//! The real binary: readiness line, clean SIGTERM, --memory writes nothing, GRPC_PORT,
//! configuration errors.

mod common;

use common::process::spawn_server;
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
