//! What the bench reads about other processes from `/proc`: CPU time and
//! resident memory of the server under test (and RabbitMQ's `beam.smp`,
//! kept apart), so costs are per delivery and per connection rather than
//! guessed from wall-clock time.

use std::fs;

/// CPU time a process has used, in seconds, all threads together.
///
/// Sums each thread's `schedstat` (nanoseconds on a CPU) because `stat`'s
/// utime+stime tick at 10 ms, too coarse for a sub-second run; falls back to
/// `stat` where the kernel keeps no schedstat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let mut total_ns: u64 = 0;
    let mut found = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Some(ns) = fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                total_ns += ns;
                found = true;
            }
        }
    }
    if found {
        return Some(total_ns as f64 / 1e9);
    }
    stat_cpu_seconds(pid)
}

/// utime + stime from `/proc/PID/stat`, at USER_HZ = 100 (fixed on Linux).
fn stat_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Resident memory in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The pid of a running RabbitMQ node (`beam.smp`), if exactly one runs.
pub fn find_beam() -> Option<u32> {
    let mut found = None;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "beam.smp" {
            if found.is_some() {
                return None;
            }
            found = Some(pid);
        }
    }
    found
}

/// Sums a figure over several processes; `None` if any is unreadable.
pub fn sum<F: Fn(u32) -> Option<f64>>(pids: &[u32], f: F) -> Option<f64> {
    pids.iter().map(|&pid| f(pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(stat_cpu_seconds(me).is_some());
        assert!(rss_kib(me).unwrap_or(0) > 0);
    }
}
