//! Tails a context and verifies it while tailing, trusting nothing but its own arithmetic.
//!
//! Every `WatchEvent` carries the context's RFC 9162 Merkle root at tree size = the entry's
//! sequence. The observer keeps its own frontier of the tree (one hash per perfect subtree,
//! at most 64), adds each entry's leaf hash and checks that its root equals the server's.
//! A server that reorders, drops, inserts or rewrites an entry cannot keep the roots equal.
//! This is done here with nothing but `sha2`, to show a client can verify on its own:
//!
//! - leaf = SHA-256(0x00 ‖ content_hash), node = SHA-256(0x01 ‖ left ‖ right)
//! - root of n leaves: fold the frontier from the right; the empty tree is SHA-256("").
//!
//! The content hash itself (SHA-256 over the entry's canonical bytes, docs/INTEGRITY.md) is
//! recomputed from each entry's fields ([`check_content_hash`]), so a changed payload, key,
//! clock or metadata is caught at that entry, not only by a later root.
//!
//! With `--from N > 0` the observer first reads entries 1..=N with Get to rebuild the
//! frontier, and checks that prefix with the Root RPC when the server implements it.
//!
//! Run it against a local server:
//!
//! ```text
//! cargo run --release -- serve                           # in another terminal
//! cargo run --example observer -- --context demo         # tails from the beginning
//! cargo run --example engine -- --context demo --steps 5 # in a third terminal
//! ```
//!
//! It exits with status 1 on the first mismatch or sequence gap, 0 on Ctrl-C or when the
//! server ends the stream.

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use converge_ledger::cli::{render, DEFAULT_SERVER};
use converge_ledger::client::{status_line, LedgerClient, READ_PAGE};
use converge_ledger::integrity::canonical::entry_content_hash;
use converge_ledger::proto::{Entry, GetRequest, WatchEvent, WatchRequest};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(about = "Tails a context and verifies every Merkle root on its own")]
struct Args {
    /// The ledger's gRPC endpoint.
    #[arg(long, value_name = "URL", env = "LEDGER_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The context to watch.
    #[arg(long, value_name = "ID")]
    context: String,
    /// Watch entries after sequence N (0 = from the beginning); 1..=N are read first.
    #[arg(long, value_name = "N", default_value_t = 0)]
    from: u64,
}

type Hash = [u8; 32];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = LedgerClient::connect(&args.server).await?;
    let mut tree = Frontier::default();

    // 1. Rebuild the tree of the entries before --from.
    if args.from > 0 {
        bootstrap(&client, &args.context, args.from, &mut tree).await?;
        let root = tree.root();
        match client.root(args.context.clone(), args.from).await {
            Ok(r) if r.merkle_root[..] == root[..] => {
                println!("prefix 1..={} verified against Root", args.from)
            }
            Ok(r) => bail!(
                "prefix 1..={}: our root {} != server's Root {}",
                args.from,
                hex::encode(root),
                hex::encode(&r.merkle_root)
            ),
            Err(s) if s.code() == tonic::Code::Unimplemented => println!(
                "prefix 1..={} rebuilt from Get (Root RPC not implemented; checked by the next event)",
                args.from
            ),
            Err(s) => return Err(status(s)),
        }
    }

    // 2. Tail and verify.
    let mut stream = client
        .watch(WatchRequest {
            context_id: args.context.clone(),
            key: String::new(), // every key: the tree needs every leaf
            from_sequence: args.from,
            signal_caught_up: true,
        })
        .await
        .map_err(status)?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut unverified = 0u64;
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => break,
            message = stream.message() => message.map_err(status)?,
        };
        let Some(event) = event else {
            println!("-- the server ended the stream");
            break;
        };
        let Some(entry) = &event.entry else {
            if event.caught_up {
                println!("-- caught up at #{}; now live", tree.size);
            }
            continue;
        };
        let verdict = verify_event(&mut tree, &args.context, &event)
            .map_err(|e| anyhow!("#{}: {e}", entry.sequence))?;
        if verdict == Verdict::NoRoot {
            unverified += 1;
        }
        println!(
            "{} root={} {}",
            render::entry_text(entry),
            render::hex_short(&event.merkle_root),
            verdict.word()
        );
    }
    println!(
        "observed up to #{}: root {} ({} events carried no root to check)",
        tree.size,
        hex::encode(tree.root()),
        unverified
    );
    Ok(())
}

