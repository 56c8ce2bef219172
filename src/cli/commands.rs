//! The client commands themselves: local checks and input first (usage errors never need
//! the network), then connect, call, print.

use super::render::{
    self, entry_text, hex_or_dash, json_line, AppendJson, CaughtUpJson, EntryJson, GetSummaryJson,
    LoadJson, SnapshotJson, WatchJson,
};
use super::{
    AppendArgs, CliError, ClientCommand, CommonArgs, GetArgs, LoadArgs, SnapshotArgs, WatchArgs,
};
use crate::client::{next_page_start, LedgerClient, Nodes, READ_PAGE};
use crate::proto::{AppendRequest, GetRequest, WatchRequest};
use bytes::Bytes;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

pub(super) async fn run(cmd: ClientCommand) -> Result<(), CliError> {
    let mut out = Out::stdout();
    match cmd {
        ClientCommand::Append(a) => append(a, &mut out).await,
        ClientCommand::Get(a) => get(a, &mut out).await,
        ClientCommand::Watch(a) => watch(a, &mut out).await,
        ClientCommand::Snapshot(a) => snapshot(a, &mut out).await,
        ClientCommand::Load(a) => load(a, &mut out).await,
        ClientCommand::Status(a) => super::status::run(a, &mut out).await,
    }
}

/// Stdout, flushed after every line so `watch` output reaches a pipe at once. A closed
/// pipe (`| head`) ends the command quietly instead of panicking.
pub(super) struct Out {
    w: std::io::Stdout,
}

impl Out {
    pub(super) fn stdout() -> Self {
        Out {
            w: std::io::stdout(),
        }
    }

    pub(super) fn line(&mut self, text: &str) -> Result<(), CliError> {
        let mut w = self.w.lock();
        writeln!(w, "{text}")
            .and_then(|()| w.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => CliError::StdoutClosed,
                _ => CliError::Local(format!("cannot write to stdout: {e}")),
            })
    }
}

/// A client of the first of `--server`'s nodes that answers.
pub(super) async fn connect(common: &CommonArgs) -> Result<LedgerClient, CliError> {
    Ok(Nodes::new(&common.server)?.client().await?)
}

async fn append(args: AppendArgs, out: &mut Out) -> Result<(), CliError> {
    let metadata = metadata_map(args.meta)?;
    let payload = read_payload(args.payload, args.payload_file.as_deref()).await?;
    let nodes = Nodes::new(&args.common.server)?;
    let ack = nodes
        .append(AppendRequest {
            context_id: args.common.context.clone(),
            key: args.key,
            payload,
            metadata,
            received_lamport_clock: args.received_lamport_clock,
            idempotency_key: args.idempotency_key.unwrap_or_default(),
        })
        .await?;
    let entry = ack
        .entry
        .ok_or_else(|| tonic::Status::internal("the append response carries no entry"))?;
    let durability = render::durability_name(ack.durability);
    if args.common.json {
        out.line(&json_line(&AppendJson {
            entry: EntryJson::new(&entry),
            duplicate: ack.duplicate,
            durability,
        }))
    } else {
        out.line(&format!(
            "appended #{} {} clock={} id={} hash={} durability={} duplicate={}",
            entry.sequence,
            render::text_token(&entry.key),
            entry.lamport_clock,
            render::text_token(&entry.id),
            hex_or_dash(&entry.content_hash),
            durability,
            ack.duplicate
        ))
    }
}

