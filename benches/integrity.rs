//! Benchmarks of the pure integrity and snapshot code: the costs every append, proof
//! request, snapshot and load pays. Run: `cargo bench --bench integrity -- --quick`.

use std::hint::black_box;

use bytes::Bytes;
use converge_ledger::integrity::{
    consistency_proof, entry_content_hash, inclusion_proof, leaf_hash, root_at, verify_consistency,
    verify_inclusion, Frontier, MemoryTree, NodePos, NodeSource,
};
use converge_ledger::model::{Entry, Hash, Limits, Metadata};
use converge_ledger::snapshot;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const CTX: &str = "bench-context";

fn entry(seq: u64) -> Entry {
    let mut metadata = Metadata::new();
    metadata.insert("agent".into(), "planner".into());
    metadata.insert("source".into(), format!("run-{}", seq % 17));
    let mut e = Entry {
        id: format!("0190b6a4-0000-7000-8000-{seq:012}"),
        key: "facts".into(),
        payload: Bytes::from(vec![(seq % 251) as u8; 256]),
        sequence: seq,
        appended_at_ns: 1_700_000_000_000_000_000 + seq,
        metadata,
        lamport_clock: seq,
        content_hash: [0; 32],
    };
    e.content_hash = entry_content_hash(CTX, &e);
    e
}

fn entries(n: u64) -> Vec<Entry> {
    (1..=n).map(entry).collect()
}

fn root_of(entries: &[Entry]) -> Hash {
    let mut f = Frontier::empty();
    let mut created = Vec::new();
    for e in entries {
        f.push(leaf_hash(&e.content_hash), &mut created);
        created.clear();
    }
    f.root()
}

/// A tree of any size without storing it: each node's "hash" is derived from its position.
/// Proof generation cost is then assembly plus folding, as with a store that answers fast.
struct Synthetic;

impl NodeSource for Synthetic {
    type Error = std::convert::Infallible;
    fn node(&self, pos: NodePos) -> Result<Hash, Self::Error> {
        let mut h = [0u8; 32];
        h[0] = pos.level;
        h[1..9].copy_from_slice(&pos.index.to_be_bytes());
        Ok(h)
    }
}

fn hashing(c: &mut Criterion) {
    let e = entry(42);
    c.bench_function("content_hash/256B payload", |b| {
        b.iter(|| entry_content_hash(black_box(CTX), black_box(&e)))
    });

    let mut f = Frontier::empty();
    let mut created = Vec::with_capacity(64);
    let leaf = leaf_hash(&e.content_hash);
    c.bench_function("frontier/push + root", |b| {
        b.iter(|| {
            created.clear();
            f.push(black_box(leaf), &mut created);
            black_box(f.root())
        })
    });

    let es = entries(10_000);
    let mut g = c.benchmark_group("root from scratch");
    g.sample_size(20);
    g.bench_function("10k entries (content hash + leaf + frontier)", |b| {
        b.iter(|| {
            let mut f = Frontier::empty();
            let mut created = Vec::with_capacity(64);
            for e in &es {
                f.push(leaf_hash(&entry_content_hash(CTX, e)), &mut created);
                created.clear();
            }
            f.root()
        })
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let mut g = c.benchmark_group("proof generation (synthetic source)");
    for n in [10_000u64, 1_000_000] {
        g.bench_with_input(BenchmarkId::new("inclusion", n), &n, |b, &n| {
            b.iter(|| inclusion_proof(&Synthetic, black_box(n / 3), n))
        });
        g.bench_with_input(BenchmarkId::new("consistency", n), &n, |b, &n| {
            b.iter(|| consistency_proof(&Synthetic, black_box(n / 3), n))
        });
        g.bench_with_input(BenchmarkId::new("root_at", n), &n, |b, &n| {
            b.iter(|| root_at(&Synthetic, black_box(n - 1)))
        });
    }
    g.finish();

    // Verification needs real proofs: one in-memory tree of 1M leaves (64 MB), built once.
    let n = 1_000_000u64;
    let leaves: Vec<Hash> = (0..n)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_be_bytes());
            leaf_hash(&h)
        })
        .collect();
    let tree = MemoryTree::new(leaves);
    let (m, first) = (n / 3, n / 3);
    let root = tree.root();
    let first_root = root_at(&tree, first).unwrap();
    let path = inclusion_proof(&tree, m, n).unwrap();
    let proof = consistency_proof(&tree, first, n).unwrap();
    let leaf = tree.leaves()[m as usize];
    let mut g = c.benchmark_group("proof verification");
    g.bench_function("verify_inclusion/1000000", |b| {
        b.iter(|| verify_inclusion(black_box(&leaf), m, n, black_box(&path), &root).unwrap())
    });
    g.bench_function("verify_consistency/1000000", |b| {
        b.iter(|| verify_consistency(first, n, &first_root, &root, black_box(&proof)).unwrap())
    });
    g.finish();
}

fn snapshots(c: &mut Criterion) {
    let limits = Limits::with_payload_max(4 * 1024 * 1024);
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    for n in [10_000u64, 100_000] {
        let es = entries(n);
        let root = root_of(&es);
        let bytes = snapshot::encode(CTX, 1, &es, &root);
        g.bench_with_input(BenchmarkId::new("encode", n), &es, |b, es| {
            b.iter(|| snapshot::encode(CTX, 1, black_box(es), &root))
        });
        g.bench_with_input(BenchmarkId::new("decode", n), &bytes, |b, bytes| {
            b.iter(|| snapshot::decode(black_box(bytes)).unwrap())
        });
        let decoded = snapshot::decode(&bytes).unwrap();
        g.bench_with_input(BenchmarkId::new("verify", n), &decoded, |b, s| {
            b.iter(|| snapshot::verify(black_box(s), &limits).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, proofs, snapshots);
criterion_main!(benches);
