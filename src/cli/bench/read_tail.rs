//! `bench read-tail`: a context pre-filled with N entries; R readers repeatedly Get the
//! 100 entries after entry #(N-100) for a fixed time, every answer checked. The peer
//! harness's `read-tail`; run it at 10,000 and 100,000 entries to show that the cost does
//! not grow with the context.

use super::stats::{new_hist, record, Progress, Report, RssSampler};
use super::{limited, prefill, BenchError, BenchResult, Ctx};
use crate::proto::{GetRequest, GetResponse};
use clap::Args;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Args, Debug)]
pub struct ReadTailArgs {
    /// Entries in the context (comma list: one context and one set of runs each).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub entries: Vec<u64>,

    /// Entries per read: each Get asks for this many after entry #(entries - tail).
    #[arg(long, default_value_t = 100)]
    pub tail: u64,

    /// Numbers of concurrent readers, one connection each (comma list: one run each).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub readers: Vec<usize>,

    /// Seconds each reader run lasts.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,

    /// Payload bytes of the prefilled entries.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Appends in flight while prefilling (they share commits).
    #[arg(long, default_value_t = 64)]
    pub prefill_window: usize,
}

pub async fn run(ctx: &Ctx, a: ReadTailArgs) -> BenchResult<()> {
    if a.readers.contains(&0) || a.entries.iter().any(|&n| n < a.tail) || a.tail == 0 {
        return Err(BenchError::Usage(
            "--readers must be ≥ 1, --tail ≥ 1 and every --entries ≥ --tail".into(),
        ));
    }
    for &n in &a.entries {
        let context_id = ctx.context_id(&format!("tail-{n}"));
        let progress = Progress::new(ctx, &format!("prefill {n}"), n);
        let took = limited(
            ctx,
            "prefill",
            prefill(
                ctx,
                &context_id,
                n,
                a.payload_bytes,
                a.prefill_window,
                &progress,
            ),
        )
        .await?;
        progress.finish();
        if !ctx.json {
            eprintln!(
                "read-tail: prefilled {n} entries in {:.1} s ({:.0}/s)",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64()
            );
        }
        for &r in &a.readers {
            let report = limited(
                ctx,
                &format!("read-tail readers={r}"),
                one(ctx, &a, &context_id, n, r),
            )
            .await?;
            report.emit(ctx);
        }
    }
    Ok(())
}

/// The answer must be exactly entries after+1 ..= after+tail, in order.
fn check(resp: &GetResponse, after: u64, tail: u64, payload_bytes: usize) -> Result<(), String> {
    if resp.entries.len() as u64 != tail {
        return Err(format!(
            "got {} entries, expected {tail}",
            resp.entries.len()
        ));
    }
    for (i, e) in resp.entries.iter().enumerate() {
        if e.sequence != after + 1 + i as u64 {
            return Err(format!(
                "entry {i} has sequence {}, expected {}",
                e.sequence,
                after + 1 + i as u64
            ));
        }
        if e.payload.len() != payload_bytes.max(super::HEADER_LEN) {
            return Err(format!(
                "entry {} has a payload of {} bytes",
                e.sequence,
                e.payload.len()
            ));
        }
    }
    Ok(())
}

async fn one(
    ctx: &Ctx,
    a: &ReadTailArgs,
    context_id: &str,
    n: u64,
    r: usize,
) -> BenchResult<Report> {
    let after = n - a.tail;
    let request = GetRequest {
        context_id: context_id.to_owned(),
        key: ctx.key.clone(),
        after_sequence: after,
        limit: a.tail as u32,
        ..Default::default()
    };
    let barrier = Arc::new(Barrier::new(r + 1));
    let secs = a.duration;
    let progress = Progress::new(ctx, &format!("read-tail n={n} r={r}"), (secs * 10.0) as u64);
    let mut tasks = Vec::with_capacity(r);
    for _ in 0..r {
        let mut client = ctx.service().await?;
        // One unmeasured read per reader: checks the answer and warms the connection.
        let first = client.get(request.clone()).await?.into_inner();
        check(&first, after, a.tail, a.payload_bytes)
            .map_err(|e| BenchError::Failed(format!("first read-tail answer is wrong: {e}")))?;
        let (barrier, request, tail, size) =
            (barrier.clone(), request.clone(), a.tail, a.payload_bytes);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut h = new_hist();
            let (mut ops, mut bad) = (0u64, 0u64);
            while Instant::now() < end {
                let t0 = Instant::now();
                let resp = client.get(request.clone()).await?.into_inner();
                record(&mut h, t0.elapsed());
                ops += 1;
                if check(&resp, after, tail, size).is_err() {
                    bad += 1;
                }
            }
            Ok::<_, BenchError>((h, ops, bad))
        }));
    }
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress.inc(1);
            }
        })
    };
    let rss = RssSampler::start(ctx);
    barrier.wait().await;
    let started = Instant::now();
    let mut h = new_hist();
    let (mut ops, mut bad) = (0, 0);
    for t in tasks {
        let (th, o, b) = t
            .await
            .map_err(|e| BenchError::Failed(format!("reader task: {e}")))??;
        h.add(th).expect("same histogram bounds");
        ops += o;
        bad += b;
    }
    let wall = started.elapsed();
    ticker.abort();
    progress.finish();
    let mut rep = Report::new(
        ctx,
        "read-tail",
        format!("readers={r} {}@{after}/{n}", a.tail),
    );
    rep.fill(&h, ops, wall);
    rep.errors = bad;
    rep.detail("readers", r);
    rep.detail("entries", n);
    rep.detail("after_sequence", after);
    rep.detail("limit", a.tail);
    rep.notes = format!(
        "each read: Get key={:?} after #{after} limit {}, checked; {bad} wrong answers",
        ctx.key, a.tail
    );
    rss.finish(&mut rep);
    Ok(rep)
}
