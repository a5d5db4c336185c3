//! The standard Prometheus `process_*` series (CPU seconds, resident
//! memory, open and maximum file descriptors, start time), read from
//! `/proc/self` when `/metrics` is scraped, on the `http` thread. Parsing
//! is separate from reading, so it is tested on fixed text.

use std::fmt::Write as _;

/// Clock ticks per second of the times in `/proc/*/stat` (`USER_HZ`, 100
/// on every Linux architecture's user ABI; what Prometheus's own client
/// libraries assume).
const USER_HZ: f64 = 100.0;

/// What the process uses now.
#[derive(Debug, PartialEq)]
pub struct Usage {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Read this process's usage from `/proc`.
///
/// # Errors
/// A `/proc` file is missing or not in the expected form.
pub fn read() -> std::io::Result<Usage> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected {what}"));
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (cpu_ticks, start_ticks) = parse_stat(&stat).ok_or_else(|| bad("/proc/self/stat"))?;
    let boot = parse_btime(&std::fs::read_to_string("/proc/stat")?).ok_or_else(|| bad("/proc/stat"))?;
    let resident_bytes =
        parse_rss(&std::fs::read_to_string("/proc/self/status")?).ok_or_else(|| bad("/proc/self/status"))?;
    let max_fds =
        parse_max_fds(&std::fs::read_to_string("/proc/self/limits")?).ok_or_else(|| bad("/proc/self/limits"))?;
    Ok(Usage {
        cpu_seconds: cpu_ticks as f64 / USER_HZ,
        resident_bytes,
        open_fds: std::fs::read_dir("/proc/self/fd")?.count() as u64,
        max_fds,
        start_time_seconds: boot as f64 + start_ticks as f64 / USER_HZ,
    })
}

/// Append the `process_*` families.
pub fn metrics(out: &mut String, u: &Usage) {
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", &u.cpu_seconds);
    family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", &u.resident_bytes);
    family("process_open_fds", "gauge", "Number of open file descriptors.", &u.open_fds);
    if let Some(max) = u.max_fds {
        family("process_max_fds", "gauge", "Maximum number of open file descriptors.", &max);
    }
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        &u.start_time_seconds,
    );
}

/// `(utime + stime, starttime)` in clock ticks from `/proc/PID/stat`. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// Boot time, seconds since the epoch, from `/proc/stat`'s `btime` line.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime")?.trim().parse().ok())
}

/// `VmRSS` of `/proc/PID/status`, bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    Some(kb.parse::<u64>().ok()? * 1024)
}

/// The soft `Max open files` of `/proc/PID/limits`: `Some(None)` when
/// unlimited, `None` when the line is missing or unreadable.
fn parse_max_fds(limits: &str) -> Option<Option<u64>> {
    let soft = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?.split_whitespace().next()?;
    match soft {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "4242 (tick cast) (x)) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((225, 123_456)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_btime("cpu 1 2 3\nintr 5\nbtime 1764979200\nprocesses 9\n"), Some(1_764_979_200));
        assert_eq!(parse_rss("Name:\ttickcast\nVmRSS:\t   12345 kB\nThreads: 4\n"), Some(12_345 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(Some(1_048_576)));
        assert_eq!(parse_max_fds("Max open files  unlimited  unlimited  files\n"), Some(None));
    }

    #[test]
    fn reads_this_process() {
        let u = read().expect("/proc/self");
        assert!(u.resident_bytes > 0 && u.open_fds >= 3, "{u:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(u.start_time_seconds > now - 3600.0 && u.start_time_seconds <= now + 1.0, "{u:?}");
    }
}
