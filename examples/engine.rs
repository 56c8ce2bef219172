//! A fake agent engine for one context, showing that the ledger is enough memory to crash
//! and resume without losing or repeating work.
//!
//! Each step N (1, 2, ...) appends three entries: `facts`, `intents` (which cites the facts
//! entry's sequence) and `traces`, each with metadata `step=N` and the idempotency key
//! `step-N-<key>`. Payloads depend only on N and on earlier entries, so a retried append is
//! byte-identical and the ledger answers it with the first entry (`duplicate`) instead of
//! appending it twice. On start the engine reads the context back (`read_all`) and resumes
//! after the last step whose `traces` entry is stored.
//!
//! Run it against a local server:
//!
//! ```text
//! cargo run --release -- serve                      # in another terminal
//! cargo run --example engine -- --context demo --steps 5 --crash-after 2
//! cargo run --example engine -- --context demo --steps 5    # resumes at step 3
//! # A crash in the middle of a step: the retried facts append comes back as a duplicate.
//! cargo run --example engine -- --context demo2 --steps 4 --crash-after 1 --crash-mid-step
//! cargo run --example engine -- --context demo2 --steps 4
//! cargo run --release -- get --context demo         # see what it wrote
//! ```

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use converge_ledger::cli::{render, DEFAULT_SERVER};
use converge_ledger::client::{status_line, LedgerClient};
use converge_ledger::proto::{AppendRequest, Entry};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

#[derive(Parser, Debug)]
#[command(about = "A fake agent engine that resumes from the ledger after a crash")]
struct Args {
    /// The ledger's gRPC endpoint.
    #[arg(long, value_name = "URL", env = "LEDGER_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The context this engine writes (it is its only writer).
    #[arg(long, value_name = "ID")]
    context: String,
    /// Run until step N is done (steps are numbered from 1).
    #[arg(long, value_name = "N", default_value_t = 5)]
    steps: u64,
    /// Exit abruptly (status 137, like a SIGKILL) after completing K steps in this run.
    #[arg(long, value_name = "K")]
    crash_after: Option<u64>,
    /// With --crash-after K: crash after the facts entry of step K+1 instead, mid-step.
    #[arg(long, requires = "crash_after")]
    crash_mid_step: bool,
}

/// The entry keys of one step, in append order. A step is done when its last one is stored.
const STEP_KEYS: [&str; 3] = ["facts", "intents", "traces"];

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

    // 1. Read our own history back: the ledger is the engine's memory.
    let history = client.read_all(&args.context).await.map_err(status)?;
    let found = StepsFound::scan(&history);
    let resume_from = found.completed + 1;
    let complete = match found.completed {
        0 => "no step complete".to_owned(),
        n => format!("steps 1..={n} complete"),
    };
    println!(
        "context {:?}: {} entries stored, {complete}",
        args.context,
        history.len()
    );
    if let Some(keys) = found.partial.get(&resume_from) {
        println!(
            "step {resume_from} was interrupted after: {}",
            keys.join(", ")
        );
    }
    if resume_from > args.steps {
        println!("nothing to do: --steps {} already done", args.steps);
        return Ok(());
    }
    println!("resuming from step {resume_from}");

    // 2. Run the remaining steps.
    let mut done_this_run = 0;
    let mut last_sequence = history.last().map_or(0, |e| e.sequence);
    for step in resume_from..=args.steps {
        let mut sequences: HashMap<&str, u64> = HashMap::new();
        for key in STEP_KEYS {
            let payload = step_payload(step, key, &sequences);
            let ack = client
                .append(AppendRequest {
                    context_id: args.context.clone(),
                    key: key.to_owned(),
                    payload: payload.into(),
                    metadata: HashMap::from([("step".to_owned(), step.to_string())]),
                    received_lamport_clock: 0,
                    idempotency_key: format!("step-{step}-{key}"),
                })
                .await
                .map_err(status)?;
            let entry = ack.entry.context("append response without an entry")?;
            println!(
                "step {step} {key:<7} -> #{} clock={}{}",
                entry.sequence,
                entry.lamport_clock,
                if ack.duplicate {
                    " (duplicate: stored before the crash, not appended again)"
                } else {
                    ""
                }
            );
            sequences.insert(key, entry.sequence);
            last_sequence = last_sequence.max(entry.sequence);
            if args.crash_mid_step && args.crash_after == Some(done_this_run) && key == "facts" {
                crash(&format!("in the middle of step {step}"));
            }
        }
        done_this_run += 1;
        if !args.crash_mid_step && args.crash_after == Some(done_this_run) {
            crash(&format!("after step {step}"));
        }
    }

    // 3. Report where the context stands.
    let tail = client
        .get_after(args.context.clone(), last_sequence, 1)
        .await
        .map_err(status)?;
    println!(
        "done: steps 1..={} complete ({done_this_run} in this run); latest_sequence={} merkle_root={}",
        args.steps,
        tail.latest_sequence,
        render::hex_or_dash(&tail.merkle_root)
    );
    if tail.latest_sequence != last_sequence {
        bail!(
            "another writer appended to {:?} (latest #{} after our #{last_sequence})",
            args.context,
            tail.latest_sequence
        );
    }
    Ok(())
}

