//! The client subcommands of the `converge-ledger` binary: `append`, `get`, `watch`,
//! `snapshot` and `load`, and the load generator `bench` (in `bench`). `main.rs` embeds [`ClientCommand`] in its own subcommand enum
//! with `#[command(flatten)]` and hands it to [`run_client`].
//!
//! The integrity commands, [`IntegrityCommand`] run by [`run_integrity`]: `verify` (the
//! auditor), `verify-snapshot` (offline) and `keygen` (checkpoint signing keys). They add
//! exit status [`EXIT_VERIFY_FAILED`] for "checked, and it does not verify".
//!
//! Every command prints readable text by default and one JSON object per line with
//! `--json`; errors go to stderr as `error: ...` with the exit codes of [`EXIT_CODES_HELP`].

pub mod bench;
mod commands;
pub mod keygen;
pub mod render;
pub mod status;
pub mod verify;
pub mod verify_snapshot;

pub use keygen::KeygenArgs;
pub use verify::VerifyArgs;
pub use verify_snapshot::VerifySnapshotArgs;

use crate::client::{status_line, ClientError};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default `--server`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Exit status when the server answered with an error, could not be reached, or a watch
/// stream ended with an error.
pub const EXIT_SERVER_ERROR: u8 = 1;

/// Exit status for a usage or local error: a bad argument or URL, a file that cannot be
/// read or written. (clap uses 2 for its own usage errors too.)
pub const EXIT_USAGE_ERROR: u8 = 2;

/// Exit status when verification ran and something does not verify (`verify`,
/// `verify-snapshot`): distinct from 1, which means nothing could be concluded.
pub const EXIT_VERIFY_FAILED: u8 = 3;

/// The exit-code convention of the verify commands, shown after their `--help`.
pub const VERIFY_EXIT_CODES_HELP: &str = "\
Exit status:
  0  everything verified
  1  the server answered with an error or could not be reached: nothing was concluded
  2  usage or local error: a bad argument, key or URL, a file that cannot be read or written
  3  verification failed: stderr says `error: verification failed: ...` with the first
     mismatch (the sequence, and the expected and received values)";

/// The exit-code convention, shown after every client command's `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success (watch: also when the server ends the stream or on Ctrl-C)
  1  the server answered with an error, could not be reached, or the watch stream
     failed; stderr says `error: <GRPC_CODE> (<number>): <message>`
  2  usage or local error: a bad argument or URL, a file that cannot be read or written";

/// The client commands. Each talks to a running server (`converge-ledger serve`).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Append one entry to a context and print it as acknowledged.
    #[command(after_help = EXIT_CODES_HELP)]
    Append(AppendArgs),
    /// Print a context's entries after a sequence, then its latest sequence and Merkle root.
    #[command(after_help = EXIT_CODES_HELP)]
    Get(GetArgs),
    /// Print a context's stored entries after a sequence, then new ones as they are appended.
    #[command(after_help = EXIT_CODES_HELP)]
    Watch(WatchArgs),
    /// Save a whole context as a snapshot file (versioned CBOR, see docs/SNAPSHOT.md).
    #[command(after_help = EXIT_CODES_HELP)]
    Snapshot(SnapshotArgs),
    /// Restore a context from a snapshot file; the server verifies every hash and the root.
    #[command(after_help = EXIT_CODES_HELP)]
    Load(LoadArgs),
    /// Show this node, its cluster members and, per context, the owner, epoch, latest
    /// sequence and replication lag; and any quarantined entries.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(status::StatusArgs),
}

