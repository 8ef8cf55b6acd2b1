//! CPU accounting and placement for the benchmarks: CPU seconds per process from `/proc`, and pinning whole
//! processes (every thread) onto some CPUs for a while, as a deployment that gives a service machines of its own
//! would.

use std::collections::HashMap;

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// CPU seconds (user + system) process `pid` has used so far.
pub fn seconds(pid: u32) -> Option<f64> {
    Some(stat(&format!("/proc/{pid}/stat"))?.1)
}

/// The command name and CPU seconds (user + system) in a `/proc/.../stat` file.
fn stat(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((name, ticks / 100.0))
}

/// CPU seconds the hypervisor took from this machine's CPUs so far (`steal` in `/proc/stat`, all CPUs).
pub fn stolen_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let total = stat.lines().find(|l| l.starts_with("cpu "));
    total.and_then(|l| l.split_whitespace().nth(8)?.parse::<f64>().ok()).map_or(0.0, |ticks| ticks / 100.0)
}

/// CPU seconds each thread of process `pid` has used so far, by thread name, summed over threads of one name
/// (`argon2-0`, `tokio-runtime-w`, ...).
pub fn seconds_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    for (name, seconds) in threads(pid).into_iter().filter_map(|tid| stat(&format!("/proc/{pid}/task/{tid}/stat"))) {
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += seconds,
            None => by_name.push((name, seconds)),
        }
    }
    by_name
}

/// The processes whose command name is `comm` (`postgres`, `beam.smp`).
pub fn processes_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Which processes to move.
#[derive(Debug, Clone)]
pub enum Processes {
    /// One process, by id.
    Id(u32),
    /// Every process with this command name, including those started while pinned (a server's new backends).
    Named(&'static str),
}

impl Processes {
    fn ids(&self) -> Vec<u32> {
        match self {
            Self::Id(pid) => vec![*pid],
            Self::Named(comm) => processes_named(comm),
        }
    }
}

/// A CPU set of exactly `cpus`.
fn set_of(cpus: &[usize]) -> anyhow::Result<CpuSet> {
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu)?;
    }
    Ok(set)
}

/// Every thread of some processes, held on some CPUs until dropped. Dropping gives each thread back the CPUs it
/// had, and threads that appeared meanwhile (new backends of a pinned server) every online CPU.
#[derive(Debug)]
pub struct Pinned {
    processes: Vec<Processes>,
    saved: HashMap<i32, CpuSet>,
    everywhere: CpuSet,
}

impl Pinned {
    /// Moves every thread of `processes` onto `cpus`.
    pub fn pin(processes: Vec<Processes>, cpus: &[usize]) -> anyhow::Result<Self> {
        let online = std::thread::available_parallelism().map_or(1, usize::from);
        let mut pinned =
            Self { processes, saved: HashMap::new(), everywhere: set_of(&(0..online).collect::<Vec<_>>())? };
        let target = set_of(cpus)?;
        for pid in pinned.processes.iter().flat_map(Processes::ids) {
            for tid in threads(pid) {
                let thread = Pid::from_raw(tid);
                // A thread that ended between listing and pinning needs nothing.
                let Ok(before) = sched_getaffinity(thread) else { continue };
                if sched_setaffinity(thread, &target).is_ok() {
                    pinned.saved.insert(tid, before);
                }
            }
        }
        anyhow::ensure!(!pinned.saved.is_empty(), "no thread of {:?} could be pinned", pinned.processes);
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in self.processes.iter().flat_map(Processes::ids) {
            for tid in threads(pid) {
                let restore = self.saved.get(&tid).unwrap_or(&self.everywhere);
                let _ = sched_setaffinity(Pid::from_raw(tid), restore);
            }
        }
    }
}

/// Pins the calling thread onto `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> anyhow::Result<()> {
    sched_setaffinity(Pid::from_raw(0), &set_of(cpus)?)?;
    Ok(())
}
