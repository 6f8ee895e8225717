//! A load run: N concurrent calls over M HTTP/2 connections, for a fixed
//! duration after a warm-up or for a fixed number of calls.
//!
//! Each of the N workers owns its statistics (an HDR histogram of
//! nanoseconds, counters, errors), so the hot loop shares nothing but the
//! connection; they are merged once at the end. Worker `i` uses connection
//! `i % M`.
//!
//! Duration mode counts calls that complete inside the window and bytes that
//! arrive inside it; calls still running when the window closes are
//! cancelled and not counted. Call-count mode counts the calls started after
//! the warm-up. Errors are counted over the whole run, warm-up included, so
//! that none goes unseen.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::client::{self, ByteMeter, CallError, CallKind, CallSpec, ConnSettings, Connection};
use crate::report::Report;
use switchyard_engine::Address;

/// When a run stops measuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (after the warm-up).
    Duration(Duration),
    /// After this many calls (after the warm-up).
    Calls(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where.
    pub target: Address,
    /// Which kind of call.
    pub kind: CallKind,
    /// The gRPC method path.
    pub method: String,
    /// Payload bytes per message.
    pub payload: usize,
    /// Messages per call (server streaming, bidi).
    pub count: u32,
    /// Concurrent calls.
    pub concurrency: usize,
    /// HTTP/2 connections shared by the calls.
    pub connections: usize,
    /// Calls made before measuring.
    pub warmup: Duration,
    /// When to stop.
    pub stop: Stop,
    /// Request metadata, e.g. `("machines", "m1")`, repeated keys allowed.
    pub metadata: Vec<(String, String)>,
    /// Bound of one call.
    pub timeout: Duration,
    /// HTTP/2 settings.
    pub conn: ConnSettings,
}

impl LoadSpec {
    /// A unary run of `concurrency` calls on one connection for `duration`.
    pub fn new(target: Address, kind: CallKind, concurrency: usize, duration: Duration) -> Self {
        Self {
            target,
            kind,
            method: kind.default_method().to_owned(),
            payload: 64,
            count: 1,
            concurrency,
            connections: 1,
            warmup: Duration::from_secs(1),
            stop: Stop::Duration(duration),
            metadata: Vec::new(),
            timeout: Duration::from_secs(30),
            conn: ConnSettings::default(),
        }
    }
}

/// Bounds of the latency histogram, in nanoseconds.
const LOWEST_NS: u64 = 100;
const HIGHEST_NS: u64 = 600 * 1_000_000_000;

#[derive(Debug)]
struct WorkerStats {
    latency: Histogram<u32>,
    calls: u64,
    bytes: u64,
    errors: BTreeMap<String, (u64, String)>,
    last_done: Option<Instant>,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3)
                .expect("valid histogram bounds"),
            calls: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            last_done: None,
        }
    }

    fn error(&mut self, err: CallError) {
        self.errors
            .entry(err.key)
            .and_modify(|(n, _)| *n += 1)
            .or_insert((1, err.message));
    }
}

/// Runs `spec` and reports what it measured.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<Report> {
    anyhow::ensure!(spec.concurrency > 0, "concurrency must be at least 1");
    anyhow::ensure!(spec.connections > 0, "connections must be at least 1");
    if let Stop::Calls(0) = spec.stop {
        anyhow::bail!("the call count must be at least 1");
    }
    let call = Arc::new(
        CallSpec::new(
            &spec.target,
            spec.kind,
            &spec.method,
            spec.payload,
            spec.count,
            &spec.metadata,
        )
        .context("invalid request")?,
    );
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        conns.push(client::connect(&spec.target, &spec.conn).await?);
    }
    let started = Instant::now();
    let from = started + spec.warmup;
    let (until, remaining) = match spec.stop {
        Stop::Duration(d) => (Some(from + d), None),
        Stop::Calls(n) => (
            None,
            Some(Arc::new(AtomicI64::new(
                i64::try_from(n).unwrap_or(i64::MAX),
            ))),
        ),
    };
    let mut workers = Vec::with_capacity(spec.concurrency);
    for i in 0..spec.concurrency {
        let conn = conns[i % conns.len()].clone();
        let window = Window {
            from,
            until,
            remaining: remaining.clone(),
            timeout: spec.timeout,
        };
        workers.push(tokio::spawn(worker(conn, call.clone(), window)));
    }
    let mut total = WorkerStats::new();
    for worker in workers {
        let stats = worker.await.context("a load worker panicked")?;
        total
            .latency
            .add(&stats.latency)
            .expect("histograms with the same bounds merge");
        total.calls += stats.calls;
        total.bytes += stats.bytes;
        for (key, (n, message)) in stats.errors {
            total
                .errors
                .entry(key)
                .and_modify(|(m, _)| *m += n)
                .or_insert((n, message));
        }
        total.last_done = total.last_done.max(stats.last_done);
    }
    let end = until.or(total.last_done).unwrap_or(from).max(from);
    let seconds = (end - from).as_secs_f64();
    Ok(report(spec, &total, seconds))
}

