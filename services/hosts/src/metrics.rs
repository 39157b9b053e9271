//! A host's load, memory, disks and uptime, read over SSH with one command and parsed here.

use events::host::{DiskUsage, HostMetrics};

/// What is run on the host: `/proc` for load, uptime and memory, `df -P` for the disks.
pub const COMMAND: &str =
    "cat /proc/loadavg /proc/uptime && echo --- && cat /proc/meminfo && echo --- && df -P -k";

/// Parses [`COMMAND`]'s output.
pub fn parse(output: &str) -> Result<HostMetrics, String> {
    let mut parts = output.split("---\n");
    let (Some(head), Some(meminfo), Some(df)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("the metrics output has not its three parts".to_owned());
    };
    let mut lines = head.lines();
    let load: Vec<f64> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("/proc/loadavg: {err}"))?;
    let [load_1m, load_5m, load_15m] = load[..] else {
        return Err("/proc/loadavg has not three load figures".to_owned());
    };
    let uptime: f64 = lines
        .next()
        .and_then(|line| line.split_whitespace().next())
        .ok_or("/proc/uptime is empty")?
        .parse()
        .map_err(|err| format!("/proc/uptime: {err}"))?;
    let kib = |field: &str| {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or(format!("/proc/meminfo has no {field}"))
    };
    let disks = df
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, total, used, _available, _capacity, mount @ ..] = &fields[..] else {
                return None;
            };
            let mount = mount.join(" ");
            // Real file systems only (not tmpfs, proc, overlay and the like), and always `/`.
            (device.starts_with('/') || mount == "/").then_some(())?;
            Some(DiskUsage {
                mount,
                total_bytes: total.parse::<u64>().ok()? * 1024,
                used_bytes: used.parse::<u64>().ok()? * 1024,
            })
        })
        .collect();
    Ok(HostMetrics {
        load_1m,
        load_5m,
        load_15m,
        memory_total_bytes: kib("MemTotal")?,
        memory_available_bytes: kib("MemAvailable")?,
        uptime_secs: uptime as u64,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_host_is_read() {
        let output = "0.52 0.41 0.30 2/345 6789\n98765.43 190000.00\n---\n\
            MemTotal:       16318480 kB\nMemFree:          512000 kB\nMemAvailable:    8159240 kB\n---\n\
            Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
            /dev/sda1         98303940  40000000  53256924      43% /\n\
            tmpfs              1631848         0   1631848       0% /run/user/1000\n\
            /dev/sdb1        960000000 480000000 480000000      50% /mnt/media files\n";
        let metrics = parse(output).unwrap();
        assert_eq!((metrics.load_1m, metrics.load_15m), (0.52, 0.30));
        assert_eq!(metrics.uptime_secs, 98765);
        assert_eq!(metrics.memory_total_bytes, 16318480 * 1024);
        assert_eq!(metrics.memory_available_bytes, 8159240 * 1024);
        let mounts: Vec<&str> = metrics.disks.iter().map(|d| d.mount.as_str()).collect();
        assert_eq!(mounts, ["/", "/mnt/media files"]);
        assert_eq!(metrics.disks[0].used_bytes, 40000000 * 1024);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(parse("hello").is_err());
        let err = parse("x y z\n1\n---\n---\n").unwrap_err();
        assert!(err.contains("loadavg"), "{err}");
        let err = parse("1 2 3 4/5 6\n7.0 8\n---\nMemTotal: 1 kB\n---\n").unwrap_err();
        assert!(err.contains("MemAvailable"), "{err}");
    }
}