/// The integrity commands: auditing a ledger, checking snapshot files, making keys.
#[derive(Subcommand, Debug)]
pub enum IntegrityCommand {
    /// Audit a context: stream every entry, recompute every content hash and the Merkle
    /// root, check the server's root, its signed checkpoint and its consistency with an
    /// earlier checkpoint; save the new checkpoint.
    #[command(after_help = VERIFY_EXIT_CODES_HELP)]
    Verify(VerifyArgs),
    /// Check a snapshot file offline: format, sequences, clocks, every content hash, the root.
    #[command(after_help = VERIFY_EXIT_CODES_HELP)]
    VerifySnapshot(VerifySnapshotArgs),
    /// Write a new Ed25519 key for signing checkpoints (serve --signing-key) and its
    /// verifier key (verify --trusted-key).
    #[command(after_help = EXIT_CODES_HELP)]
    Keygen(KeygenArgs),
}

/// The options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The server's gRPC endpoint, http://HOST:PORT (a bare HOST:PORT means http://HOST:PORT),
    /// or several, comma-separated: a node that does not answer is skipped, `append` is
    /// retried on the next one with one idempotency key, `watch` resumes there. Plain
    /// HTTP/2; TLS is not supported.
    #[arg(long, value_name = "URL", env = "LEDGER_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,

    /// The context to act on: a non-empty id of at most 256 bytes.
    #[arg(long, value_name = "ID")]
    pub context: String,

    /// Print one JSON object per line (for scripts) instead of readable text. Payloads that
    /// are valid UTF-8 appear as "payload", others as "payload_base64"; hashes are hex.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The entry's key: its category ("facts", "intents", ...). Required; may be "" (at most
    /// 256 bytes).
    #[arg(long, value_name = "KEY")]
    pub key: String,

    /// The payload, as UTF-8 text. Without --payload and --payload-file the payload is read
    /// from stdin until end of file.
    #[arg(long, value_name = "TEXT", conflicts_with = "payload_file")]
    pub payload: Option<String>,

    /// Read the payload from FILE, any bytes ("-" = stdin). The server's --max-payload-bytes
    /// is the limit.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,

    /// A metadata pair KEY=VALUE, split at the first '=' (the value may contain '=').
    /// Repeatable, each KEY at most once; at most 64 pairs, 1024 bytes per key and per value.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,

    /// Makes the append safe to retry: a later append with the same idempotency key and the
    /// same key, payload and metadata returns the first entry (duplicate=true) instead of
    /// appending again; other content under the same idempotency key is ALREADY_EXISTS.
    /// At most 256 bytes; default none.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// The Lamport clock of an entry the caller received from another context: the new
    /// entry's clock becomes max(current, N) + 1. 0 = none.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub received_lamport_clock: u64,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Only entries with this key (default: every key). The latest sequence and root printed
    /// at the end are the whole context's.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Only entries with sequence > N (sequences start at 1).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,

    /// Print at most N entries; 0 = all. Entries are read in pages of 1000.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u64,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Start after sequence N: stored entries with sequence > N come first, then new ones.
    /// 0 = from the beginning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub from: u64,

    /// Only entries with this key (default: every key).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Write the snapshot to FILE (replaced if it exists; written to FILE.partial first and
    /// renamed, so FILE is never half-written).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The snapshot file to restore, as written by `snapshot --out`.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,

    /// Fail with ALREADY_EXISTS if the context already has entries. Without it, a snapshot
    /// that diverges from the context's history fails with FAILED_PRECONDITION.
    #[arg(long)]
    pub fail_if_exists: bool,
}

/// Parses `--meta KEY=VALUE`, splitting at the first '='.
pub fn parse_meta(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err(format!("expected KEY=VALUE, got {arg:?} (no '=')")),
    }
}

/// Why a client command failed; decides the message and the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument that clap could not catch (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A local file or terminal problem (exit 2).
    #[error("{0}")]
    Local(String),
    /// Connecting failed (exit 1; an invalid URL is exit 2).
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The server answered with an error (exit 1).
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    /// Verification ran and something does not verify (exit 3).
    #[error("verification failed: {0}")]
    Unverified(String),
    /// Stdout was closed (`| head`): stop quietly with success.
    #[error("stdout closed")]
    StdoutClosed,
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Local(_) => EXIT_USAGE_ERROR,
            CliError::Client(ClientError::InvalidUrl { .. }) => EXIT_USAGE_ERROR,
            CliError::Client(ClientError::Unverified(_)) => EXIT_VERIFY_FAILED,
            CliError::Client(_) | CliError::Status(_) => EXIT_SERVER_ERROR,
            CliError::Unverified(_) => EXIT_VERIFY_FAILED,
            CliError::StdoutClosed => 0,
        }
    }
}