/// Reads entries 1..=`upto` and adds their leaves to `tree`.
async fn bootstrap(
    client: &LedgerClient,
    context: &str,
    upto: u64,
    tree: &mut Frontier,
) -> anyhow::Result<()> {
    while tree.size < upto {
        let page = client
            .get(GetRequest {
                context_id: context.to_owned(),
                key: String::new(),
                after_sequence: tree.size,
                limit: READ_PAGE.min(u32::try_from(upto - tree.size).unwrap_or(READ_PAGE)),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        if page.latest_sequence < upto {
            bail!(
                "--from {upto} is beyond the context's latest sequence {}",
                page.latest_sequence
            );
        }
        if page.entries.is_empty() {
            bail!("Get after #{} returned nothing below #{upto}", tree.size);
        }
        for e in page.entries.iter().take_while(|e| e.sequence <= upto) {
            add_entry(tree, context, e)?;
        }
    }
    Ok(())
}

/// What checking one event concluded.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Our root equals the event's.
    Verified,
    /// The server sent no root (an older server): the leaf is added, nothing is compared.
    NoRoot,
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::NoRoot => "unverified(no root)",
        }
    }
}

/// Adds the event's entry to `tree` and compares the roots. An error means the server's
/// history is not the one it showed before: a gap, a bad hash or a root mismatch.
fn verify_event(tree: &mut Frontier, context: &str, event: &WatchEvent) -> Result<Verdict, String> {
    let entry = event.entry.as_ref().ok_or("event without an entry")?;
    add_entry(tree, context, entry).map_err(|e| e.to_string())?;
    if event.merkle_root.is_empty() {
        return Ok(Verdict::NoRoot);
    }
    let ours = tree.root();
    if event.merkle_root[..] != ours[..] {
        return Err(format!(
            "ROOT MISMATCH at tree size {}: ours {}, server's {}",
            tree.size,
            hex::encode(ours),
            hex::encode(&event.merkle_root)
        ));
    }
    Ok(Verdict::Verified)
}

/// Appends one entry's leaf, after checking it is the next sequence and its content hash.
fn add_entry(tree: &mut Frontier, context: &str, entry: &Entry) -> anyhow::Result<()> {
    if entry.sequence != tree.size + 1 {
        bail!(
            "expected sequence {}, got {} (a gap or a reordering)",
            tree.size + 1,
            entry.sequence
        );
    }
    let content_hash = check_content_hash(context, entry)?;
    tree.push(leaf_hash(&content_hash));
    Ok(())
}

/// The entry's content hash, recomputed from its fields and checked against the one sent.
///
/// VERIFY-CONTENT: the hash is SHA-256 over the entry's canonical bytes in `context`
/// (docs/INTEGRITY.md), recomputed with
/// `converge_ledger::integrity::canonical::entry_content_hash`; an entry whose fields do not
/// hash to the hash it carries is rejected. So the observer proves that each payload is the
/// one committed to, not only the order and immutability of the hashes.
fn check_content_hash(context: &str, entry: &Entry) -> anyhow::Result<Hash> {
    let sent: Hash = entry.content_hash[..].try_into().with_context(|| {
        format!(
            "content_hash of #{} is {} bytes, not 32",
            entry.sequence,
            entry.content_hash.len()
        )
    })?;
    let model = converge_ledger::api::entry_from_proto(entry.clone())
        .map_err(|e| anyhow!("#{}: {e}", entry.sequence))?;
    let recomputed = entry_content_hash(context, &model);
    if recomputed != sent {
        bail!(
            "CONTENT HASH MISMATCH at #{}: its fields hash to {}, the server sent {}",
            entry.sequence,
            hex::encode(recomputed),
            hex::encode(sent)
        );
    }
    Ok(sent)
}

/// RFC 9162 §2.1.1: the hash of a leaf.
fn leaf_hash(content_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(content_hash);
    h.finalize().into()
}

