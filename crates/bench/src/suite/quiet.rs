//! Telling the benchmark's own CPU use from the rest of the machine's.
//!
//! On a shared 2-core machine a compiler started by someone else halves the
//! figures of whatever runs meanwhile. The suite therefore measures, for
//! every run, how much of the machine was used by processes that are not its
//! own (the suite's descendants: backends, daemons, nginx, the generator),
//! waits for a quiet machine before each run, and repeats a run that was
//! disturbed. The share is reported with every figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc` CPU times.
const HZ: f64 = 100.0;

/// CPU counters at one instant, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    busy: u64,
    ours: u64,
}

fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: interrupt time is left
    // out, as it is not charged to any process (our loopback traffic's
    // softirq work would otherwise count as someone else's).
    [0usize, 1, 2, 7].iter().filter_map(|&i| v.get(i)).sum()
}

/// utime + stime of every descendant of this process (threads included).
fn our_ticks() -> u64 {
    let me = std::process::id();
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut ticks: HashMap<u32, u64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        parent.insert(pid, num(1) as u32);
        ticks.insert(pid, num(11) + num(12));
    }
    let is_ours = |mut pid: u32| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&p) if p == me => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    ticks
        .iter()
        .filter(|(pid, _)| **pid == me || is_ours(**pid))
        .map(|(_, t)| t)
        .sum()
}

/// The counters now.
pub(crate) fn sample() -> CpuSample {
    CpuSample {
        at: Instant::now(),
        busy: machine_busy_ticks(),
        ours: our_ticks(),
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