fn report(spec: &LoadSpec, total: &WorkerStats, seconds: f64) -> Report {
    let us = |ns: u64| ns as f64 / 1_000.0;
    let per_s = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
    let latency = &total.latency;
    let has = !latency.is_empty();
    let q = |quantile: f64| {
        if has {
            us(latency.value_at_quantile(quantile))
        } else {
            0.0
        }
    };
    Report {
        target: spec.target.to_string(),
        method: spec.method.clone(),
        kind: spec.kind,
        payload: spec.payload,
        count: spec.count,
        concurrency: spec.concurrency,
        connections: spec.connections,
        metadata: spec
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        warmup_s: spec.warmup.as_secs_f64(),
        seconds,
        calls: total.calls,
        calls_per_s: per_s(total.calls as f64),
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: if has { us(latency.max()) } else { 0.0 },
        mean_us: if has { latency.mean() / 1_000.0 } else { 0.0 },
        bytes: total.bytes,
        mb_per_s: per_s(total.bytes as f64) / 1e6,
        errors: total.errors.values().map(|(n, _)| n).sum(),
        errors_by_status: total
            .errors
            .iter()
            .map(|(k, (n, _))| (k.clone(), *n))
            .collect(),
        first_errors: total
            .errors
            .iter()
            .map(|(k, (_, m))| (k.clone(), m.clone()))
            .collect(),
        generator_cpu_s: process_cpu_seconds(),
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat`
/// (0 where there is no /proc).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[derive(Debug, Clone)]
struct Window {
    from: Instant,
    until: Option<Instant>,
    remaining: Option<Arc<AtomicI64>>,
    timeout: Duration,
}

async fn worker(mut conn: Connection, spec: Arc<CallSpec>, window: Window) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let mut meter = ByteMeter::new(window.from, window.until);
    loop {
        let start = Instant::now();
        if window.until.is_some_and(|until| start >= until) {
            break;
        }
        let measured_start = start >= window.from;
        if measured_start
            && let Some(remaining) = &window.remaining
            && remaining.fetch_sub(1, Ordering::Relaxed) <= 0
        {
            break;
        }
        let limit = start + window.timeout;
        let stop_at = window.until.map_or(limit, |until| until.min(limit));
        let result =
            tokio::time::timeout_at(stop_at, client::call(&mut conn, &spec, &mut meter)).await;
        let done = Instant::now();
        match result {
            Err(_) if window.until.is_some_and(|until| until <= limit) => break,
            Err(_) => stats.error(CallError {
                key: "timeout".into(),
                message: format!("no answer within {:?}", window.timeout),
            }),
            Ok(Err(err)) => stats.error(err),
            Ok(Ok(())) => {
                let counted = match window.until {
                    Some(until) => done >= window.from && done <= until,
                    None => measured_start,
                };
                if counted {
                    let ns = u64::try_from((done - start).as_nanos()).unwrap_or(u64::MAX);
                    stats
                        .latency
                        .saturating_record(ns.clamp(LOWEST_NS, HIGHEST_NS));
                    stats.calls += 1;
                    stats.last_done = Some(done);
                }
            }
        }
    }
    stats.bytes = meter.bytes;
    stats
}
