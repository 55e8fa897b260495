//! A small HTTP load generator for `scripts/bench-gateway.sh`: fixed-rate (open loop) or
//! closed-loop POSTs, a body that is different for every request, latencies as percentiles.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:18080/v1/chat/completions \
//!   --rate 2000 --duration-s 15 --connections 16 -H 'authorization: Bearer TOKEN' \
//!   --body '{"model":"mock/bench","messages":[{"role":"user","content":"Question {n}"}]}' \
//!   --count-header x-uag-cache --out result.json
//! ```
//!
//! Why not oha: oha sends one fixed body, so a response cache would answer everything after
//! the first request. Here every `{n}` in the body becomes a number unique to the request (and
//! to the run), so each request takes the cache's miss path.
//!
//! Open loop: a pacing thread (OS sleep, far finer than tokio's 1 ms timer) releases request `i`
//! at `start + i / rate`; `--connections` workers take released requests in order. Latency is
//! measured from the scheduled time, not from when a worker got to it, so a server that falls
//! behind is charged for the queue it causes (no coordinated omission). Requests still queued
//! at the end count as `backlog`. Closed loop (`--rate 0`): every connection sends its next
//! request when the previous answer arrived, for the highest rate the server sustains.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tokio::sync::{Mutex, mpsc};

#[derive(Parser, Debug)]
#[command(about = "Fixed-rate or closed-loop HTTP POST load with unique bodies")]
struct Args {
    /// The URL to POST to.
    #[arg(long)]
    url: String,
    /// Requests per second (open loop); 0: closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 15.0)]
    duration_s: f64,
    /// Concurrent connections (workers).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// JSON body; every `{n}` becomes a number unique to the request.
    #[arg(long)]
    body: String,
    /// Per-request timeout in seconds (counted as an error).
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// Runtime threads of the load generator (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Count the values of this response header (e.g. `x-uag-cache`).
    #[arg(long)]
    count_header: Option<String>,
    /// Write the result as JSON here (it is printed either way).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Default)]
struct Record {
    /// Nanoseconds from the scheduled time (open loop) or the send (closed loop) to the end of the body.
    latency: Vec<u64>,
    /// Nanoseconds from the send to the end of the body.
    service: Vec<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    header_values: BTreeMap<String, u64>,
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .expect("tokio runtime");
    let result = runtime.block_on(run(&args));
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, text).expect("write --out");
    }
}

async fn run(args: &Args) -> serde_json::Value {
    let mut headers = HeaderMap::new();
    headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for h in &args.headers {
        let (name, value) = h.split_once(':').unwrap_or_else(|| panic!("--header `{h}` is not `Name: value`"));
        headers.insert(HeaderName::from_bytes(name.trim().as_bytes()).unwrap(), HeaderValue::from_str(value.trim()).unwrap());
    }
    let client = uag_gateway::crypto::http_client_builder()
        .http1_only()
        .default_headers(headers)
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs_f64(args.timeout_s))
        .build()
        .unwrap();
    // Unique across runs, so a repetition never hits answers an earlier one stored.
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    let counter = Arc::new(AtomicU64::new(0));
    let count_header = args.count_header.as_deref().map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap());
    let duration = Duration::from_secs_f64(args.duration_s);
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration;
    let stop = Arc::new(AtomicBool::new(false));
    // Released requests a worker picked up too late to send (past the end of the run).
    let late = Arc::new(AtomicU64::new(0));

    // Open loop: the pacing thread releases scheduled instants into the queue.
    let (queue, scheduled_total) = if args.rate > 0 {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let rate = f64::from(args.rate);
        let total = (duration.as_secs_f64() * rate).round() as u64;
        let pacer = std::thread::spawn(move || {
            for i in 0..total {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send(at).is_err() {
                    break;
                }
            }
        });
        (Some((Arc::new(Mutex::new(rx)), pacer)), total)
    } else {
        (None, 0)
    };

    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let client = client.clone();
        let url = args.url.clone();
        let body = args.body.clone();
        let counter = Arc::clone(&counter);
        let count_header = count_header.clone();
        let rx = queue.as_ref().map(|(rx, _)| Arc::clone(rx));
        let stop = Arc::clone(&stop);
        let late = Arc::clone(&late);
        workers.push(tokio::spawn(async move {
            let mut record = Record::default();
            tokio::time::sleep_until(start.into()).await;
            loop {
                let scheduled = match &rx {
                    Some(rx) => {
                        let next = rx.lock().await.recv().await;
                        match next {
                            Some(at) if Instant::now() < deadline + Duration::from_millis(50) => Some(at),
                            // Released before the end but not sent by then: backlog.
                            Some(_) => {
                                late.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            None => break,
                        }
                    }
                    None if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => None,
                    None => break,
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let payload = body.replace("{n}", &format!("{nonce}-{n}"));
                let sent = Instant::now();
                let outcome = match client.post(&url).body(payload).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let value = count_header
                            .as_ref()
                            .map(|h| response.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_owned());
                        match response.bytes().await {
                            Ok(_) if status.as_u16() == 200 => Ok(value),
                            Ok(_) => Err(format!("status {}", status.as_u16())),
                            Err(e) => Err(classify(&e)),
                        }
                    }
                    Err(e) => Err(classify(&e)),
                };
                let done = Instant::now();
                match outcome {
                    Ok(value) => {
                        record.ok += 1;
                        record.latency.push(nanos(done - scheduled.unwrap_or(sent)));
                        record.service.push(nanos(done - sent));
                        if let Some(v) = value {
                            *record.header_values.entry(v).or_default() += 1;
                        }
                    }
                    Err(kind) => *record.errors.entry(kind).or_default() += 1,
                }
            }
            record
        }));
    }

    let mut all = Record::default();
    for w in workers {
        let r = w.await.unwrap();
        all.latency.extend(r.latency);
        all.service.extend(r.service);
        all.ok += r.ok;
        for (k, v) in r.errors {
            *all.errors.entry(k).or_default() += v;
        }
        for (k, v) in r.header_values {
            *all.header_values.entry(k).or_default() += v;
        }
    }
    let finished = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut backlog = late.load(Ordering::Relaxed);
    if let Some((rx, pacer)) = queue {
        let mut rx = rx.lock().await;
        rx.close();
        while rx.try_recv().is_ok() {
            backlog += 1;
        }
        drop(rx);
        pacer.join().unwrap();
    }
    let errors: u64 = all.errors.values().sum();
    let sent = all.ok + errors;
    // Open loop: the offered schedule's length; closed loop: until the last answer.
    let elapsed = if args.rate > 0 { duration.as_secs_f64() } else { (finished - start).as_secs_f64() };
    let scheduled = if args.rate > 0 { scheduled_total } else { sent };
    let sustained = errors == 0 && backlog == 0 && sent == scheduled;
    json!({
        "url": args.url,
        "rate": args.rate,
        "duration_s": args.duration_s,
        "connections": args.connections,
        "scheduled": scheduled,
        "sent": sent,
        "ok": all.ok,
        "errors": all.errors,
        "error_count": errors,
        "backlog": backlog,
        "sustained": sustained,
        "ok_per_s": all.ok as f64 / elapsed,
        "latency_ms": summary(&mut all.latency),
        "service_ms": summary(&mut all.service),
        "header_values": all.header_values,
    })
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn summary(values: &mut [u64]) -> serde_json::Value {
    if values.is_empty() {
        return json!(null);
    }
    values.sort_unstable();
    let at = |q: f64| {
        let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[i] as f64 / 1e6
    };
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64 / 1e6;
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999), "max": at(1.0), "mean": mean, "count": values.len()})
}
