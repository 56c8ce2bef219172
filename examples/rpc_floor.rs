//! The cost of a unary gRPC call with nothing behind it, on this machine: closed-loop
//! `grpc.health.v1.Health/Check` calls against a running server, which answers them from
//! memory (tonic-health) without touching an actor or storage. The same client library
//! (tonic), connection layout and closed loop as `converge-ledger bench append`, so the
//! difference between the two is what an append adds on top of the transport.
//!
//! ```text
//! cargo build --release --example rpc_floor
//! target/release/examples/rpc_floor http://127.0.0.1:50051 1,16 20000 [SERVER_PID]
//! ```
//! Prints calls/s and p50/p99 latency per concurrency, and with SERVER_PID the server's
//! CPU time (utime + stime from /proc) per call.

use std::time::{Duration, Instant};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let concurrency: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,16".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let calls: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let server_pid: Option<u32> = args.next().map(|a| a.parse()).transpose()?;

    for &c in &concurrency {
        let mut clients = Vec::with_capacity(c);
        for _ in 0..c {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())?
                .connect()
                .await?;
            clients.push(HealthClient::new(channel));
        }
        let per_client = calls.div_ceil(c);
        // Warm-up: every connection makes a few calls first.
        for client in &mut clients {
            for _ in 0..50 {
                client.check(HealthCheckRequest::default()).await?;
            }
        }
        let cpu_before = server_pid.map(server_cpu).transpose()?;
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        client.check(HealthCheckRequest::default()).await?;
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, tonic::Status>(latencies)
                })
            })
            .collect();
        let mut all: Vec<Duration> = Vec::with_capacity(per_client * c);
        for t in tasks {
            all.extend(t.await??);
        }
        let elapsed = started.elapsed();
        let cpu_after = server_pid.map(server_cpu).transpose()?;
        all.sort();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        let mut line = format!(
            "health-check clients={c}: {} calls, {:.0} calls/s, p50 {} µs, p99 {} µs",
            all.len(),
            all.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_micros(),
            pct(0.99).as_micros()
        );
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            line += &format!(
                ", server CPU {:.0} µs/call",
                (b - a).as_secs_f64() * 1e6 / all.len() as f64
            );
        }
        println!("{line}");
    }
    Ok(())
}

/// utime + stime of a process, from /proc/PID/stat (Linux; clock ticks of 1/100 s).
fn server_cpu(pid: u32) -> Result<Duration, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or("malformed /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}
