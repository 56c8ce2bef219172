//! The client commands of the binary against a real server: output, JSON, exit codes.

mod common;

use common::*;
use std::process::{Command, Output};

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args(args)
        .args(["--server", url])
        .env_remove("LEDGER_SERVER")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_get_snapshot_load_round_trip_with_json() {
    let (ledger, _c) = start_memory().await;
    let url = ledger.url();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let url = url2;
        let o = cli(
            &url,
            &[
                "append",
                "--context",
                "cli",
                "--key",
                "facts",
                "--payload",
                "hello",
                "--meta",
                "step=1",
                "--json",
            ],
        );
        assert!(o.status.success(), "{o:?}");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["sequence"], 1);
        assert_eq!(v["payload"], "hello");
        assert_eq!(v["metadata"]["step"], "1");
        assert_eq!(v["durability"], "MEMORY");

        let o = cli(
            &url,
            &[
                "append",
                "--context",
                "cli",
                "--key",
                "intents",
                "--payload",
                "next",
            ],
        );
        assert!(o.status.success());
        assert!(stdout(&o).contains("#2"), "{}", stdout(&o));

        let o = cli(&url, &["get", "--context", "cli", "--json"]);
        let lines: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "two entries and a summary");
        assert_eq!(lines[2]["latest_sequence"], 2);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("snap.cbor");
        let f = file.to_str().unwrap();
        assert!(cli(&url, &["snapshot", "--context", "cli", "--out", f])
            .status
            .success());
        let o = cli(
            &url,
            &["load", "--context", "cli-copy", "--in", f, "--json"],
        );
        assert!(o.status.success(), "{o:?}");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["entries_restored"], 2);
        // Loading again with --fail-if-exists: the server refuses, exit status 1.
        let o = cli(
            &url,
            &[
                "load",
                "--context",
                "cli-copy",
                "--in",
                f,
                "--fail-if-exists",
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("ALREADY_EXISTS"),
            "{o:?}"
        );
    })
    .await
    .unwrap();
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_grpc_status_and_exit_non_zero() {
    let (ledger, _c) = start_memory().await;
    let url = ledger.url();
    tokio::task::spawn_blocking(move || {
        let long = "k".repeat(300);
        let o = cli(
            &url,
            &["append", "--context", "x", "--key", &long, "--payload", "v"],
        );
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains("over the limit of 256"),
            "{err}"
        );
        let o = cli(
            &url,
            &[
                "append",
                "--context",
                "x",
                "--key",
                "k",
                "--meta",
                "no-equals-sign",
                "--payload",
                "v",
            ],
        );
        assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
        let o = cli("http://127.0.0.1:1", &["get", "--context", "x"]);
        assert_eq!(o.status.code(), Some(1), "unreachable server");
    })
    .await
    .unwrap();
    ledger.shutdown().await;
}