/// RFC 9162 §2.1.1: the hash of an interior node.
fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The right edge of a Merkle tree: the roots of its perfect subtrees, largest (leftmost)
/// first, one per set bit of `size`. Enough to add leaves and compute the root.
#[derive(Debug, Default)]
struct Frontier {
    size: u64,
    /// (height, hash); heights strictly decrease.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    fn push(&mut self, leaf: Hash) {
        let (mut height, mut node) = (0, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != height {
                break;
            }
            self.nodes.pop();
            node = node_hash(&left, &node);
            height += 1;
        }
        self.nodes.push((height, node));
        self.size += 1;
    }

    fn root(&self) -> Hash {
        match self.nodes.split_last() {
            None => Sha256::digest([]).into(),
            Some((&(_, last), rest)) => rest
                .iter()
                .rev()
                .fold(last, |acc, (_, left)| node_hash(left, &acc)),
        }
    }
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!(status_line(&s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// RFC 9162 §2.1.1 MTH, written the way the RFC defines it.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2; // largest power of two < n
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn content(i: u64) -> Hash {
        Sha256::digest(i.to_be_bytes()).into()
    }

    #[test]
    fn frontier_root_matches_the_rfc_definition() {
        let mut tree = Frontier::default();
        let mut leaves = Vec::new();
        assert_eq!(tree.root(), mth(&leaves));
        assert_eq!(
            hex::encode(tree.root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for i in 0..70 {
            let leaf = leaf_hash(&content(i));
            tree.push(leaf);
            leaves.push(leaf);
            assert_eq!(tree.root(), mth(&leaves), "size {}", leaves.len());
            assert_eq!(tree.nodes.len() as u32, tree.size.count_ones());
        }
    }

    const CTX: &str = "observed";

    /// Entry `seq` of context `CTX`, carrying its real content hash.
    fn entry(seq: u64) -> Entry {
        let mut e = Entry {
            sequence: seq,
            key: "facts".into(),
            payload: Bytes::from(format!("payload {seq}")),
            lamport_clock: seq,
            content_hash: Bytes::from_static(&[0; 32]),
            ..Default::default()
        };
        let model = converge_ledger::api::entry_from_proto(e.clone()).unwrap();
        e.content_hash = Bytes::copy_from_slice(&entry_content_hash(CTX, &model));
        e
    }

    fn entry_hash(seq: u64) -> Hash {
        entry(seq).content_hash[..].try_into().unwrap()
    }

    fn event(seq: u64, root: &[u8]) -> WatchEvent {
        WatchEvent {
            entry: Some(entry(seq)),
            merkle_root: Bytes::copy_from_slice(root),
            caught_up: false,
        }
    }

    #[test]
    fn verify_event_accepts_the_right_root_and_rejects_others() {
        let mut ours = Frontier::default();
        let mut reference = Frontier::default();
        for seq in 1..=5 {
            reference.push(leaf_hash(&entry_hash(seq)));
            let v = verify_event(&mut ours, CTX, &event(seq, &reference.root())).unwrap();
            assert_eq!(v, Verdict::Verified);
        }
        assert_eq!(
            verify_event(&mut ours, CTX, &event(6, &[])).unwrap(),
            Verdict::NoRoot
        );

        let e = verify_event(&mut ours, CTX, &event(7, &[0u8; 32])).unwrap_err();
        assert!(e.contains("ROOT MISMATCH at tree size 7"), "{e}");

        let mut fresh = Frontier::default();
        let e = verify_event(&mut fresh, CTX, &event(2, &[])).unwrap_err();
        assert!(e.contains("expected sequence 1, got 2"), "{e}");

        let mut bad = event(1, &[]);
        bad.entry.as_mut().unwrap().content_hash = Bytes::from_static(b"short");
        let e = verify_event(&mut fresh, CTX, &bad).unwrap_err();
        assert!(e.contains("5 bytes, not 32"), "{e}");
    }

    #[test]
    fn verify_event_recomputes_the_content_hash() {
        let mut tree = Frontier::default();
        let mut changed = event(1, &[]);
        changed.entry.as_mut().unwrap().payload = Bytes::from_static(b"not what was hashed");
        let e = verify_event(&mut tree, CTX, &changed).unwrap_err();
        assert!(e.contains("CONTENT HASH MISMATCH at #1"), "{e}");
        assert!(e.contains(&hex::encode(entry_hash(1))), "{e}");
        // The context id is part of the hash: the same entry does not verify elsewhere.
        let e = verify_event(&mut tree, "another", &event(1, &[])).unwrap_err();
        assert!(e.contains("CONTENT HASH MISMATCH"), "{e}");
        assert_eq!(tree.size, 0, "nothing was added");
    }
}
