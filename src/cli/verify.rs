//! `converge-ledger verify`: the auditor. Trusts nothing the server says until it has
//! recomputed it.
//!
//! 1. Ask Root for the latest tree size N and root; check the checkpoint that came with it
//!    (its signature, with `--trusted-key`) says the same N and root.
//! 2. Stream entries 1..=N with Get in pages and replay them (`integrity::replay`):
//!    sequences, clocks and every content hash recomputed from the fields; the root
//!    recomputed incrementally. With `--since`, the root at the earlier checkpoint's size is
//!    compared with that checkpoint on the way.
//! 3. Compare the recomputed root at N with the server's.
//! 4. With `--since`, verify the server's consistency proof from the earlier checkpoint to
//!    N (RFC 9162 §2.1.4.2): the server itself proves it only appended.
//! 5. Only if everything verified, save the new checkpoint (`--save`, by default over the
//!    `--since` file) for the next run.
//!
//! The first failure is reported with the sequence and both values, and the exit status is
//! [`EXIT_VERIFY_FAILED`](super::EXIT_VERIFY_FAILED). Entries appended during the run are
//! beyond N and ignored: the audit is of the tree the server committed to in step 1.

use super::commands::{connect, partial_path, write_all, Out};
use super::render::{hex_full, json_line};
use super::{CliError, CommonArgs};
use crate::api::entry_from_proto;
use crate::client::{LedgerClient, READ_PAGE};
use crate::integrity::checkpoint::{self, origin};
use crate::integrity::proof::verify_consistency;
use crate::integrity::{Checkpoint, Mismatch, NoteVerifier, Replay, SignatureCheck};
use crate::model::Hash;
use crate::proto::GetResponse;
use clap::Args;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// A checkpoint saved by an earlier run (or obtained elsewhere): the server must prove
    /// that today's tree extends it, and the entries must reproduce its root.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    pub since: Option<PathBuf>,

    /// The ledger's verifier key (`<name>+<key id>+<base64 key>`, as `keygen` writes to
    /// FILE.pub), or a file holding it. The server's checkpoint must carry a valid
    /// signature by this key, and so must the --since checkpoint if it is signed.
    #[arg(long, value_name = "PUBKEY_FILE_OR_STRING")]
    pub trusted_key: Option<String>,

    /// Save the verified checkpoint to this file (replaced atomically). Default: the
    /// --since file, so repeated runs roll forward; without either, nothing is saved.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    pub save: Option<PathBuf>,
}

/// The outcome, printed as text or as one JSON object.
#[derive(Debug, Default, Serialize)]
struct Report {
    context_id: String,
    origin: String,
    verified: bool,
    tree_size: u64,
    merkle_root: String,
    entries_checked: u64,
    /// "verified by NAME+ID", "not checked (signed by ...)", or "none".
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistent_with: Option<SinceJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    saved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

#[derive(Debug, Serialize)]
struct SinceJson {
    file: String,
    tree_size: u64,
    merkle_root: String,
}

/// An earlier checkpoint the new tree must extend.
struct Since {
    file: PathBuf,
    checkpoint: Checkpoint,
}

/// A verifier key given as a string, or read from a file.
pub(super) fn load_verifier(arg: &str) -> Result<NoteVerifier, CliError> {
    if let Ok(v) = NoteVerifier::parse(arg) {
        return Ok(v);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        CliError::Usage(format!(
            "--trusted-key {arg:?} is neither a verifier key (<name>+<key id>+<base64 key>) nor a readable file: {e}"
        ))
    })?;
    NoteVerifier::parse(&text)
        .map_err(|e| CliError::Usage(format!("--trusted-key file {arg}: {e}")))
}

/// Reads the `--since` checkpoint. Its origin must be this context's; a signature on it
/// must verify when a key is trusted.
fn load_since(
    file: &Path,
    context_id: &str,
    trusted: Option<&NoteVerifier>,
) -> Result<Since, CliError> {
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", file.display())))?;
    let (cp, check) = checkpoint::read(&bytes, None)
        .map_err(|e| CliError::Local(format!("--since {}: {e}", file.display())))?;
    let want = origin(context_id);
    if cp.origin != want {
        return Err(CliError::Usage(format!(
            "--since {} is a checkpoint of {:?}, not of {want:?}",
            file.display(),
            cp.origin
        )));
    }
    if let (Some(v), SignatureCheck::NotChecked { .. }) = (trusted, &check) {
        checkpoint::read(&bytes, Some(v)).map_err(|e| {
            CliError::Unverified(format!("the --since checkpoint {}: {e}", file.display()))
        })?;
    }
    Ok(Since {
        file: file.to_owned(),
        checkpoint: cp,
    })
}

