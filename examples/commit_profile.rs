//! A driver for profiling the writer's commit path under callgrind or perf, where
//! criterion's timing loop would only add noise: `rounds` commits of `ops` single-entry
//! appends, each op to its own context, durability none, in a temporary redb file.
//!
//! ```text
//! cargo build --release --example commit_profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_commit*' \
//!     target/release/examples/commit_profile 256 20 200
//! ```
//! Instructions per append = the collected total ÷ (ops × rounds).

#[path = "../benches/support/mod.rs"]
mod support;

use converge_ledger::integrity::{leaf_hash, Frontier};
use converge_ledger::storage::{commit_batch, DurabilityMode, Store, WriteOp};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ops: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let warm: usize = args.next().map_or(Ok(0), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open_dir(dir.path(), DurabilityMode::Written)?;
    let ids: Vec<Arc<str>> = (0..ops).map(|i| Arc::from(format!("ctx-{i}"))).collect();
    let mut heads: Vec<(u64, Frontier)> = (0..ops).map(|_| (0, Frontier::empty())).collect();
    let mut started = std::time::Instant::now();
    for round in 0..warm + rounds {
        if round == warm {
            started = std::time::Instant::now();
        }
        let mut batch: Vec<WriteOp> = (0..ops)
            .map(|i| {
                let (seq, frontier) = &mut heads[i];
                let prev = *seq;
                *seq += 1;
                let e = support::bench_entry(&ids[i], "bench", *seq, false);
                let mut nodes = Vec::new();
                frontier.push(leaf_hash(&e.content_hash), &mut nodes);
                WriteOp {
                    context_id: ids[i].clone(),
                    expect_prev: prev,
                    entries: vec![e],
                    nodes,
                    idempotency: Vec::new(),
                    on_done: Some(Box::new(|r, _| {
                        if let Err(e) = r {
                            eprintln!("commit failed: {e}");
                            std::process::exit(1);
                        }
                    })),
                }
            })
            .collect();
        if round < warm {
            commit_batch(&store, &mut batch);
        } else {
            measured_commit(&store, &mut batch);
        }
    }
    let n = (ops * rounds) as f64;
    println!(
        "{} appends in {} commits: {:.1} µs per append (wall, measured rounds, includes building the ops)",
        ops * rounds,
        rounds,
        started.elapsed().as_secs_f64() * 1e6 / n
    );
    Ok(())
}

#[inline(never)]
fn measured_commit(store: &Store, batch: &mut Vec<WriteOp>) {
    commit_batch(store, batch);
}
