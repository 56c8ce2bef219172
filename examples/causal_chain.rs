//! A causal chain across three contexts: workflow A → B → C, ordered by Lamport clocks.
//!
//! Three agents each write their own context. The researcher records a finding in
//! `workflow-a`; the planner reads it and records a plan in `workflow-b`; the executor reads
//! the plan and records an action in `workflow-c`. Each derived append passes the clock of
//! the entry it was derived from as `received_lamport_clock`, so the ledger gives it
//! `max(own clock, received) + 1`: every entry sorts after everything it was derived from,
//! whichever context it lives in, even though the contexts' own clocks are unrelated (here
//! `workflow-a` is far ahead of the others, so without the received clock the plan and the
//! action would sort *before* the finding they depend on).
//!
//! Run it against a server, or with no `--server` on an in-memory ledger it starts itself:
//!
//! ```text
//! cargo run --example causal_chain
//! cargo run --release -- serve --memory &             # or against a running server
//! cargo run --example causal_chain -- --server http://127.0.0.1:50051
//! ```
//!
//! It prints the three entries and their clocks, then every entry of the three contexts in
//! causal (Lamport clock, then context id) order, and exits 1 if the order is violated.

use anyhow::{bail, Context as _};
use clap::Parser;
use converge_ledger::client::{status_line, LedgerClient};
use converge_ledger::config::Config;
use converge_ledger::proto::{AppendRequest, Entry};
use converge_ledger::server::Ledger;

#[derive(Parser, Debug)]
#[command(about = "A causal chain across three contexts through received_lamport_clock")]
struct Args {
    /// A running ledger; without it, an in-memory ledger is started in this process.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Prefix of the three context ids (`<prefix>-a`, `-b`, `-c`), so runs do not mix.
    #[arg(long, value_name = "PREFIX", default_value = "workflow")]
    prefix: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn append(
    client: &LedgerClient,
    context: &str,
    key: &str,
    payload: &str,
    derived_from: Option<(&str, &Entry)>,
) -> anyhow::Result<Entry> {
    let mut metadata = std::collections::HashMap::new();
    if let Some((ctx, e)) = derived_from {
        metadata.insert("derived_from".into(), format!("{ctx}#{}", e.sequence));
    }
    let ack = client
        .append(AppendRequest {
            context_id: context.into(),
            key: key.into(),
            payload: payload.as_bytes().to_vec().into(),
            metadata,
            // The whole rule: pass the clock of what this entry was derived from.
            received_lamport_clock: derived_from.map_or(0, |(_, e)| e.lamport_clock),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(status_line(&s)))?;
    ack.entry.context("the append response carries no entry")
}

async fn run(args: Args) -> anyhow::Result<()> {
    let local = match &args.server {
        Some(_) => None,
        None => Some(Ledger::start(&Config::for_test()).await?),
    };
    let url = match (&args.server, &local) {
        (Some(url), _) => url.clone(),
        (None, Some(l)) => l.url(),
        (None, None) => unreachable!("a local ledger is started when no --server is given"),
    };
    let client =
        converge_ledger::client::wait_ready(&url, std::time::Duration::from_secs(10)).await?;
    let [a, b, c] = ["a", "b", "c"].map(|s| format!("{}-{s}", args.prefix));

    // Unrelated history first: A is busy, B and C are not.
    for i in 1..=9 {
        append(&client, &a, "notes", &format!("background note {i}"), None).await?;
    }
    append(&client, &b, "notes", "planner warming up", None).await?;

    let finding = append(&client, &a, "facts", "the API rate limit is 100/s", None).await?;
    let plan = append(
        &client,
        &b,
        "intents",
        "batch requests in groups of 100",
        Some((&a, &finding)),
    )
    .await?;
    let action = append(
        &client,
        &c,
        "actions",
        "sent 10 batches of 100",
        Some((&b, &plan)),
    )
    .await?;
    for (ctx, e, what) in [
        (&a, &finding, "finding"),
        (&b, &plan, "plan (derived from the finding)"),
        (&c, &action, "action (derived from the plan)"),
    ] {
        println!(
            "{ctx:>12} #{:<3} clock={:<3} {what}",
            e.sequence, e.lamport_clock
        );
    }
    if !(finding.lamport_clock < plan.lamport_clock && plan.lamport_clock < action.lamport_clock) {
        bail!("the causal order was violated");
    }

    // Merge all three contexts in causal order: by clock, ties broken by context id.
    let mut all: Vec<(u64, String, Entry)> = Vec::new();
    for ctx in [&a, &b, &c] {
        for e in client
            .read_all(ctx)
            .await
            .map_err(|s| anyhow::anyhow!(status_line(&s)))?
        {
            all.push((e.lamport_clock, ctx.clone(), e));
        }
    }
    all.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
    println!("\nall entries in causal order (clock, context):");
    for (clock, ctx, e) in &all {
        println!(
            "  clock={clock:<3} {ctx:>12} #{:<3} {}",
            e.sequence,
            String::from_utf8_lossy(&e.payload)
        );
    }
    if let Some(l) = local {
        l.shutdown().await;
    }
    Ok(())
}
