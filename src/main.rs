//! `converge-ledger`: the server (`serve`) and its client commands in one binary.

use clap::{Parser, Subcommand};
use converge_ledger::cli::bench::{run_bench, BenchArgs};
use converge_ledger::cli::{run_client, run_integrity, ClientCommand, IntegrityCommand};
use converge_ledger::config::{Config, ServeArgs, StorageConfig};
use converge_ledger::server::Ledger;
use converge_ledger::storage::DurabilityMode;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "converge-ledger",
    version,
    about = "The memory of large agentic systems: an append-only, verifiable, streaming context ledger over gRPC",
    long_about = "The memory of large agentic systems: an append-only, verifiable, streaming context \
ledger over gRPC (converge.context.v1).\n\nFive operations — Append, Get, Snapshot, Load, Watch — and \
nothing else: history is never rewritten. Every entry carries a SHA-256 content hash and a Lamport \
clock; every context is an RFC 9162 Merkle tree.\n\nStart a server with `converge-ledger serve`; \
the other commands are clients of a running server, except `verify-snapshot` and `keygen`, which \
work offline."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ledger server.
    Serve(ServeArgs),
    #[command(flatten)]
    Client(ClientCommand),
    #[command(flatten)]
    Integrity(IntegrityCommand),
    /// Load-test a running server: append, read-tail, watch or snapshot-load workloads;
    /// ops/s and latency percentiles with the server's durability mode.
    Bench(BenchArgs),
}

fn init_tracing(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid --log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    if let Err(e) = init_tracing(&args.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut ledger = match Ledger::start(&config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let storage = match &config.storage {
        StorageConfig::Memory => "memory (no files)".to_string(),
        StorageConfig::Dir { path, .. } => path.display().to_string(),
    };
    match ledger.durability() {
        DurabilityMode::Fsynced => {}
        DurabilityMode::Written => tracing::warn!(
            "DURABILITY NONE: appends are acknowledged before they reach the disk; a crash can \
             lose about the last second of acknowledged entries. Every AppendResponse says WRITTEN."
        ),
        DurabilityMode::Memory => tracing::warn!(
            "MEMORY MODE: nothing is written to disk; everything is lost when the process ends. \
             Every AppendResponse says MEMORY."
        ),
    }
    // The key that signs checkpoints, as name+id, or "none" (no --signing-key).
    let checkpoint_key = match &ledger.shared().checkpoint_signer {
        Some(s) => format!("{}+{:08x}", s.name(), s.key_id()),
        None => "none".to_string(),
    };
    tracing::info!(
        listen = %ledger.local_addr(),
        storage = %storage,
        durability = ?ledger.durability(),
        max_payload_bytes = config.limits.payload_bytes_max,
        checkpoint_key = %checkpoint_key,
        "converge-ledger ready"
    );
    if args.fault_injection {
        spawn_fault_injection(ledger.shared().clone());
    }
    let crashed = tokio::select! {
        _ = wait_for_signal() => false,
        _ = ledger.stopped() => true,
    };
    if crashed {
        tracing::error!("the supervision tree stopped on its own; exiting");
        return ExitCode::from(1);
    }
    ledger.shutdown().await;
    tracing::info!("stopped cleanly");
    ExitCode::SUCCESS
}

/// `--fault-injection`: every SIGUSR1 kills one actor (see `actors::fault_injection`).
#[cfg(unix)]
fn spawn_fault_injection(shared: std::sync::Arc<converge_ledger::actors::Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "--fault-injection: cannot listen for SIGUSR1");
            return;
        }
    };
    tracing::warn!("FAULT INJECTION ON: every SIGUSR1 kills one actor (testing only)");
    tokio::spawn(async move {
        let mut injector = converge_ledger::actors::fault_injection::FaultInjector::new(u64::from(
            std::process::id(),
        ));
        while usr1.recv().await.is_some() {
            if injector.kill_next(&shared).is_none() {
                tracing::warn!("fault injection: no actor to kill (the tree is restarting)");
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_fault_injection(_shared: std::sync::Arc<converge_ledger::actors::Shared>) {
    tracing::error!("--fault-injection needs SIGUSR1 (unix only); ignored");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Client(cmd) => run_client(cmd).await,
            Command::Integrity(cmd) => run_integrity(cmd).await,
            Command::Bench(args) => run_bench(args).await,
        }
    })
}
