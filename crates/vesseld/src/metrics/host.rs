//! The host's own use, sampled into the history beside the instances' (key [`HOST_KEY`]): cpu
//! time of all cores (`/proc/stat`), memory in use (`/proc/meminfo`: total less available),
//! bytes read and written by the disks (`/proc/diskstats`) and carried by the host's network
//! interfaces but loopback (`/proc/net/dev`). What the planner compares instances with.

use vessel_api::HistoryPoint;

/// The history's key of the host (no instance name holds '@').
pub const HOST_KEY: &str = "@host";

/// Busy cpu seconds of all cores from `/proc/stat`'s first line (user, nice, system, irq,
/// softirq, steal; idle and iowait left out), in clock ticks of `hz`.
pub fn cpu_seconds(stat: &str, hz: f64) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum::<f64>();
    Some(busy / hz)
}

/// Bytes of memory in use: MemTotal less MemAvailable.
pub fn memory_used(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

/// Bytes read and written by the devices of `/proc/diskstats` that `whole` takes (whole
/// disks: partitions would count their disk twice), in sectors of 512 bytes.
pub fn disk_bytes(diskstats: &str, whole: impl Fn(&str) -> bool) -> u64 {
    diskstats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            if !whole(name) {
                return None;
            }
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some((read + written) * 512)
        })
        .sum()
}

/// Whether `name` is a whole disk of this host: listed in /sys/block, and not a loop, ram
/// or device-mapper device (what those carry lands on a disk too).
fn is_whole_disk(name: &str) -> bool {
    !["loop", "ram", "dm-", "zram", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
        && std::path::Path::new("/sys/block").join(name).exists()
}

/// Bytes received and sent by every interface of `/proc/net/dev` but loopback.
pub fn network_bytes(netdev: &str) -> u64 {
    netdev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.first()? + f.get(8)?)
        })
        .sum()
}

/// One sample of the host at `time`.
pub fn sample(time: i64) -> HistoryPoint {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    // SAFETY: sysconf takes a plain integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    HistoryPoint {
        time,
        cpu_seconds: cpu_seconds(&read("/proc/stat"), if hz > 0 { hz as f64 } else { 100.0 })
            .unwrap_or(0.0),
        memory_bytes: memory_used(&read("/proc/meminfo")).unwrap_or(0),
        disk_bytes: disk_bytes(&read("/proc/diskstats"), is_whole_disk),
        network_bytes: network_bytes(&read("/proc/net/dev")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_the_kernel_writes_them() {
        let stat = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(cpu_seconds(stat, 100.0), Some(1.7));
        let mem = "MemTotal:        2048 kB\nMemFree:  100 kB\nMemAvailable:     1024 kB\n";
        assert_eq!(memory_used(mem), Some(1024 * 1024));
        let disks = "   8       0 sda 10 0 100 0 20 0 200 0 0 0 0\n   8       1 sda1 10 0 100 0 20 0 200 0 0 0 0\n   7       0 loop0 1 0 999 0 1 0 999 0 0 0 0\n 259 0 nvme0n1 1 0 8 0 1 0 8 0 0 0 0\n 259 1 nvme0n1p1 1 0 8 0 1 0 8 0 0 0 0\n";
        let whole = |n: &str| ["sda", "nvme0n1"].contains(&n);
        assert_eq!(disk_bytes(disks, whole), (100 + 200 + 8 + 8) * 512);
        let net = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        assert_eq!(network_bytes(net), 3000);
    }
}
