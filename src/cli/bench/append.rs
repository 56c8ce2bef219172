//! `bench append`: C concurrent writers, each appending to its own context, N entries in
//! total of P bytes; each append is acknowledged before the writer sends the next (closed
//! loop); W unmeasured warm-up appends per writer first. The peer harness's `append`.

use super::stats::{new_hist, record, Progress, Report, RssSampler};
use super::{limited, make_payload, now_ns, BenchError, BenchResult, Ctx};
use clap::Args;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Barrier;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Numbers of concurrent writers, each to its own context (comma list: one run each).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub writers: Vec<usize>,

    /// Measured entries per run, in total, split evenly across the writers.
    #[arg(long, default_value_t = 20_000)]
    pub entries: u64,

    /// Payload bytes of every entry (at least 16: entry index and send time).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// Unmeasured appends per writer before the measured ones.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,

    /// HTTP/2 connections the writers share, round robin; 0 = one per writer (as the peer
    /// harness does). Use a few when simulating thousands of writers (e.g. filling 10,000
    /// contexts).
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
}

pub async fn run(ctx: &Ctx, a: AppendArgs) -> BenchResult<()> {
    if a.writers.contains(&0) {
        return Err(BenchError::Usage(
            "--writers values must be at least 1".into(),
        ));
    }
    for &c in &a.writers {
        let report = limited(ctx, &format!("append writers={c}"), one(ctx, &a, c)).await?;
        report.emit(ctx);
    }
    Ok(())
}

async fn one(ctx: &Ctx, a: &AppendArgs, c: usize) -> BenchResult<Report> {
    let channels = ctx.channels(c, a.connections).await?;
    let progress = Progress::new(ctx, &format!("append c={c}"), a.entries);
    let barrier = Arc::new(Barrier::new(c + 1));
    // One histogram per connection, shared by its writers (a histogram is tens of KiB:
    // one per writer would not fit 100,000 writers).
    let hists: Vec<Arc<Mutex<hdrhistogram::Histogram<u64>>>> = (0..channels.len())
        .map(|_| Arc::new(Mutex::new(new_hist())))
        .collect();
    let mut tasks = Vec::with_capacity(c);
    for i in 0..c {
        let mut client = Ctx::service_on(channels[i % channels.len()].clone());
        let context_id = ctx.context_id(&format!("append-c{c}-w{i}"));
        let n = a.entries / c as u64 + u64::from((i as u64) < a.entries % c as u64);
        let (warmup, size, barrier) = (a.warmup, a.payload_bytes, barrier.clone());
        let key = ctx.key.clone();
        let progress = progress.clone();
        let hist = hists[i % hists.len()].clone();
        tasks.push(tokio::spawn(async move {
            let request = |index: u64| crate::proto::AppendRequest {
                context_id: context_id.clone(),
                key: key.clone(),
                payload: make_payload(size, index, now_ns()),
                ..Default::default()
            };
            let mut durability = 0;
            for j in 0..warmup {
                durability = client.append(request(j)).await?.into_inner().durability;
            }
            barrier.wait().await;
            for j in 0..n {
                let req = request(warmup + j);
                let t0 = Instant::now();
                let r = client.append(req).await?.into_inner();
                record(&mut hist.lock().expect("histogram lock"), t0.elapsed());
                durability = r.durability;
                progress.inc(1);
            }
            Ok::<_, BenchError>(durability)
        }));
    }
    let rss = RssSampler::start(ctx);
    barrier.wait().await;
    let started = Instant::now();
    let mut h = new_hist();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(durability)) => ctx.saw_durability(durability),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Failed(format!("writer task: {e}")));
            }
        }
    }
    let wall = started.elapsed();
    for hist in &hists {
        h.add(&*hist.lock().expect("histogram lock"))
            .expect("same histogram bounds");
    }
    progress.finish();
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut r = Report::new(
        ctx,
        "append",
        format!("writers={c} payload={}B", a.payload_bytes),
    );
    r.fill(&h, a.entries, wall);
    r.detail("writers", c);
    r.detail("connections", channels.len());
    r.detail("payload_bytes", a.payload_bytes);
    r.detail("warmup_per_writer", a.warmup);
    r.notes = format!(
        "{} appends/writer, each acked before the next; {} connection(s)",
        a.entries / c as u64,
        channels.len()
    );
    rss.finish(&mut r);
    Ok(r)
}