fn hash32(what: &str, bytes: &[u8]) -> Result<Hash, CliError> {
    bytes
        .try_into()
        .map_err(|_| CliError::Unverified(format!("{what} is {} bytes, not 32", bytes.len())))
}

/// Checks the server's checkpoint against its Root answer (and its signature, when a key is
/// trusted); returns the signature line of the report.
fn check_server_checkpoint(
    bytes: &[u8],
    context_id: &str,
    size: u64,
    root: &Hash,
    trusted: Option<&NoteVerifier>,
) -> Result<String, CliError> {
    if bytes.is_empty() {
        return match trusted {
            Some(v) => Err(CliError::Unverified(format!(
                "--trusted-key {}+{:08x} requires a signed checkpoint, but the server's Root carries none (is it started with --signing-key?)",
                v.name(),
                v.key_id()
            ))),
            None => Ok("none (the server signs no checkpoints)".into()),
        };
    }
    let (cp, check) = checkpoint::read(bytes, trusted)
        .map_err(|e| CliError::Unverified(format!("the server's checkpoint: {e}")))?;
    let expected = Checkpoint::new(context_id, size, *root);
    if cp.origin != expected.origin || cp.tree_size != size || cp.root != *root {
        return Err(CliError::Unverified(format!(
            "the server's checkpoint says origin {:?}, size {}, root {}; its Root answer says origin {:?}, size {size}, root {}",
            cp.origin,
            cp.tree_size,
            hex_full(&cp.root),
            expected.origin,
            hex_full(root)
        )));
    }
    Ok(match check {
        SignatureCheck::Verified { key } => format!("verified by {key}"),
        SignatureCheck::NotChecked { keys } => {
            format!(
                "not checked: no --trusted-key (signed by {})",
                keys.join(", ")
            )
        }
        SignatureCheck::Unsigned => "none (the checkpoint is unsigned)".into(),
    })
}

/// Reads pages of entries 1..=`size` ahead of the replay, so fetching and hashing overlap.
fn spawn_pager(
    client: LedgerClient,
    context_id: String,
    size: u64,
) -> mpsc::Receiver<Result<GetResponse, tonic::Status>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut after = 0u64;
        while after < size {
            let limit = u32::try_from(size - after)
                .unwrap_or(READ_PAGE)
                .min(READ_PAGE);
            let page = client.get_after(context_id.clone(), after, limit).await;
            let next = match &page {
                Ok(p) => p.entries.last().map(|e| e.sequence),
                Err(_) => None,
            };
            if tx.send(page).await.is_err() {
                return;
            }
            match next {
                // A page that does not advance ends the pager; the replay reports it.
                Some(n) if n > after => after = n,
                _ => return,
            }
        }
    });
    rx
}

