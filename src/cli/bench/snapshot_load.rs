//! `bench snapshot-load`: a context of N entries; time Snapshot (whole context, CBOR), then
//! Load of that snapshot into a new context — the server decodes and verifies every
//! content hash and the Merkle root, rehashes for the new context id, and commits.

use super::stats::{new_hist, record, Progress, Report, RssSampler};
use super::{limited, prefill, BenchError, BenchResult, Ctx};
use crate::proto::{GetRequest, LoadRequest, SnapshotRequest};
use clap::Args;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct SnapshotLoadArgs {
    /// Entries in the context that is snapshotted.
    #[arg(long, default_value_t = 100_000)]
    pub entries: u64,

    /// Snapshot and load this many times (a new target context each time).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,

    /// Payload bytes of the prefilled entries.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Appends in flight while prefilling (they share commits).
    #[arg(long, default_value_t = 64)]
    pub prefill_window: usize,
}

pub async fn run(ctx: &Ctx, a: SnapshotLoadArgs) -> BenchResult<()> {
    if a.repeat == 0 || a.entries == 0 {
        return Err(BenchError::Usage(
            "--entries and --repeat must be at least 1".into(),
        ));
    }
    let (snap, load) = limited(ctx, "snapshot-load", one(ctx, &a)).await?;
    snap.emit(ctx);
    load.emit(ctx);
    Ok(())
}

async fn one(ctx: &Ctx, a: &SnapshotLoadArgs) -> BenchResult<(Report, Report)> {
    let n = a.entries;
    let source = ctx.context_id(&format!("snap-{n}"));
    let progress = Progress::new(ctx, &format!("prefill {n}"), n);
    let took = prefill(
        ctx,
        &source,
        n,
        a.payload_bytes,
        a.prefill_window,
        &progress,
    )
    .await?;
    progress.finish();
    if !ctx.json {
        eprintln!(
            "snapshot-load: prefilled {n} entries in {:.1} s",
            took.as_secs_f64()
        );
    }
    let mut client = ctx.service().await?;
    let rss = RssSampler::start(ctx);
    let (mut hs, mut hl) = (new_hist(), new_hist());
    let (mut ws, mut wl) = (Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    for i in 0..a.repeat {
        let t0 = Instant::now();
        let snap = client
            .snapshot(SnapshotRequest {
                context_id: source.clone(),
            })
            .await?
            .into_inner();
        let d = t0.elapsed();
        record(&mut hs, d);
        ws += d;
        bytes = snap.snapshot.len();
        let count = snap.metadata.as_ref().map_or(0, |m| m.entry_count);
        if snap.sequence != n || count != n {
            return Err(BenchError::Failed(format!(
                "snapshot has {count} entries up to sequence {}, expected {n}",
                snap.sequence
            )));
        }
        let target = ctx.context_id(&format!("snap-{n}-load-{i}"));
        let t0 = Instant::now();
        let loaded = client
            .load(LoadRequest {
                context_id: target.clone(),
                snapshot: snap.snapshot,
                fail_if_exists: true,
            })
            .await?
            .into_inner();
        let d = t0.elapsed();
        record(&mut hl, d);
        wl += d;
        if loaded.entries_restored != n || loaded.latest_sequence != n {
            return Err(BenchError::Failed(format!(
                "load restored {} entries up to {}, expected {n}",
                loaded.entries_restored, loaded.latest_sequence
            )));
        }
        let head = client
            .get(GetRequest {
                context_id: target,
                key: String::new(),
                after_sequence: n,
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        if head.latest_sequence != n || head.merkle_root != loaded.merkle_root {
            return Err(BenchError::Failed(
                "the loaded context's root differs from the one Load reported".into(),
            ));
        }
    }
    let mut s = Report::new(ctx, "snapshot", format!("entries={n}"));
    s.fill(&hs, a.repeat as u64, ws);
    s.detail("entries", n);
    s.detail("snapshot_bytes", bytes);
    s.detail(
        "entries_per_s",
        n as f64 * a.repeat as f64 / ws.as_secs_f64(),
    );
    s.notes = format!(
        "Snapshot of {n} entries ({:.1} MB CBOR), {} times; ops/s = snapshots/s",
        bytes as f64 / 1e6,
        a.repeat
    );
    let mut l = Report::new(ctx, "load", format!("entries={n}"));
    l.fill(&hl, a.repeat as u64, wl);
    l.detail("entries", n);
    l.detail("snapshot_bytes", bytes);
    l.detail(
        "entries_per_s",
        n as f64 * a.repeat as f64 / wl.as_secs_f64(),
    );
    l.notes = format!(
        "Load into a new context with full verification (every hash, the root; rehash for the \
         new id), {} times; ops/s = loads/s",
        a.repeat
    );
    rss.finish(&mut l);
    Ok((s, l))
}
