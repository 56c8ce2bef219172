//! ClusterService/Status and `converge-ledger status` on a single node: contexts listed in
//! id order with their latest sequences, paged; limits enforced with the offending value.
//! (The cluster fields are covered by the cluster tests.)

mod common;

use common::{append_req, start_memory};
use converge_ledger::proto::StatusRequest;
use std::process::Command;
use tonic::Code;

// multi_thread: the CLI runs as a blocking child process while this runtime serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_contexts_in_pages_with_latest_sequences() {
    let (ledger, c) = start_memory().await;
    for (ctx, n) in [("b", 2), ("a", 1), ("c", 3), ("a/nested", 4)] {
        for i in 0..n {
            c.append(append_req(ctx, "k", &format!("{i}")))
                .await
                .unwrap();
        }
    }
    let s = c.status(StatusRequest::default()).await.unwrap();
    assert!(!s.clustered);
    assert_eq!(s.node_name, "");
    assert_eq!(s.durability, "MEMORY");
    assert_eq!(s.replication_acks, "");
    assert_eq!(s.replication, "");
    assert!(s.raft_groups.is_empty());
    let listed: Vec<(String, u64)> = s
        .contexts
        .iter()
        .map(|c| (c.context_id.clone(), c.latest_sequence))
        .collect();
    let expect = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    };
    assert_eq!(
        listed,
        expect(&[("a", 1), ("a/nested", 4), ("b", 2), ("c", 3)])
    );
    assert_eq!(s.next_after_context_id, "");

    // Pages of two: the first says where to continue, the second ends the listing.
    let p1 = c
        .status(StatusRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p1.contexts.len(), 2);
    assert_eq!(p1.next_after_context_id, "a/nested");
    let p2 = c
        .status(StatusRequest {
            limit: 2,
            after_context_id: p1.next_after_context_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = p2.contexts.iter().map(|c| c.context_id.as_str()).collect();
    assert_eq!(ids, ["b", "c"]);
    assert_eq!(p2.next_after_context_id, "");

    // One context, also one that has no entries.
    let one = c
        .status(StatusRequest {
            context_id: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.contexts.len(), 1);
    assert_eq!(one.contexts[0].latest_sequence, 3);
    let none = c
        .status(StatusRequest {
            context_id: "never".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none.contexts[0].latest_sequence, 0);

    let e = c
        .status(StatusRequest {
            limit: 10_001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("10001"), "{}", e.message());

    // The CLI: text and --json, paging through everything with --limit 0.
    let url = ledger.url();
    let out = Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args(["status", "--server", &url, "--limit", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clustered"], false);
    assert_eq!(v["contexts"].as_array().unwrap().len(), 4);
    assert_eq!(v["contexts"][1]["context_id"], "a/nested");
    assert_eq!(v["contexts"][1]["latest_sequence"], 4);
    assert_eq!(v["truncated"], false);
    let out = Command::new(env!("CARGO_BIN_EXE_converge-ledger"))
        .args(["status", "--server", &url, "--limit", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("single node (no cluster); durability MEMORY"),
        "{text}"
    );
    assert!(text.contains("contexts (1 listed; more exist"), "{text}");
    ledger.shutdown().await;
}