fn progress_bar(size: u64) -> indicatif::ProgressBar {
    if size == 0 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "verifying {bar:40} {pos}/{len} entries ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Streams and replays entries 1..=`size`, comparing with `since` on the way.
async fn replay_all(
    client: &LedgerClient,
    report: &mut Report,
    replay: &mut Replay,
    size: u64,
    since: Option<&Since>,
) -> Result<(), CliError> {
    let bar = progress_bar(size);
    let mut pages = spawn_pager(client.clone(), report.context_id.clone(), size);
    let check_since = |replay: &Replay| -> Result<(), CliError> {
        match since {
            Some(s) if s.checkpoint.tree_size == replay.size() => replay
                .check_root(
                    &s.checkpoint.root,
                    &format!("the --since checkpoint {}", s.file.display()),
                )
                .map_err(unverified),
            _ => Ok(()),
        }
    };
    check_since(replay)?;
    while replay.size() < size {
        let Some(page) = pages.recv().await else {
            return Err(CliError::Unverified(format!(
                "Get returned no entries after sequence {}, but Root said the tree has {size}",
                replay.size()
            )));
        };
        let page = page?;
        if page.entries.is_empty() {
            return Err(CliError::Unverified(format!(
                "Get returned no entries after sequence {}, but Root said the tree has {size}",
                replay.size()
            )));
        }
        for e in page.entries {
            if e.sequence > size {
                break;
            }
            let sequence = e.sequence;
            let len = e.content_hash.len();
            let entry = entry_from_proto(e)
                .map_err(|_| unverified(Mismatch::MalformedHash { sequence, len }))?;
            replay.push(&entry).map_err(unverified)?;
            report.entries_checked += 1;
            check_since(replay)?;
        }
        bar.set_position(replay.size());
    }
    bar.finish_and_clear();
    Ok(())
}

fn unverified(m: Mismatch) -> CliError {
    CliError::Unverified(m.to_string())
}

/// Verifies the server's consistency proof from the `since` checkpoint to (`size`, `root`).
async fn check_consistency(
    client: &LedgerClient,
    context_id: &str,
    since: &Since,
    size: u64,
    root: &Hash,
) -> Result<(), CliError> {
    let (first, first_root) = (since.checkpoint.tree_size, since.checkpoint.root);
    if first == 0 || first == size {
        // Nothing to prove beyond what the replay checked: the empty tree is a prefix of
        // every tree, and equal sizes were compared root to root.
        return Ok(());
    }
    let resp = client.prove_consistency(context_id, first, size).await?;
    let proof = resp
        .proof
        .iter()
        .enumerate()
        .map(|(i, h)| hash32(&format!("consistency proof hash {i}"), h))
        .collect::<Result<Vec<Hash>, CliError>>()?;
    verify_consistency(first, size, &first_root, root, &proof).map_err(|e| {
        CliError::Unverified(format!(
            "the consistency proof from size {first} ({}) to size {size} does not verify: {e}",
            since.file.display()
        ))
    })?;
    for (what, got, want) in [
        ("first_root", &resp.first_root, &first_root),
        ("second_root", &resp.second_root, root),
    ] {
        if got[..] != want[..] {
            return Err(CliError::Unverified(format!(
                "ProveConsistency({first}, {size}) answered {what} {}, expected {}",
                hex_full(got),
                hex_full(want)
            )));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through `path.partial` and a rename: never half-written.
async fn save_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let partial = partial_path(path);
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| CliError::Local(format!("cannot create {}: {e}", partial.display())))?;
    write_all(file, &partial, bytes).await?;
    tokio::fs::rename(&partial, path).await.map_err(|e| {
        CliError::Local(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            path.display()
        ))
    })
}

/// Everything but printing; fills `report` as it goes, so a failure still reports how far
/// the audit got.
async fn audit(args: &VerifyArgs, report: &mut Report) -> Result<(), CliError> {
    let ctx = args.common.context.as_str();
    let trusted = args.trusted_key.as_deref().map(load_verifier).transpose()?;
    let since = args
        .since
        .as_deref()
        .map(|f| load_since(f, ctx, trusted.as_ref()))
        .transpose()?;
    let client = connect(&args.common).await?;

    let latest = client.root(ctx, 0).await?;
    let size = latest.tree_size;
    let root = hash32("the server's root", &latest.merkle_root)?;
    report.tree_size = size;
    report.merkle_root = hex_full(&root);
    report.signature =
        check_server_checkpoint(&latest.checkpoint, ctx, size, &root, trusted.as_ref())?;
    if let Some(s) = &since {
        report.consistent_with = Some(SinceJson {
            file: s.file.display().to_string(),
            tree_size: s.checkpoint.tree_size,
            merkle_root: hex_full(&s.checkpoint.root),
        });
        if s.checkpoint.tree_size > size {
            return Err(CliError::Unverified(format!(
                "the server's tree has {size} entries, fewer than the {} of the --since checkpoint {}: history was truncated or rewritten",
                s.checkpoint.tree_size,
                s.file.display()
            )));
        }
    }

    let mut replay = Replay::new(ctx);
    replay_all(&client, report, &mut replay, size, since.as_ref()).await?;
    replay
        .check_root(&root, "the server's Root")
        .map_err(unverified)?;
    if let Some(s) = &since {
        check_consistency(&client, ctx, s, size, &root).await?;
    }

    if let Some(path) = args.save.as_ref().or(args.since.as_ref()) {
        let bytes = if latest.checkpoint.is_empty() {
            Checkpoint::new(ctx, size, root).body().into_bytes()
        } else {
            latest.checkpoint.to_vec()
        };
        save_atomically(path, &bytes).await?;
        report.saved = Some(path.display().to_string());
    }
    report.verified = true;
    Ok(())
}

fn text_report(r: &Report) -> Vec<String> {
    let mut lines = vec![
        format!("verified {} at tree size {}", r.origin, r.tree_size),
        format!(
            "  entries:     {} replayed: sequences, clocks and content hashes recomputed",
            r.entries_checked
        ),
        format!("  root:        {} equals the server's Root", r.merkle_root),
        format!("  signature:   {}", r.signature),
    ];
    if let Some(s) = &r.consistent_with {
        lines.push(format!(
            "  consistency: extends {} (size {}, root {}): proof verified",
            s.file, s.tree_size, s.merkle_root
        ));
    }
    if let Some(path) = &r.saved {
        lines.push(format!("  saved:       {path}"));
    }
    lines
}

pub(super) async fn run(args: VerifyArgs, out: &mut Out) -> Result<(), CliError> {
    let mut report = Report {
        context_id: args.common.context.clone(),
        origin: origin(&args.common.context),
        ..Default::default()
    };
    let result = audit(&args, &mut report).await;
    if let Err(CliError::Unverified(why)) = &result {
        report.failure = Some(why.clone());
    }
    if args.common.json {
        if result.is_ok() || report.failure.is_some() {
            out.line(&json_line(&report))?;
        }
    } else if result.is_ok() {
        for line in text_report(&report) {
            out.line(&line)?;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::NoteSigner;

    #[test]
    fn trusted_key_from_a_string_or_a_file() {
        let v = NoteSigner::from_seed("k", &[3; 32]).unwrap().verifier();
        assert_eq!(load_verifier(&v.encode()).unwrap(), v);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pub");
        std::fs::write(&f, format!("{}\n", v.encode())).unwrap();
        assert_eq!(load_verifier(f.to_str().unwrap()).unwrap(), v);
        let e = load_verifier("nonsense").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("neither a verifier key"), "{e}");
    }

    #[test]
    fn since_must_be_this_contexts_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cp");
        std::fs::write(&f, Checkpoint::new("other", 3, [1; 32]).body()).unwrap();
        let e = load_since(&f, "mine", None).err().unwrap();
        assert!(
            e.to_string().contains("not of \"converge-ledger/mine\""),
            "{e}"
        );
        let s = load_since(&f, "other", None).unwrap();
        assert_eq!(s.checkpoint.tree_size, 3);

        // Signed by one key, checked with another: a verification failure.
        let signer = NoteSigner::from_seed("k", &[3; 32]).unwrap();
        std::fs::write(&f, Checkpoint::new("c", 3, [1; 32]).sign(&signer)).unwrap();
        assert!(load_since(&f, "c", Some(&signer.verifier())).is_ok());
        let other = NoteSigner::from_seed("k", &[4; 32]).unwrap().verifier();
        let e = load_since(&f, "c", Some(&other)).err().unwrap();
        assert_eq!(e.exit_code(), super::super::EXIT_VERIFY_FAILED);
    }

    #[test]
    fn server_checkpoint_must_match_the_root_answer() {
        let signer = NoteSigner::from_seed("k", &[3; 32]).unwrap();
        let note = Checkpoint::new("c", 5, [2; 32]).sign(&signer);
        let ok =
            check_server_checkpoint(note.as_bytes(), "c", 5, &[2; 32], Some(&signer.verifier()))
                .unwrap();
        assert!(ok.starts_with("verified by k+"), "{ok}");
        let e = check_server_checkpoint(note.as_bytes(), "c", 6, &[2; 32], None).unwrap_err();
        assert!(e.to_string().contains("size 5"), "{e}");
        let e =
            check_server_checkpoint(b"", "c", 5, &[2; 32], Some(&signer.verifier())).unwrap_err();
        assert!(e.to_string().contains("--signing-key"), "{e}");
        let none = check_server_checkpoint(b"", "c", 5, &[2; 32], None).unwrap();
        assert!(none.starts_with("none"), "{none}");
    }
}