/// Runs one client command to the end, printing its result to stdout and any error to
/// stderr, and returns the exit status ([`EXIT_CODES_HELP`]).
pub async fn run_client(cmd: ClientCommand) -> ExitCode {
    match commands::run(cmd).await {
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one integrity command, like [`run_client`].
pub async fn run_integrity(cmd: IntegrityCommand) -> ExitCode {
    let mut out = commands::Out::stdout();
    let result = match cmd {
        IntegrityCommand::Verify(a) => verify::run(a, &mut out).await,
        IntegrityCommand::VerifySnapshot(a) => verify_snapshot::run(a, &mut out),
        IntegrityCommand::Keygen(a) => keygen::run(a, &mut out),
    };
    match result {
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape main.rs uses: the client commands flattened next to its own.
    #[derive(Parser, Debug)]
    #[command(name = "converge-ledger")]
    struct TestCli {
        #[command(subcommand)]
        command: TestTop,
    }

    #[derive(Subcommand, Debug)]
    enum TestTop {
        /// Run the server.
        Serve {
            #[arg(long)]
            listen: Option<String>,
        },
        #[command(flatten)]
        Client(ClientCommand),
    }

    fn parse(args: &[&str]) -> Result<TestTop, clap::Error> {
        let argv = std::iter::once("converge-ledger").chain(args.iter().copied());
        TestCli::try_parse_from(argv).map(|c| c.command)
    }

    fn client(args: &[&str]) -> ClientCommand {
        match parse(args).unwrap() {
            TestTop::Client(c) => c,
            other => panic!("not a client command: {other:?}"),
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn flatten_keeps_serve_and_the_client_commands_side_by_side() {
        assert!(matches!(
            parse(&["serve", "--listen", "x"]).unwrap(),
            TestTop::Serve { .. }
        ));
        let names: Vec<String> = TestCli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        for n in ["serve", "append", "get", "watch", "snapshot", "load"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn append_parses_every_flag() {
        let ClientCommand::Append(a) = client(&[
            "append",
            "--server",
            "http://h:1",
            "--context",
            "c1",
            "--key",
            "facts",
            "--payload",
            "hello",
            "--meta",
            "step=3",
            "--meta",
            "expr=a=b",
            "--meta",
            "empty=",
            "--idempotency-key",
            "step-3-facts",
            "--received-lamport-clock",
            "42",
            "--json",
        ]) else {
            panic!("not append")
        };
        assert_eq!(a.common.server, "http://h:1");
        assert_eq!(a.common.context, "c1");
        assert!(a.common.json);
        assert_eq!(a.key, "facts");
        assert_eq!(a.payload.as_deref(), Some("hello"));
        assert_eq!(
            a.meta,
            vec![
                ("step".into(), "3".into()),
                ("expr".into(), "a=b".into()),
                ("empty".into(), String::new())
            ]
        );
        assert_eq!(a.idempotency_key.as_deref(), Some("step-3-facts"));
        assert_eq!(a.received_lamport_clock, 42);
    }

    #[test]
    fn append_defaults_and_required_flags() {
        let ClientCommand::Append(a) = client(&["append", "--context", "c", "--key", ""]) else {
            panic!("not append")
        };
        assert!(!a.common.json);
        assert_eq!(a.key, "");
        assert!(a.payload.is_none() && a.payload_file.is_none() && a.meta.is_empty());
        assert_eq!(a.received_lamport_clock, 0);
        assert!(a.idempotency_key.is_none());

        let e = parse(&["append", "--key", "k"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(e.to_string().contains("--context"), "{e}");
        let e = parse(&["append", "--context", "c"]).unwrap_err();
        assert!(e.to_string().contains("--key"), "{e}");
    }

    #[test]
    fn payload_and_payload_file_conflict() {
        let e = parse(&[
            "append",
            "--context",
            "c",
            "--key",
            "k",
            "--payload",
            "x",
            "--payload-file",
            "f",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn bad_meta_names_the_argument() {
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_meta("=v").unwrap(), (String::new(), "v".into()));
        let e = parse(&[
            "append",
            "--context",
            "c",
            "--key",
            "k",
            "--meta",
            "novalue",
        ])
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("novalue"), "{text}");
        assert!(text.contains("--meta"), "{text}");
        assert!(text.contains("KEY=VALUE"), "{text}");
        // clap's usage errors exit with 2, like ours.
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE_ERROR));
    }

    #[test]
    fn get_watch_snapshot_load_parse() {
        let ClientCommand::Get(g) = client(&[
            "get",
            "--context",
            "c",
            "--key",
            "k",
            "--after",
            "5",
            "--limit",
            "10",
        ]) else {
            panic!()
        };
        assert_eq!((g.key.as_deref(), g.after, g.limit), (Some("k"), 5, 10));
        let ClientCommand::Get(g) = client(&["get", "--context", "c"]) else {
            panic!()
        };
        assert_eq!((g.key, g.after, g.limit), (None, 0, 0));

        let ClientCommand::Watch(w) = client(&["watch", "--context", "c", "--from", "3"]) else {
            panic!()
        };
        assert_eq!((w.from, w.key), (3, None));

        let ClientCommand::Snapshot(s) = client(&["snapshot", "--context", "c", "--out", "s.cbor"])
        else {
            panic!()
        };
        assert_eq!(s.out, PathBuf::from("s.cbor"));
        assert!(
            parse(&["snapshot", "--context", "c"]).is_err(),
            "--out is required"
        );

        let ClientCommand::Load(l) = client(&[
            "load",
            "--context",
            "c",
            "--in",
            "s.cbor",
            "--fail-if-exists",
        ]) else {
            panic!()
        };
        assert_eq!(l.input, PathBuf::from("s.cbor"));
        assert!(l.fail_if_exists);

        assert!(parse(&["get", "--context", "c", "--after", "-1"]).is_err());
    }

    #[test]
    fn server_defaults_to_localhost() {
        // LEDGER_SERVER is read from the environment; only assert when it is unset so the
        // test does not depend on (or change) the environment it runs in.
        if std::env::var_os("LEDGER_SERVER").is_none() {
            let ClientCommand::Get(g) = client(&["get", "--context", "c"]) else {
                panic!()
            };
            assert_eq!(g.common.server, DEFAULT_SERVER);
        }
    }

    #[test]
    fn help_documents_defaults_env_and_exit_codes() {
        let mut cmd = TestCli::command();
        let help = cmd
            .find_subcommand_mut("append")
            .unwrap()
            .render_long_help()
            .to_string();
        for needle in [
            "LEDGER_SERVER",
            DEFAULT_SERVER,
            "KEY=VALUE",
            "first '='",
            "stdin",
            "Exit status:",
            "usage or local error",
        ] {
            assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
        }
        for sub in ["get", "watch", "snapshot", "load"] {
            let help = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(help.contains("Exit status:"), "{sub}:\n{help}");
            assert!(help.contains("--json"), "{sub}:\n{help}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Local("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::from(tonic::Status::not_found("no such context")).exit_code(),
            1
        );
        let e = CliError::from(ClientError::InvalidUrl {
            url: "x".into(),
            reason: "y".into(),
        });
        assert_eq!(e.exit_code(), 2);
        let e = CliError::from(tonic::Status::invalid_argument("key too long"));
        assert_eq!(e.to_string(), "INVALID_ARGUMENT (3): key too long");
    }
}
