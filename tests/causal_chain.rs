//! Cross-context causality (docs/INTEGRITY.md, "Lamport clocks"): an entry appended with
//! the clock of the entry it was derived from sorts after it, whichever contexts they live
//! in — the seed's workflow A → B → C, and back to A.

mod common;

use common::*;
use converge_ledger::client::LedgerClient;
use converge_ledger::proto::Entry;

async fn derive(c: &LedgerClient, ctx: &str, payload: &str, from: Option<&Entry>) -> Entry {
    let mut req = append_req(ctx, "facts", payload);
    req.received_lamport_clock = from.map_or(0, |e| e.lamport_clock);
    c.append(req).await.unwrap().entry.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_across_three_contexts_keeps_causal_order() {
    let (ledger, c) = start_memory().await;
    // Unrelated histories: A's clock runs far ahead of B's and C's.
    for i in 0..10 {
        derive(&c, "A", &format!("a{i}"), None).await;
    }
    derive(&c, "B", "b0", None).await;
    for i in 0..4 {
        derive(&c, "C", &format!("c{i}"), None).await;
    }

    let x = derive(&c, "A", "finding", None).await;
    assert_eq!(x.lamport_clock, 11);
    let y = derive(&c, "B", "plan from the finding", Some(&x)).await;
    let z = derive(&c, "C", "action from the plan", Some(&y)).await;
    assert!(y.lamport_clock > x.lamport_clock, "B after A: {y:?} {x:?}");
    assert!(z.lamport_clock > y.lamport_clock, "C after B: {z:?} {y:?}");
    // Exactly max(own, received) + 1.
    assert_eq!((y.lamport_clock, z.lamport_clock), (12, 13));

    // Without the received clock B's next entry would have sorted before the finding.
    let unrelated = derive(&c, "B", "not derived", None).await;
    assert_eq!(unrelated.lamport_clock, y.lamport_clock + 1);
    let fresh = derive(&c, "D", "no history, not derived", None).await;
    assert!(fresh.lamport_clock < x.lamport_clock);

    // Back to A: A's own clock (11) is behind C's entry; the derived entry jumps past it.
    let w = derive(&c, "A", "follow-up from the action", Some(&z)).await;
    assert!(w.lamport_clock > z.lamport_clock && z.lamport_clock > x.lamport_clock);
    assert_eq!(w.lamport_clock, 14);

    // A received clock below the context's own never lowers it.
    let low = derive(&c, "A", "derived from an old entry", Some(&x)).await;
    assert_eq!(low.lamport_clock, w.lamport_clock + 1);

    // Root reports the clock of entry m, so an auditor can check the chain from roots too.
    for (ctx, e) in [("A", &x), ("B", &y), ("C", &z), ("A", &w)] {
        let r = c.root(ctx, e.sequence).await.unwrap();
        assert_eq!(r.lamport_clock, e.lamport_clock, "{ctx}#{}", e.sequence);
    }

    // Sorting every entry of the three contexts by (clock, context) puts each entry after
    // what it was derived from.
    let mut all: Vec<(u64, String, String)> = Vec::new();
    for ctx in ["A", "B", "C"] {
        for e in c.read_all(ctx).await.unwrap() {
            all.push((
                e.lamport_clock,
                ctx.to_string(),
                String::from_utf8(e.payload.to_vec()).unwrap(),
            ));
        }
    }
    all.sort();
    let pos = |p: &str| all.iter().position(|(_, _, q)| q == p).unwrap();
    assert!(pos("finding") < pos("plan from the finding"));
    assert!(pos("plan from the finding") < pos("action from the plan"));
    assert!(pos("action from the plan") < pos("follow-up from the action"));
    ledger.shutdown().await;
}
