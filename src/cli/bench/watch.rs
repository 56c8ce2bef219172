//! `bench watch`: K watchers subscribe to a new context; then one writer appends at a fixed
//! rate R for D seconds, each append acknowledged before the next. Latency is end to end:
//! from just before the append call (its time is in the payload) to a watcher's receipt.
//! Every watcher must see every entry exactly once, in order: gaps, duplicates,
//! out-of-order and missing entries are counted. The peer harness's `watch`.

use super::stats::{new_hist, record, Progress, Report, RssSampler};
use super::{limited, make_payload, now_ns, parse_payload, BenchError, BenchResult, Ctx};
use crate::proto::WatchRequest;
use clap::Args;
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Numbers of watchers of the context (comma list: one run, and one context, each).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub watchers: Vec<usize>,

    /// The writer's target rate, appends per second.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,

    /// Seconds the writer appends for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds watchers may lag behind the writer's last append before the run ends.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,

    /// Payload bytes of every entry (at least 16: entry index and send time).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,

    /// HTTP/2 connections the watchers share, round robin; 0 = one per watcher (as the
    /// peer harness does). The writer always has its own.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,

    /// Watch through this server instead of --server (another node of a cluster: the writer
    /// appends through --server, the watchers follow a replica). Default: --server.
    #[arg(long, value_name = "URL")]
    pub watch_server: Option<String>,
}

pub async fn run(ctx: &Ctx, a: WatchArgs) -> BenchResult<()> {
    if a.watchers.contains(&0) || a.rate == 0 || a.duration <= 0.0 {
        return Err(BenchError::Usage(
            "--watchers values, --rate and --duration must be positive".into(),
        ));
    }
    for &k in &a.watchers {
        let report = limited(ctx, &format!("watch watchers={k}"), one(ctx, &a, k)).await?;
        report.emit(ctx);
    }
    Ok(())
}

struct WatchState {
    hist: Histogram<u64>,
    /// The next entry index this watcher expects (indexes are 0, 1, 2, ...).
    next_expected: u64,
    received: u64,
    gaps: u64,
    dups: u64,
    out_of_order: u64,
    /// Entries whose sequence was not index + 1 (the writer is the context's only one).
    wrong_sequence: u64,
    done: bool,
    error: Option<String>,
}

