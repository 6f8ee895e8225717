//! What machine the figures were measured on, and when.

use std::collections::HashMap;
use std::process::Command;

/// The machine, as the performance document describes it.
#[derive(Debug, Clone)]
pub(crate) struct MachineDescription {
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) os: String,
    pub(crate) rustc: String,
    pub(crate) date: String,
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// Reads /proc, /etc/os-release, `rustc --version` and the clock.
pub(crate) fn describe() -> MachineDescription {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    MachineDescription {
        cpu,
        cpus,
        memory,
        kernel,
        os,
        rustc: first_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown".into()),
    }
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub(crate) fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// One process of `/proc`: its parent and the CPU it has used (user +
/// system, every thread), in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessCpu {
    pub(crate) pid: u32,
    pub(crate) parent: u32,
    pub(crate) ticks: u64,
}

/// Every process now.
pub(crate) fn processes() -> Vec<ProcessCpu> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the command (which may hold spaces) and its `)`:
            // ppid is field 4 of stat(5), utime and stime 14 and 15.
            let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            Some(ProcessCpu {
                pid,
                parent: num(1) as u32,
                ticks: num(11) + num(12),
            })
        })
        .collect()
}

/// Clock ticks of the processes of `table` that are `root` or descend from it.
pub(crate) fn tree_ticks(table: &[ProcessCpu], root: u32) -> u64 {
    let parent: HashMap<u32, u32> = table.iter().map(|p| (p.pid, p.parent)).collect();
    let in_tree = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    table
        .iter()
        .filter(|p| in_tree(p.pid))
        .map(|p| p.ticks)
        .sum()
}

/// CPU time each of `pids` and its children (nginx's workers) have used,
/// in seconds, from one read of `/proc`; `None` for a process that is gone.
pub(crate) fn trees_cpu_seconds<const N: usize>(pids: [Option<u32>; N]) -> [Option<f64>; N] {
    let table = processes();
    pids.map(|pid| {
        let pid = pid?;
        table
            .iter()
            .any(|p| p.pid == pid)
            .then(|| tree_ticks(&table, pid) as f64 / CLOCK_TICKS)
    })
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux configuration in use.
pub(crate) const CLOCK_TICKS: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_root_and_every_descendant_only() {
        let p = |pid, parent, ticks| ProcessCpu { pid, parent, ticks };
        // 10 → 11 → 12 is the tree; 20 is its sibling under 1, 13 under 20.
        let table = [
            p(1, 0, 1000),
            p(10, 1, 5),
            p(11, 10, 7),
            p(12, 11, 11),
            p(20, 1, 100),
            p(13, 20, 200),
        ];
        assert_eq!(tree_ticks(&table, 10), 5 + 7 + 11);
        assert_eq!(tree_ticks(&table, 11), 7 + 11);
        assert_eq!(tree_ticks(&table, 20), 100 + 200);
        assert_eq!(tree_ticks(&table, 99), 0);
    }

    #[test]
    fn this_process_is_found_with_its_cpu() {
        let table = processes();
        let me = std::process::id();
        assert!(table.iter().any(|p| p.pid == me));
        let [mine, gone, none] = trees_cpu_seconds([Some(me), Some(u32::MAX), None]);
        assert!(mine.is_some());
        assert_eq!(gone, None);
        assert_eq!(none, None);
    }
}
