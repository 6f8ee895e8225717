//! Telling the benchmark's own CPU use from the rest of the machine's.
//!
//! On a shared 2-core machine a compiler started by someone else halves the
//! figures of whatever runs meanwhile. The suite therefore measures, for
//! every run, how much of the machine was used by processes that are not its
//! own (the suite's descendants: backends, daemons, nginx, the generator),
//! waits for a quiet machine before each run, and repeats a run that was
//! disturbed. The share is reported with every figure.

use std::time::{Duration, Instant};

use super::sysinfo::{self, CLOCK_TICKS as HZ};

/// CPU counters at one instant, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    busy: u64,
    idle: u64,
    ours: u64,
}

/// The machine's busy and idle clock ticks.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: interrupt time is left
    // out, as it is not charged to any process (our loopback traffic's
    // softirq work would otherwise count as someone else's).
    let sum = |fields: &[usize]| fields.iter().filter_map(|&i| v.get(i)).sum();
    (sum(&[0, 1, 2, 7]), sum(&[3, 4]))
}

/// The counters now.
pub(crate) fn sample() -> CpuSample {
    let (busy, idle) = machine_ticks();
    CpuSample {
        at: Instant::now(),
        busy,
        idle,
        ours: sysinfo::tree_ticks(&sysinfo::processes(), std::process::id()),
    }
}

/// Share of the machine's CPU capacity used by other processes between
/// `a` and `b`; `extra_ours_s` is CPU of our own processes that ended in
/// between (the load generator), in seconds.
pub(crate) fn foreign_share(a: CpuSample, b: CpuSample, extra_ours_s: f64) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let elapsed = (b.at - a.at).as_secs_f64();
    if elapsed <= 0.0 {
        return 0.0;
    }
    let busy = b.busy.saturating_sub(a.busy) as f64 / HZ;
    let ours = b.ours.saturating_sub(a.ours) as f64 / HZ + extra_ours_s;
    ((busy - ours) / (elapsed * cpus)).clamp(0.0, 1.0)
}

/// Share of the machine's CPU capacity left idle between `a` and `b`: on a
/// machine the benchmark has to itself, the capacity its processes could
/// not use because each was waiting for another.
pub(crate) fn idle_share(a: CpuSample, b: CpuSample) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let elapsed = (b.at - a.at).as_secs_f64();
    if elapsed <= 0.0 {
        return 0.0;
    }
    let idle = b.idle.saturating_sub(a.idle) as f64 / HZ;
    (idle / (elapsed * cpus)).clamp(0.0, 1.0)
}

/// Waits (at most `bound`) until other processes use less than `limit` of
/// the machine over half a second; returns the last share seen.
pub(crate) fn wait_quiet(limit: f64, bound: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let a = sample();
        std::thread::sleep(Duration::from_millis(500));
        let share = foreign_share(a, sample(), 0.0);
        if share < limit || started.elapsed() >= bound {
            return share;
        }
    }
}
