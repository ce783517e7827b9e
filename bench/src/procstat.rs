//! Memory and CPU time of a process, from /proc (Linux only).

use anyhow::{Context, bail};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    /// Resident set size now.
    pub rss: u64,
    /// Peak resident set size.
    pub hwm: u64,
    /// User + system CPU time so far.
    pub cpu: Duration,
}

/// Reads `/proc/<pid>/status` (VmRSS, VmHWM) and `/proc/<pid>/stat`
/// (utime + stime, in clock ticks of `clk_tck` per second).
pub fn read(pid: u32, clk_tck: u64) -> anyhow::Result<ProcStat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the process alive?)"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing from /proc/{pid}/status"))?;
        let n: u64 = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("malformed {key} line"))?
            .parse()
            .with_context(|| format!("malformed {key} line"))?;
        Ok(n * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ProcStat {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
        cpu: cpu_of_stat(&stat, clk_tck)?,
    })
}

/// utime and stime are fields 14 and 15; the command name (field 2) may
/// contain spaces, so count from the closing parenthesis.
fn cpu_of_stat(stat: &str, clk_tck: u64) -> anyhow::Result<Duration> {
    let Some(close) = stat.rfind(')') else {
        bail!("malformed /proc stat line");
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()
            .context("malformed /proc stat field")
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_millis(ticks * 1000 / clk_tck.max(1)))
}

/// The soft limit on open files of this process, from /proc/self/limits.
pub fn open_files_limit() -> anyhow::Result<u64> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no 'Max open files' in /proc/self/limits")?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .context("malformed 'Max open files' line")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    soft.parse().context("malformed 'Max open files' line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command() {
        let line = "1234 (gantry cp) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_of_stat(line, 100).unwrap(), Duration::from_millis(3000));
    }

    #[test]
    fn own_process() {
        let me = read(std::process::id(), 100).unwrap();
        assert!(me.rss > 0 && me.hwm >= me.rss);
        assert!(open_files_limit().unwrap() > 0);
    }
}
