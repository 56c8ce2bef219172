//! Benchmarks of the storage paths every append and read pays: the stored-entry codec and
//! one group commit of 1, 16 and 256 appends (each to its own context), without fsync and
//! with it; and the writer thread in fsync mode with and without the write-ahead log. Content hashing, frontier, proofs and snapshot encode/decode are in
//! `benches/integrity.rs`. Run: `cargo bench --bench storage -- --quick`.
//!
//! The commit benches write a real redb file in a temporary directory; with `fsync` each
//! commit pays one fsync of this machine's disk, so "per op" shows how group commit shares
//! it: a batch of 256 costs far less than 256 commits of one.

use std::hint::black_box;
use std::sync::Arc;

use converge_ledger::integrity::{leaf_hash, Frontier};
use converge_ledger::model::Entry;
use converge_ledger::storage::{
    commit_batch, decode_entry, encode_entry, spawn_writer, DurabilityMode, Store, WriteOp,
    WriterMsg,
};
mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CTX: &str = "bench-context";

fn entry(ctx: &str, seq: u64, meta: bool) -> Entry {
    support::bench_entry(ctx, "bench", seq, meta)
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("entry codec (256 B payload)");
    for meta in [false, true] {
        let e = entry(CTX, 42, meta);
        let v = encode_entry(&e);
        let name = if meta {
            "2 metadata pairs"
        } else {
            "no metadata"
        };
        g.bench_with_input(BenchmarkId::new("encode", name), &e, |b, e| {
            b.iter(|| encode_entry(black_box(e)))
        });
        g.bench_with_input(BenchmarkId::new("decode", name), &v, |b, v| {
            b.iter(|| decode_entry(42, black_box(v)).unwrap())
        });
    }
    g.finish();
}

/// One context per op slot, each with its own head, so every op continues its context.
struct Contexts {
    ids: Vec<Arc<str>>,
    heads: Vec<(u64, Frontier)>,
}

impl Contexts {
    fn new(n: usize) -> Self {
        Contexts {
            ids: (0..n).map(|i| Arc::from(format!("ctx-{i}"))).collect(),
            heads: (0..n).map(|_| (0, Frontier::empty())).collect(),
        }
    }

    /// `ops(k)`, each telling `done` when it completes.
    fn ops_reporting(&mut self, k: usize, done: &std::sync::mpsc::Sender<()>) -> Vec<WriteOp> {
        let mut ops = self.ops(k);
        for op in &mut ops {
            let done = done.clone();
            op.on_done = Some(Box::new(move |r, _| {
                r.expect("append succeeds");
                let _ = done.send(());
            }));
        }
        ops
    }

    /// One single-entry append op for each of the first `k` contexts.
    fn ops(&mut self, k: usize) -> Vec<WriteOp> {
        (0..k)
            .map(|i| {
                let (seq, frontier) = &mut self.heads[i];
                let prev = *seq;
                *seq += 1;
                let e = entry(&self.ids[i], *seq, false);
                let mut nodes = Vec::new();
                frontier.push(leaf_hash(&e.content_hash), &mut nodes);
                WriteOp {
                    context_id: self.ids[i].clone(),
                    expect_prev: prev,
                    entries: vec![e],
                    nodes,
                    idempotency: Vec::new(),
                    on_done: Some(Box::new(|r, _| {
                        r.expect("commit succeeds");
                    })),
                }
            })
            .collect()
    }
}

fn commits(c: &mut Criterion) {
    for (mode, name) in [
        (DurabilityMode::Written, "durability none"),
        (DurabilityMode::Fsynced, "fsync"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_dir(dir.path(), mode).expect("store opens");
        let mut contexts = Contexts::new(256);
        let mut g = c.benchmark_group(format!("group commit ({name})"));
        g.sample_size(if mode == DurabilityMode::Fsynced {
            20
        } else {
            50
        });
        for k in [1usize, 16, 256] {
            g.throughput(Throughput::Elements(k as u64));
            g.bench_function(BenchmarkId::new("ops per commit", k), |b| {
                b.iter_batched(
                    || contexts.ops(k),
                    |mut batch| commit_batch(&store, &mut batch),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
}

/// The writer thread in fsync mode, with the write-ahead log (the default) and without it
/// (each batch a durable redb commit): `k` appends to distinct contexts queued at once,
/// until the last is acknowledged. With the log, the fdatasync of one batch overlaps the
/// redb commit of the one before.
fn writers(c: &mut Criterion) {
    for (logged, name) in [(false, "redb fsync per batch"), (true, "write-ahead log")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = if logged {
            Store::open_dir(dir.path(), DurabilityMode::Fsynced)
        } else {
            Store::open_dir_unlogged(dir.path(), DurabilityMode::Fsynced)
        }
        .expect("store opens");
        let (tx, join) = spawn_writer(store, |r| r.expect("writer exits cleanly")).expect("writer");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut contexts = Contexts::new(256);
        let mut g = c.benchmark_group(format!("writer fsync ({name})"));
        g.sample_size(20);
        for k in [1usize, 16, 256] {
            g.throughput(Throughput::Elements(k as u64));
            g.bench_function(BenchmarkId::new("appends queued at once", k), |b| {
                b.iter_batched(
                    || contexts.ops_reporting(k, &done_tx),
                    |ops| {
                        for op in ops {
                            if tx.blocking_send(WriterMsg::Write(op)).is_err() {
                                panic!("writer stopped");
                            }
                        }
                        for _ in 0..k {
                            done_rx.recv().expect("ack");
                        }
                    },
                    criterion::BatchSize::PerIteration,
                )
            });
        }
        g.finish();
        drop(tx);
        join.join().expect("writer joins");
    }
}

criterion_group!(benches, codec, commits, writers);
criterion_main!(benches);