/// The `--meta` pairs as the request's map; a key given twice is a usage error rather than
/// a silent overwrite.
pub(super) fn metadata_map(
    pairs: Vec<(String, String)>,
) -> Result<HashMap<String, String>, CliError> {
    let mut map = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if map.contains_key(&k) {
            return Err(CliError::Usage(format!(
                "--meta key {k:?} given more than once"
            )));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// The payload from `--payload`, `--payload-file` (`-` = stdin) or stdin.
async fn read_payload(text: Option<String>, file: Option<&Path>) -> Result<Bytes, CliError> {
    if let Some(text) = text {
        return Ok(Bytes::from(text));
    }
    match file {
        Some(path) if path != Path::new("-") => tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display()))),
        _ => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading the payload from stdin until end of file (Ctrl-D); \
                     use --payload or --payload-file to pass it directly"
                );
            }
            let mut buf = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut buf)
                .await
                .map_err(|e| CliError::Local(format!("cannot read stdin: {e}")))?;
            Ok(Bytes::from(buf))
        }
    }
}

async fn get(args: GetArgs, out: &mut Out) -> Result<(), CliError> {
    let client = connect(&args.common).await?;
    let json = args.common.json;
    let mut after = args.after;
    let mut printed: u64 = 0;
    loop {
        let want = match args.limit {
            0 => READ_PAGE,
            n => u32::try_from(n - printed)
                .unwrap_or(READ_PAGE)
                .min(READ_PAGE),
        };
        let page = client
            .get(GetRequest {
                context_id: args.common.context.clone(),
                key: args.key.clone().unwrap_or_default(),
                after_sequence: after,
                limit: want,
                ..Default::default()
            })
            .await?;
        let next = next_page_start(after, &page)?;
        for e in page.entries.iter().take(want as usize) {
            out.line(&if json {
                json_line(&EntryJson::new(e))
            } else {
                entry_text(e)
            })?;
            printed += 1;
        }
        let done = args.limit != 0 && printed >= args.limit;
        match next {
            Some(n) if !done => after = n,
            _ => {
                return out.line(&if json {
                    json_line(&GetSummaryJson {
                        count: printed,
                        latest_sequence: page.latest_sequence,
                        merkle_root: render::hex_full(&page.merkle_root),
                    })
                } else {
                    format!(
                        "latest_sequence={} merkle_root={} ({printed} entries shown)",
                        page.latest_sequence,
                        hex_or_dash(&page.merkle_root)
                    )
                });
            }
        }
    }
}

async fn watch(args: WatchArgs, out: &mut Out) -> Result<(), CliError> {
    let nodes = Nodes::new(&args.common.server)?;
    let json = args.common.json;
    // Resumes on the next node (or the same one, restarted) from the last entry printed,
    // recomputing every root: see `ResumableWatch`.
    let mut stream = nodes.watch(
        WatchRequest {
            context_id: args.common.context.clone(),
            key: args.key.clone().unwrap_or_default(),
            from_sequence: args.from,
            signal_caught_up: true,
        },
        true,
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let last = stream.last_sequence();
        let event = tokio::select! {
            signal = &mut ctrl_c => {
                signal.map_err(|e| CliError::Local(format!("cannot listen for Ctrl-C: {e}")))?;
                if !json {
                    eprintln!("-- stopped (Ctrl-C) after #{last}");
                }
                return Ok(());
            }
            message = stream.next() => message?,
        };
        let Some(event) = event else {
            if !json {
                eprintln!("-- the server ended the stream after #{last}");
            }
            return Ok(());
        };
        if let Some(e) = &event.entry {
            out.line(&if json {
                json_line(&WatchJson {
                    entry: EntryJson::new(e),
                    merkle_root: render::hex_full(&event.merkle_root),
                })
            } else {
                format!(
                    "{} root={}",
                    entry_text(e),
                    render::hex_short(&event.merkle_root)
                )
            })?;
        } else if event.caught_up {
            if json {
                out.line(&json_line(&CaughtUpJson { caught_up: true }))?;
            } else {
                eprintln!("-- caught up at #{last}; waiting for new entries (Ctrl-C to stop)");
            }
        }
    }
}

