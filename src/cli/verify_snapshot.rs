//! `converge-ledger verify-snapshot FILE`: checks a snapshot file offline, with no server.
//!
//! Runs exactly the checks a Load runs before writing anything (`snapshot::decode` and
//! `snapshot::verify`: format, sequences, clocks, ids, limits, every content hash, the
//! root), so a file that passes here is one a ledger accepts, and a changed byte anywhere
//! is reported with the sequence and both hashes. With `--checkpoint` it also shows that
//! the snapshot is the tree a (signed) checkpoint committed to.

use super::commands::Out;
use super::render::{hex_full, json_line};
use super::CliError;
use crate::integrity::checkpoint::{self, origin};
use crate::integrity::{NoteVerifier, SignatureCheck};
use crate::model::Limits;
use crate::snapshot;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// The payload limit applied offline: the largest any server accepts (`serve
/// --max-payload-bytes` is at most 1 GiB), so only a file no server could load fails on size.
const OFFLINE_PAYLOAD_BYTES_MAX: usize = 1 << 30;

#[derive(Args, Debug)]
pub struct VerifySnapshotArgs {
    /// The snapshot file, as written by `converge-ledger snapshot --out`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Also require the snapshot to be exactly the tree of this checkpoint (same context,
    /// size and root), as saved by `verify --save`.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    pub checkpoint: Option<PathBuf>,

    /// With --checkpoint: the verifier key (string or file) whose signature the checkpoint
    /// must carry.
    #[arg(long, value_name = "PUBKEY_FILE_OR_STRING", requires = "checkpoint")]
    pub trusted_key: Option<String>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct SnapshotReport {
    file: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merkle_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

fn check(args: &VerifySnapshotArgs, r: &mut SnapshotReport) -> Result<(), CliError> {
    let trusted = match &args.trusted_key {
        Some(k) => Some(super::verify::load_verifier(k)?),
        None => None,
    };
    let bytes = std::fs::read(&args.file)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", args.file.display())))?;
    let snap = snapshot::decode(&bytes).map_err(|e| CliError::Unverified(e.to_string()))?;
    r.context_id = Some(snap.context_id.clone());
    r.version = Some(snap.version);
    r.created_at_ns = Some(snap.created_at_ns);
    r.entries = Some(snap.entries.len() as u64);
    let root = snapshot::verify(&snap, &Limits::with_payload_max(OFFLINE_PAYLOAD_BYTES_MAX))
        .map_err(|e| CliError::Unverified(e.to_string()))?;
    r.merkle_root = Some(hex_full(&root));
    if let Some(path) = &args.checkpoint {
        r.checkpoint = Some(check_checkpoint(
            path,
            trusted.as_ref(),
            &snap.context_id,
            snap.entries.len() as u64,
            &root,
        )?);
    }
    r.verified = true;
    Ok(())
}

/// The snapshot's (context, size, root) must be the checkpoint's.
fn check_checkpoint(
    path: &std::path::Path,
    trusted: Option<&NoteVerifier>,
    context_id: &str,
    size: u64,
    root: &crate::model::Hash,
) -> Result<String, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))?;
    let (cp, sig) = checkpoint::read(&bytes, trusted)
        .map_err(|e| CliError::Unverified(format!("checkpoint {}: {e}", path.display())))?;
    if cp.origin != origin(context_id) || cp.tree_size != size || cp.root != *root {
        return Err(CliError::Unverified(format!(
            "the snapshot is {:?} at size {size} with root {}, but checkpoint {} is {:?} at size {} with root {}",
            origin(context_id),
            hex_full(root),
            path.display(),
            cp.origin,
            cp.tree_size,
            hex_full(&cp.root)
        )));
    }
    Ok(match sig {
        SignatureCheck::Verified { key } => {
            format!("matches {} (signature verified by {key})", path.display())
        }
        _ => format!("matches {} (signature not checked)", path.display()),
    })
}

pub(super) fn run(args: VerifySnapshotArgs, out: &mut Out) -> Result<(), CliError> {
    let mut r = SnapshotReport {
        file: args.file.display().to_string(),
        verified: false,
        context_id: None,
        version: None,
        created_at_ns: None,
        entries: None,
        merkle_root: None,
        checkpoint: None,
        failure: None,
    };
    let result = check(&args, &mut r);
    if let Err(CliError::Unverified(why)) = &result {
        r.failure = Some(format!("{}: {why}", args.file.display()));
    }
    if args.json {
        if result.is_ok() || r.failure.is_some() {
            out.line(&json_line(&r))?;
        }
    } else if result.is_ok() {
        out.line(&format!(
            "snapshot {} verified: context {:?}, {} entries, root {}, version {}, created_at_ns {}",
            r.file,
            r.context_id.as_deref().unwrap_or_default(),
            r.entries.unwrap_or_default(),
            r.merkle_root.as_deref().unwrap_or_default(),
            r.version.unwrap_or_default(),
            r.created_at_ns.unwrap_or_default()
        ))?;
        if let Some(c) = &r.checkpoint {
            out.line(&format!("  checkpoint: {c}"))?;
        }
    }
    result.map_err(|e| match e {
        CliError::Unverified(why) => {
            CliError::Unverified(format!("snapshot {}: {why}", args.file.display()))
        }
        other => other,
    })
}
