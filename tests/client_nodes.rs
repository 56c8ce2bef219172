//! `--server` with several URLs: URL errors that say what is expected, an append that
//! skips a dead node, and a `watch` that rides out `kill -9` of its server.

mod common;

use common::process::{free_port, spawn_server};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_converge-ledger");

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LEDGER_SERVER")
        .output()
        .unwrap()
}

#[test]
fn a_server_without_a_port_or_with_another_scheme_is_a_usage_error() {
    for (url, says) in [
        ("127.0.0.1", "no port"),
        ("http://localhost", "no port"),
        ("https://127.0.0.1:1", "unsupported scheme \"https\""),
        ("127.0.0.1:1,grpc://h:2", "unsupported scheme \"grpc\""),
    ] {
        let o = cli(&["get", "--context", "c", "--server", url]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(
            err.contains("http://HOST:PORT or HOST:PORT"),
            "{url}: {err}"
        );
    }
}

#[test]
fn append_skips_a_dead_node_and_watch_resumes_after_its_server_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(Some(dir.path()), &[], None);
    let servers = format!("http://127.0.0.1:{},{}", free_port(), server.url);
    let append = |i: u32| {
        let o = cli(&[
            "append",
            "--server",
            &servers,
            "--context",
            "w",
            "--key",
            "k",
            "--payload",
            &format!("p{i}"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    for i in 1..=3 {
        append(i);
    }
    let mut watch = Command::new(BIN)
        .args(["watch", "--server", &servers, "--context", "w", "--json"])
        .env_remove("LEDGER_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(seq) = v["sequence"].as_u64() {
                if tx.send(seq).is_err() {
                    return;
                }
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a watch line")
    };
    assert_eq!([next(), next(), next()], [1, 2, 3]);
    server.restart(); // kill -9, then the same address and data dir
    for i in 4..=6 {
        append(i);
    }
    assert_eq!([next(), next(), next()], [4, 5, 6], "no gap, no repeat");
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch is still running"
    );
    watch.kill().unwrap();
    let out = watch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("error"), "{err}");
}