/// What the stored history says about the steps.
#[derive(Debug, Default, PartialEq)]
struct StepsFound {
    /// The highest N such that steps 1..=N each have their last entry (`traces`) stored.
    completed: u64,
    /// Keys already stored for steps that are not complete, in append order.
    partial: BTreeMap<u64, Vec<String>>,
}

impl StepsFound {
    fn scan(history: &[Entry]) -> Self {
        let mut keys: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for e in history {
            // Entries without a numeric step are not ours; they do not count.
            if let Some(step) = e.metadata.get("step").and_then(|s| s.parse::<u64>().ok()) {
                keys.entry(step).or_default().push(e.key.clone());
            }
        }
        let last_key = STEP_KEYS[STEP_KEYS.len() - 1];
        let mut completed = 0;
        while keys
            .get(&(completed + 1))
            .is_some_and(|k| k.iter().any(|k| k == last_key))
        {
            completed += 1;
        }
        keys.retain(|&step, _| step > completed);
        StepsFound {
            completed,
            partial: keys,
        }
    }
}

/// The payload of one entry of a step: JSON text that depends only on the step and on the
/// sequences of the step's earlier entries, so a retry is byte-identical.
fn step_payload(step: u64, key: &str, earlier: &HashMap<&str, u64>) -> String {
    let value = match key {
        "facts" => json!({
            "step": step,
            "observation": format!("sensor reading {}", (step * 7) % 10),
            "value": step * step,
        }),
        "intents" => json!({
            "step": step,
            "intent": "adjust",
            "target": step * step + 1,
            "because_of": earlier.get("facts"),
        }),
        _ => json!({
            "step": step,
            "inputs": [earlier.get("facts"), earlier.get("intents")],
            "outcome": "ok",
        }),
    };
    value.to_string()
}

/// Dies like a killed process: no destructors, no flushing beyond what is already written.
fn crash(when: &str) -> ! {
    eprintln!("simulated crash {when}: exiting with status 137");
    std::process::exit(137)
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!(status_line(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, key: &str, step: Option<u64>) -> Entry {
        Entry {
            sequence: seq,
            key: key.into(),
            metadata: step
                .map(|s| HashMap::from([("step".to_owned(), s.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn resume_after_complete_and_partial_steps() {
        assert_eq!(StepsFound::scan(&[]), StepsFound::default());
        let h = [
            e(1, "facts", Some(1)),
            e(2, "intents", Some(1)),
            e(3, "traces", Some(1)),
            e(4, "note", None),
            e(5, "facts", Some(2)),
        ];
        let f = StepsFound::scan(&h);
        assert_eq!(f.completed, 1);
        assert_eq!(f.partial, BTreeMap::from([(2, vec!["facts".to_owned()])]));
    }

    #[test]
    fn payloads_are_deterministic() {
        let seqs = HashMap::from([("facts", 7)]);
        assert_eq!(
            step_payload(3, "intents", &seqs),
            step_payload(3, "intents", &seqs)
        );
        assert_eq!(
            step_payload(3, "intents", &seqs),
            r#"{"because_of":7,"intent":"adjust","step":3,"target":10}"#
        );
    }
}
