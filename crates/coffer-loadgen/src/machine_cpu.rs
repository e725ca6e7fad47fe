//! The whole machine's CPU time from `/proc/stat`: how busy a phase kept the cores, and how much
//! CPU each of its requests cost — generator, server, database and kernel together, so a
//! purchase and a no-op call compare by what they cost the machine, not one process.

/// CPU time of all cores since boot, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    /// Time running anything: user, nice, system, irq, softirq.
    busy: u64,
    /// `busy` plus idle and iowait (time stolen by the hypervisor is in neither).
    total: u64,
}

/// The machine's CPU ticks now; `None` where `/proc/stat` cannot be read (not Linux).
pub fn now() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(7)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some(CpuTicks {
        busy,
        total: busy + idle + iowait,
    })
}

/// Clock ticks per second of `/proc/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Percent of the machine's cores busy between two readings.
pub fn busy_percent(start: CpuTicks, end: CpuTicks) -> Option<f64> {
    let total = end.total.checked_sub(start.total)?;
    let busy = end.busy.checked_sub(start.busy)?;
    (total > 0).then(|| 100.0 * busy as f64 / total as f64)
}

/// Microseconds of busy CPU, all cores together, per request between two readings.
pub fn cpu_us_per_request(start: CpuTicks, end: CpuTicks, requests: u64) -> Option<f64> {
    let busy = end.busy.checked_sub(start.busy)?;
    (requests > 0).then(|| busy as f64 / ticks_per_second() * 1e6 / requests as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_and_cost_per_request_come_from_the_tick_deltas() {
        let start = CpuTicks {
            busy: 1_000,
            total: 4_000,
        };
        let end = CpuTicks {
            busy: 1_150,
            total: 4_200,
        };
        assert_eq!(busy_percent(start, end), Some(75.0));
        let per_tick_us = 1e6 / ticks_per_second();
        assert_eq!(cpu_us_per_request(start, end, 150), Some(per_tick_us));
        assert_eq!(cpu_us_per_request(start, end, 0), None);
        assert_eq!(
            busy_percent(end, start),
            None,
            "a reading older than the start"
        );
    }

    #[test]
    fn a_busy_loop_shows_up_as_busy_ticks_of_this_machine() {
        let start = now().expect("/proc/stat on Linux");
        let began = std::time::Instant::now();
        let mut spin = 0u64;
        while began.elapsed() < std::time::Duration::from_millis(200) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let end = now().expect("/proc/stat on Linux");
        let busy_s = (end.busy - start.busy) as f64 / ticks_per_second();
        assert!(
            busy_s >= 0.1,
            "200 ms of spinning counted as {busy_s} s busy"
        );
        assert!(end.total - start.total >= end.busy - start.busy);
    }
}
