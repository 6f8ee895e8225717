//! The figures of one load run: a human table and one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::client::CallKind;

/// What one load run measured. Serialized as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The target (`unix:/path`, `[::1]:port`).
    pub target: String,
    /// The gRPC method.
    pub method: String,
    /// The kind of call.
    pub kind: CallKind,
    /// Payload bytes per message.
    pub payload: usize,
    /// Messages per call (server streaming, bidi).
    pub count: u32,
    /// Concurrent calls.
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    pub connections: usize,
    /// Request metadata sent with every call (`key=value`).
    pub metadata: Vec<String>,
    /// Warm-up before measuring, in seconds.
    pub warmup_s: f64,
    /// Length of the measurement window, in seconds.
    pub seconds: f64,
    /// Successful calls in the window.
    pub calls: u64,
    /// Successful calls per second.
    pub calls_per_s: f64,
    /// Median latency of successful calls, in microseconds.
    pub p50_us: f64,
    /// 90th percentile latency, in microseconds.
    pub p90_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// Largest latency, in microseconds.
    pub max_us: f64,
    /// Mean latency, in microseconds.
    pub mean_us: f64,
    /// Response bytes (gRPC frames) received in the window.
    pub bytes: u64,
    /// Response throughput, in MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Failed calls over the whole run (warm-up included).
    pub errors: u64,
    /// Failed calls by gRPC status name (`UNAVAILABLE`) or failure kind
    /// (`transport`, `http-503`, `no-grpc-status`, `timeout`).
    pub errors_by_status: BTreeMap<String, u64>,
    /// The first message seen for each kind of error.
    pub first_errors: BTreeMap<String, String>,
    /// CPU time the generator process used over its whole life (user +
    /// system), in seconds; lets a suite tell the generator's share of the
    /// machine from everything else's.
    #[serde(default)]
    pub generator_cpu_s: f64,
}

impl Report {
    /// The machine-readable line.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let what = match self.kind {
            CallKind::Unary => format!("unary, {} B payload", self.payload),
            CallKind::ServerStream => {
                format!("server streaming, {} x {} B", self.count, self.payload)
            }
            CallKind::Bidi => format!("bidi echo, {} x {} B", self.count, self.payload),
        };
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<12} {v}");
        };
        row(&mut out, "target", self.target.clone());
        row(&mut out, "method", format!("{} ({what})", self.method));
        if !self.metadata.is_empty() {
            row(&mut out, "metadata", self.metadata.join(", "));
        }
        row(
            &mut out,
            "load",
            format!(
                "{} concurrent calls on {} connection(s), {:.1} s after {:.1} s warm-up",
                self.concurrency, self.connections, self.seconds, self.warmup_s
            ),
        );
        row(
            &mut out,
            "calls",
            format!(
                "{} ok, {:.1} calls/s, {} error(s)",
                self.calls, self.calls_per_s, self.errors
            ),
        );
        row(
            &mut out,
            "latency",
            format!(
                "p50 {}  p90 {}  p99 {}  max {}  (mean {})",
                micros(self.p50_us),
                micros(self.p90_us),
                micros(self.p99_us),
                micros(self.max_us),
                micros(self.mean_us)
            ),
        );
        row(
            &mut out,
            "throughput",
            format!("{:.1} MB/s received", self.mb_per_s),
        );
        for (key, n) in &self.errors_by_status {
            let first = self.first_errors.get(key).map_or("", String::as_str);
            row(&mut out, "error", format!("{key}: {n} (first: {first:?})"));
        }
        out
    }
}

/// `85.3 µs`, `1.24 ms`, `2.10 s`.
pub fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}
