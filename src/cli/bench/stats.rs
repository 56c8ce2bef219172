//! Shared by the workloads: latency histograms, one report row per result (a table line
//! or a JSON object), the progress bar, and the server's resident memory.

use super::Ctx;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A latency histogram in nanoseconds: 1 ns to 10 minutes, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records an elapsed time (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).max(1));
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// One result: what `--json` prints as one object, and the table prints as one row.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub target: String,
    /// What the server's acknowledgements said (AppendResponse.durability).
    pub durability: String,
    pub workload: String,
    pub param: String,
    pub ops: u64,
    pub wall_s: f64,
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// The server's VmRSS at the end of the run and the peak sampled during it (KiB), with
    /// --server-pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_peak_kib: Option<u64>,
    /// Workload-specific figures (watch: gaps, dups, writer rate; snapshot: bytes; ...).
    pub details: serde_json::Map<String, serde_json::Value>,
    pub notes: String,
}

impl Report {
    pub fn new(ctx: &Ctx, workload: &str, param: String) -> Self {
        Report {
            target: format!("converge-ledger {}", ctx.url),
            durability: ctx.durability(),
            workload: workload.into(),
            param,
            ops: 0,
            wall_s: 0.0,
            ops_per_s: 0.0,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            p999_us: f64::NAN,
            max_us: f64::NAN,
            errors: 0,
            server_rss_kib: None,
            server_rss_peak_kib: None,
            details: serde_json::Map::new(),
            notes: String::new(),
        }
    }

    /// Throughput over `wall`, percentiles from `h`.
    pub fn fill(&mut self, h: &Histogram<u64>, ops: u64, wall: Duration) {
        self.ops = ops;
        self.wall_s = wall.as_secs_f64();
        self.ops_per_s = ops as f64 / wall.as_secs_f64().max(1e-9);
        self.p50_us = us(h, 0.50);
        self.p99_us = us(h, 0.99);
        self.p999_us = us(h, 0.999);
        self.max_us = if h.is_empty() {
            f64::NAN
        } else {
            h.max() as f64 / 1000.0
        };
    }

    pub fn detail(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.details.insert(name.into(), value.into());
    }

    fn row(&self) -> String {
        let mut notes = self.notes.clone();
        if let (Some(rss), Some(peak)) = (self.server_rss_kib, self.server_rss_peak_kib) {
            notes.push_str(&format!(
                "; server RSS {:.1} MiB (peak {:.1} MiB)",
                rss as f64 / 1024.0,
                peak as f64 / 1024.0
            ));
        }
        format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            self.workload,
            self.param,
            self.durability,
            self.ops,
            self.ops_per_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors,
            notes
        )
    }

    /// Prints the result on stdout: a table row, or one JSON object with `--json`.
    pub fn emit(&self, ctx: &Ctx) {
        if ctx.json {
            println!(
                "{}",
                serde_json::to_string(self).expect("a report serializes")
            );
        } else {
            println!("{}", self.row());
        }
    }
}

pub const TABLE_HEADER: &str = "| workload | param | durability | ops | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | notes |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// A progress bar on stderr when it is a terminal; otherwise nothing is drawn.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(ctx: &Ctx, what: &str, total: u64) -> Self {
        let bar = if std::io::stderr().is_terminal() && !ctx.json {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
                )
                .expect("valid progress template"),
            );
            bar.set_message(what.to_owned());
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The VmRSS of a process in KiB, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the server's RSS every 100 ms while a run lasts, keeping the peak.
pub struct RssSampler {
    pid: Option<u32>,
    peak: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(ctx: &Ctx) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let task = ctx.server_pid.map(|pid| {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        RssSampler {
            pid: ctx.server_pid,
            peak,
            task,
        }
    }

    /// Stops sampling and writes the final and peak RSS into the report.
    pub fn finish(mut self, report: &mut Report) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(pid) = self.pid {
            let now = rss_kib(pid);
            if let Some(kib) = now {
                self.peak.fetch_max(kib, Ordering::Relaxed);
            }
            report.server_rss_kib = now;
            report.server_rss_peak_kib = Some(self.peak.load(Ordering::Relaxed));
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