async fn snapshot(args: SnapshotArgs, out: &mut Out) -> Result<(), CliError> {
    // Create the temporary file first: a bad path fails before the server does any work.
    let partial = partial_path(&args.out);
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| CliError::Local(format!("cannot create {}: {e}", partial.display())))?;
    let result = async {
        let client = connect(&args.common).await?;
        let snap = client.snapshot(args.common.context.clone()).await?;
        write_all(file, &partial, &snap.snapshot).await?;
        tokio::fs::rename(&partial, &args.out).await.map_err(|e| {
            CliError::Local(format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                args.out.display()
            ))
        })?;
        Ok(snap)
    }
    .await;
    let snap = match result {
        Ok(snap) => snap,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    let meta = snap.metadata.unwrap_or_default();
    if args.common.json {
        out.line(&json_line(&SnapshotJson {
            context_id: &args.common.context,
            file: args.out.display().to_string(),
            bytes: snap.snapshot.len() as u64,
            sequence: snap.sequence,
            entry_count: meta.entry_count,
            version: meta.version,
            created_at_ns: meta.created_at_ns,
            merkle_root: render::hex_full(&meta.merkle_root),
        }))
    } else {
        out.line(&format!(
            "snapshot of {} -> {}: sequence={} entries={} version={} bytes={} merkle_root={}",
            render::text_token(&args.common.context),
            args.out.display(),
            snap.sequence,
            meta.entry_count,
            meta.version,
            snap.snapshot.len(),
            hex_or_dash(&meta.merkle_root)
        ))
    }
}

pub(super) async fn write_all(
    mut file: tokio::fs::File,
    path: &Path,
    bytes: &[u8],
) -> Result<(), CliError> {
    use tokio::io::AsyncWriteExt;
    let err = |e: std::io::Error| CliError::Local(format!("cannot write {}: {e}", path.display()));
    file.write_all(bytes).await.map_err(err)?;
    file.sync_all().await.map_err(err)
}

/// `FILE` → `FILE.partial`, next to it so the final rename stays on one file system.
pub(super) fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

async fn load(args: LoadArgs, out: &mut Out) -> Result<(), CliError> {
    let bytes = tokio::fs::read(&args.input)
        .await
        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", args.input.display())))?;
    let client = connect(&args.common).await?;
    let loaded = client
        .load(
            args.common.context.clone(),
            Bytes::from(bytes),
            args.fail_if_exists,
        )
        .await?;
    if args.common.json {
        out.line(&json_line(&LoadJson {
            context_id: &args.common.context,
            file: args.input.display().to_string(),
            entries_restored: loaded.entries_restored,
            latest_sequence: loaded.latest_sequence,
            merkle_root: render::hex_full(&loaded.merkle_root),
        }))
    } else {
        out.line(&format!(
            "loaded {} <- {}: entries_restored={} latest_sequence={} merkle_root={}",
            render::text_token(&args.common.context),
            args.input.display(),
            loaded.entries_restored,
            loaded.latest_sequence,
            hex_or_dash(&loaded.merkle_root)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_meta_keys_are_usage_errors() {
        let m = metadata_map(vec![("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
        assert_eq!(m.len(), 2);
        let e = metadata_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "--meta key \"a\" given more than once");
    }

    #[test]
    fn partial_path_is_a_sibling() {
        assert_eq!(
            partial_path(Path::new("dir/s.cbor")),
            PathBuf::from("dir/s.cbor.partial")
        );
    }

    #[tokio::test]
    async fn payload_sources() {
        let p = read_payload(Some("héllo".into()), None).await.unwrap();
        assert_eq!(&p[..], "héllo".as_bytes());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.bin");
        std::fs::write(&f, [0u8, 0xff, 7]).unwrap();
        let p = read_payload(None, Some(&f)).await.unwrap();
        assert_eq!(&p[..], &[0u8, 0xff, 7]);

        let missing = dir.path().join("missing");
        let e = read_payload(None, Some(&missing)).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[tokio::test]
    async fn unreachable_server_is_exit_1_naming_the_url() {
        let common = CommonArgs {
            server: "http://127.0.0.1:1".into(),
            context: "c".into(),
            json: false,
        };
        let e = connect(&common).await.unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
    }
}
