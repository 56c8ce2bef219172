//! Proofs and historical roots read from a real redb store: what one IntegrityService
//! request costs at 10K and 1M entries in one context.
//!
//! The store is built once per size, on disk in a temporary folder (durability "written":
//! committed, not fsynced), through the public storage API: the group-commit writer
//! (`storage::spawn_writer`) with the entries and the complete subtrees a `Frontier`
//! reports, exactly as the ContextActor writes them. Each measured iteration opens its own
//! read transaction, as a request does, and asks for a different leaf or size (a fixed
//! pseudo-random walk), so no single path stays hot. Finally the same store is served by a
//! real `Ledger` and ProveInclusion is timed over gRPC on loopback, for the whole request.
//!
//! Run: `cargo bench --bench proofs` (building the 1M store takes about a minute).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use converge_ledger::config::{Config, StorageConfig};
use converge_ledger::integrity::{
    consistency_proof, inclusion_proof, leaf_hash, root_at, Frontier,
};
use converge_ledger::model::Entry;
use converge_ledger::server::Ledger;
use converge_ledger::storage::{spawn_writer, DurabilityMode, Store, WriteOp, WriterMsg};
mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const CTX: &str = "bench-context";
/// Entries per write op while building.
const BUILD_OP_ENTRIES: u64 = 10_000;

fn entry(seq: u64) -> Entry {
    support::bench_entry(CTX, "facts", seq, true)
}

/// Writes entries 1..=n of `CTX` into a new store in `dir` through the group-commit writer.
fn build_store(dir: &Path, n: u64) {
    let started = Instant::now();
    let store = Store::open_dir(dir, DurabilityMode::Written).expect("open store");
    let (tx, writer) = spawn_writer(store, |r| {
        if let Err(e) = r {
            eprintln!("writer failed: {e}");
        }
    })
    .expect("start writer");
    let context: Arc<str> = Arc::from(CTX);
    let mut frontier = Frontier::empty();
    let mut prev = 0u64;
    while prev < n {
        let last = (prev + BUILD_OP_ENTRIES).min(n);
        let entries: Vec<Entry> = (prev + 1..=last).map(entry).collect();
        let mut nodes = Vec::new();
        for e in &entries {
            frontier.push(leaf_hash(&e.content_hash), &mut nodes);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let op = WriteOp {
            context_id: context.clone(),
            expect_prev: prev,
            entries,
            nodes,
            idempotency: Vec::new(),
            on_done: Some(Box::new(move |result, _| {
                let _ = done_tx.send(result.map(|_| ()));
            })),
        };
        if tx.blocking_send(WriterMsg::Write(op)).is_err() {
            panic!("the writer stopped");
        }
        done_rx.recv().expect("writer answers").expect("commit");
        prev = last;
    }
    let _ = tx.blocking_send(WriterMsg::Sync);
    drop(tx);
    writer.join().expect("writer thread");
    let bytes = std::fs::metadata(dir.join("ledger.redb")).map_or(0, |m| m.len());
    eprintln!(
        "built a store of {n} entries in {:.1} s ({} MB on disk)",
        started.elapsed().as_secs_f64(),
        bytes >> 20
    );
}

/// A fixed pseudo-random walk over `[lo, hi)`, so successive iterations read other paths.
struct Walk(u64);

impl Walk {
    fn next_in(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (self.0 >> 11) % (hi - lo)
    }
}

fn from_storage(c: &mut Criterion) {
    for n in [10_000u64, 1_000_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        build_store(dir.path(), n);
        {
            let store = Store::open_dir(dir.path(), DurabilityMode::Written).expect("reopen");
            let mut g = c.benchmark_group("proof from storage");
            let mut walk = Walk(1);
            g.bench_with_input(BenchmarkId::new("read txn only", n), &n, |b, _| {
                b.iter(|| black_box(store.reader().unwrap()))
            });
            g.bench_with_input(BenchmarkId::new("inclusion", n), &n, |b, &n| {
                b.iter(|| {
                    let r = store.reader().unwrap();
                    let leaf = walk.next_in(0, n);
                    inclusion_proof(&r.nodes(CTX), leaf, n).unwrap()
                })
            });
            g.bench_with_input(BenchmarkId::new("consistency", n), &n, |b, &n| {
                b.iter(|| {
                    let r = store.reader().unwrap();
                    let first = walk.next_in(1, n);
                    consistency_proof(&r.nodes(CTX), first, n).unwrap()
                })
            });
            g.bench_with_input(BenchmarkId::new("historical root", n), &n, |b, &n| {
                b.iter(|| {
                    let r = store.reader().unwrap();
                    let size = walk.next_in(1, n + 1);
                    root_at(&r.nodes(CTX), size).unwrap()
                })
            });
            g.finish();
        }
        over_grpc(c, dir.path(), n);
    }
}

/// ProveInclusion as a client sees it: a real Ledger serving the store, loopback gRPC.
fn over_grpc(c: &mut Criterion, dir: &Path, n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config {
        storage: StorageConfig::Dir {
            path: dir.to_path_buf(),
            fsync: false,
        },
        ..Config::for_test()
    };
    let ledger = rt.block_on(Ledger::start(&config)).expect("ledger starts");
    let client = rt
        .block_on(converge_ledger::client::wait_ready(
            &ledger.url(),
            std::time::Duration::from_secs(10),
        ))
        .expect("ready");
    let mut walk = Walk(2);
    let mut g = c.benchmark_group("ProveInclusion over gRPC (loopback)");
    g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
        b.iter(|| {
            let seq = walk.next_in(1, n + 1);
            rt.block_on(client.prove_inclusion(CTX, seq, n)).unwrap()
        })
    });
    g.finish();
    rt.block_on(ledger.shutdown());
}

criterion_group!(benches, from_storage);
criterion_main!(benches);