pub(super) async fn one(ctx: &Ctx, a: &WatchArgs, k: usize) -> BenchResult<Report> {
    let total = (a.rate as f64 * a.duration).round() as u64;
    let context_id = ctx.context_id(&format!("watch-k{k}"));
    let channels = match &a.watch_server {
        Some(url) => {
            let url = super::normalize_url(url);
            ctx.channels_to(&url, k, a.connections).await?
        }
        None => ctx.channels(k, a.connections).await?,
    };
    let progress = Progress::new(ctx, &format!("watch k={k}"), total);
    let mut states = Vec::with_capacity(k);
    let mut tasks = Vec::with_capacity(k);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(k);
    for i in 0..k {
        let mut client = Ctx::service_on(channels[i % channels.len()].clone());
        let request = WatchRequest {
            context_id: context_id.clone(),
            key: ctx.key.clone(),
            from_sequence: 0,
            signal_caught_up: true,
        };
        let st = Arc::new(Mutex::new(WatchState {
            hist: new_hist(),
            next_expected: 0,
            received: 0,
            gaps: 0,
            dups: 0,
            out_of_order: 0,
            wrong_sequence: 0,
            done: false,
            error: None,
        }));
        states.push(st.clone());
        let ready = ready_tx.clone();
        let progress = progress.clone();
        let first = i == 0;
        tasks.push(tokio::spawn(async move {
            let mut stream = match client.watch(request).await {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = ready.send(Err(crate::client::status_line(&e))).await;
                    return;
                }
            };
            loop {
                let ev = match stream.message().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        st.lock()
                            .unwrap()
                            .error
                            .get_or_insert("stream ended".into());
                        return;
                    }
                    Err(e) => {
                        st.lock().unwrap().error = Some(crate::client::status_line(&e));
                        return;
                    }
                };
                let now = now_ns();
                let Some(entry) = ev.entry else {
                    if ev.caught_up {
                        let _ = ready.send(Ok(())).await;
                    }
                    continue;
                };
                let mut s = st.lock().unwrap();
                let Some((idx, sent)) = parse_payload(&entry.payload) else {
                    s.error = Some(format!("entry {} has a short payload", entry.sequence));
                    continue;
                };
                if entry.sequence != idx + 1 {
                    s.wrong_sequence += 1;
                }
                let latency = Duration::from_nanos(now.saturating_sub(sent));
                if idx == s.next_expected {
                    record(&mut s.hist, latency);
                    s.received += 1;
                    s.next_expected += 1;
                } else if idx < s.next_expected {
                    s.dups += 1;
                    s.out_of_order += 1;
                } else {
                    record(&mut s.hist, latency);
                    s.gaps += idx - s.next_expected;
                    s.received += 1;
                    s.next_expected = idx + 1;
                }
                if first {
                    progress.inc(1);
                }
                if s.next_expected >= total {
                    s.done = true;
                    return;
                }
            }
        }));
    }
    drop(ready_tx);
    // Every watcher has subscribed and read the (empty) backlog before the writer starts.
    for _ in 0..k {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(BenchError::Failed(format!("watch failed: {e}"))),
            None => {
                return Err(BenchError::Failed(
                    "a watcher ended before it caught up".into(),
                ))
            }
        }
    }

    let rss = RssSampler::start(ctx);
    let mut writer = ctx.service().await?;
    let (rate, size) = (a.rate, a.payload_bytes);
    let writer_context = context_id.clone();
    let key = ctx.key.clone();
    let writer = tokio::spawn(async move {
        let start = Instant::now();
        let mut h = new_hist();
        let mut max_lag = Duration::ZERO;
        let mut durability = 0;
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            } else {
                max_lag = max_lag.max(now - due);
            }
            let req = crate::proto::AppendRequest {
                context_id: writer_context.clone(),
                key: key.clone(),
                payload: make_payload(size, i, now_ns()),
                ..Default::default()
            };
            let t0 = Instant::now();
            durability = writer.append(req).await?.into_inner().durability;
            record(&mut h, t0.elapsed());
        }
        Ok::<_, BenchError>((h, start.elapsed(), max_lag, durability))
    });
    let (wh, wall, max_lag, durability) = writer
        .await
        .map_err(|e| BenchError::Failed(format!("writer task: {e}")))??;
    ctx.saw_durability(durability);
    let drain_until = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    loop {
        let all = states.iter().all(|s| {
            let s = s.lock().unwrap();
            s.done || s.error.is_some()
        });
        if all || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort();
    }
    progress.finish();
    let mut h = new_hist();
    let (mut received, mut gaps, mut dups, mut ooo, mut wrong_seq) = (0, 0, 0, 0, 0);
    let (mut missing, mut incomplete) = (0u64, 0u64);
    let mut errors = Vec::new();
    for s in &states {
        let s = s.lock().unwrap();
        h.add(&s.hist).expect("same histogram bounds");
        received += s.received;
        gaps += s.gaps;
        dups += s.dups;
        ooo += s.out_of_order;
        wrong_seq += s.wrong_sequence;
        missing += total.saturating_sub(s.next_expected);
        if !s.done {
            incomplete += 1;
        }
        if let Some(e) = &s.error {
            errors.push(e.clone());
        }
    }
    let writer_rate = total as f64 / wall.as_secs_f64();
    let mut r = Report::new(
        ctx,
        "watch",
        format!("watchers={k} rate={}/s x{}s", a.rate, a.duration),
    );
    // ops/s: deliveries per second summed over the watchers, over the writer's span.
    r.fill(&h, received, wall);
    r.errors = gaps + dups + missing + wrong_seq + errors.len() as u64;
    r.detail("watchers", k);
    r.detail("connections", channels.len());
    r.detail("target_rate", a.rate);
    r.detail("writer_rate", writer_rate);
    r.detail("writer_max_lag_ms", max_lag.as_secs_f64() * 1000.0);
    r.detail("append_p50_us", wh.value_at_quantile(0.5) as f64 / 1000.0);
    r.detail("append_p99_us", wh.value_at_quantile(0.99) as f64 / 1000.0);
    r.detail("sent", total);
    r.detail("gaps", gaps);
    r.detail("dups", dups);
    r.detail("out_of_order", ooo);
    r.detail("missing", missing);
    r.detail("wrong_sequence", wrong_seq);
    r.detail("incomplete_watchers", incomplete);
    r.notes = format!(
        "e2e append-call→watcher-receipt; writer sent {total} at {writer_rate:.0}/s (target {}/s, \
         max lag {:.1} ms, append p50 {:.0} µs p99 {:.0} µs); every watcher in order: gaps={gaps} \
         dups={dups} out_of_order={ooo} missing={missing} wrong_sequence={wrong_seq} \
         incomplete_watchers={incomplete}{}",
        a.rate,
        max_lag.as_secs_f64() * 1000.0,
        wh.value_at_quantile(0.5) as f64 / 1000.0,
        wh.value_at_quantile(0.99) as f64 / 1000.0,
        errors
            .first()
            .map(|e| format!("; {} watcher error(s), first: {e}", errors.len()))
            .unwrap_or_default()
    );
    rss.finish(&mut r);
    Ok(r)
}
