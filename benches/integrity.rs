//! Benchmarks of the pure integrity and snapshot code: the costs every append, proof
//! request, snapshot and load pays. Run: `cargo bench --bench integrity`.
//! Proofs read from a real redb store are in `benches/proofs.rs`.
//!
//! "root from scratch" hashes everything (content hashes included) and is compared in
//! BENCHMARKS.md with "sha256 alone": the same messages, pre-built, through SHA-256 and
//! nothing else — the floor any implementation of this tree pays.

use std::hint::black_box;

use converge_ledger::integrity::{
    canonical_bytes, checkpoint, consistency_proof, entry_content_hash, inclusion_proof, leaf_hash,
    root_at, verify_consistency, verify_inclusion, Checkpoint, Frontier, MemoryTree, NodePos,
    NodeSource, NoteSigner,
};
use converge_ledger::model::{Entry, Hash, Limits};
use converge_ledger::snapshot;
mod support;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};

const CTX: &str = "bench-context";

fn entry(seq: u64) -> Entry {
    support::bench_entry(CTX, "facts", seq, true)
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
    let bytes = canonical_bytes(
        CTX,
        e.sequence,
        &e.key,
        &e.payload,
        e.appended_at_ns,
        e.lamport_clock,
        &e.metadata,
    );
    c.bench_function("content_hash/sha256 alone of its canonical bytes", |b| {
        b.iter(|| Sha256::digest(black_box(&bytes)))
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

    let mut g = c.benchmark_group("append (incremental root)");
    g.bench_function("content hash + leaf + push + root", |b| {
        let mut f = Frontier::empty();
        let mut created = Vec::with_capacity(64);
        b.iter(|| {
            created.clear();
            f.push(
                leaf_hash(&entry_content_hash(CTX, black_box(&e))),
                &mut created,
            );
            black_box(f.root())
        })
    });
    g.finish();

    for n in [10_000u64, 1_000_000] {
        let es = entries(n);
        let mut g = c.benchmark_group("root from scratch");
        g.sample_size(10);
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(
            BenchmarkId::new("content hash + leaf + frontier", n),
            &es,
            |b, es| b.iter(|| root_from_scratch(es)),
        );
        // The floor: exactly the messages the root hashes, already built, through SHA-256.
        let msgs = Messages::of(&es);
        g.bench_with_input(
            BenchmarkId::new("sha256 alone, same messages", n),
            &msgs,
            |b, m| b.iter(|| m.hash_all()),
        );
        g.finish();
        eprintln!(
            "root over {n} entries hashes {} messages, {} bytes, {} SHA-256 blocks (64 B)",
            msgs.count(),
            msgs.bytes(),
            msgs.blocks()
        );
    }
}

/// The root over `es`, hashing everything: content hashes, leaves, interior nodes.
fn root_from_scratch(es: &[Entry]) -> Hash {
    let mut f = Frontier::empty();
    let mut created = Vec::with_capacity(64);
    for e in es {
        f.push(leaf_hash(&entry_content_hash(CTX, e)), &mut created);
        created.clear();
    }
    f.root()
}

/// Every message SHA-256 sees while computing the root from scratch: per entry its canonical
/// bytes and its 33-byte leaf input; per interior node a 65-byte input.
struct Messages {
    canonical: Vec<Vec<u8>>,
    leaves: usize,
    nodes: usize,
}

impl Messages {
    fn of(es: &[Entry]) -> Self {
        let canonical = es
            .iter()
            .map(|e| {
                canonical_bytes(
                    CTX,
                    e.sequence,
                    &e.key,
                    &e.payload,
                    e.appended_at_ns,
                    e.lamport_clock,
                    &e.metadata,
                )
            })
            .collect();
        let n = es.len();
        // n - popcount(n) nodes complete subtrees; popcount(n) - 1 more fold the frontier.
        let nodes = n.saturating_sub(1);
        Messages {
            canonical,
            leaves: n,
            nodes,
        }
    }

    fn count(&self) -> usize {
        self.canonical.len() + self.leaves + self.nodes
    }

    fn bytes(&self) -> usize {
        self.canonical.iter().map(Vec::len).sum::<usize>() + 33 * self.leaves + 65 * self.nodes
    }

    /// SHA-256 compresses ceil((len + 9) / 64) blocks per message (padding and length).
    fn blocks(&self) -> usize {
        let b = |len: usize| (len + 9).div_ceil(64);
        self.canonical.iter().map(|m| b(m.len())).sum::<usize>()
            + b(33) * self.leaves
            + b(65) * self.nodes
    }

    fn hash_all(&self) -> Hash {
        let mut acc = [0u8; 32];
        for m in &self.canonical {
            acc = Sha256::digest(m).into();
        }
        let leaf = [0u8; 33];
        for _ in 0..self.leaves {
            acc = Sha256::digest(black_box(&leaf)).into();
        }
        let node = [0u8; 65];
        for _ in 0..self.nodes {
            acc = Sha256::digest(black_box(&node)).into();
        }
        acc
    }
}

fn checkpoints(c: &mut Criterion) {
    let signer = NoteSigner::from_seed("bench", &[5; 32]).unwrap();
    let cp = Checkpoint::new(CTX, 1_000_000, [7; 32]);
    let note = cp.sign(&signer);
    let verifier = signer.verifier();
    let mut g = c.benchmark_group("checkpoint");
    g.bench_function("sign (Root with --signing-key)", |b| {
        b.iter(|| black_box(&cp).sign(&signer))
    });
    g.bench_function("read + verify signature", |b| {
        b.iter(|| checkpoint::read(black_box(note.as_bytes()), Some(&verifier)).unwrap())
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

criterion_group!(benches, hashing, proofs, checkpoints, snapshots);
criterion_main!(benches);
