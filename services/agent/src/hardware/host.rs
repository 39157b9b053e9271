//! Host facts and periodic samples: CPU, memory, the root filesystem, load and uptime.

use std::time::{Duration, Instant};

use chrono::Utc;
use events::NodeId;
use events::node::NodeRegistered;
use events::telemetry::Heartbeat;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tracing::{info, warn};

use super::GpuBackend;

/// How often a persistently failing GPU query is logged.
const GPU_WARNING_INTERVAL: Duration = Duration::from_secs(300);

/// Host facts and GPUs, for `NodeRegistered`. Blocking. A failing GPU inventory is logged and
/// leaves `gpus` empty; `gpu_source` still names the backend.
pub fn inventory(
    gpu: &GpuBackend,
    hostname: &str,
    agent_version: &str,
    agent_url: Option<String>,
) -> NodeRegistered {
    let system = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpu_model = system
        .cpus()
        .iter()
        .map(|cpu| cpu.brand().trim())
        .find(|brand| !brand.is_empty())
        .unwrap_or("unknown")
        .to_owned();
    let cpu_cores = match system.cpus().len() {
        0 => std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        cores => cores,
    };
    let gpus = gpu.inventory().unwrap_or_else(|err| {
        warn!(
            gpu_source = gpu.source_name(),
            error = &err as &dyn std::error::Error,
            "failed to list gpus, registering without them"
        );
        Vec::new()
    });
    NodeRegistered {
        hostname: hostname.to_owned(),
        os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_owned()),
        kernel: System::kernel_version().unwrap_or_else(|| "unknown".to_owned()),
        cpu_model,
        cpu_cores: u32::try_from(cpu_cores).unwrap_or(u32::MAX),
        memory_total_bytes: system.total_memory(),
        disk_total_bytes: root_disk_usage().total,
        gpus,
        gpu_source: gpu.source_name().to_owned(),
        agent_version: agent_version.to_owned(),
        agent_url,
        capabilities: Vec::new(),
    }
}

/// Samples the host and its GPUs for heartbeats. Keeps a `sysinfo::System` between samples,
/// because CPU usage is the difference between two refreshes: the first sample's `cpu_percent`
/// covers the time since [`Sampler::new`].
pub struct Sampler {
    gpu: GpuBackend,
    system: System,
    gpu_warnings: WarningLimiter,
}

impl Sampler {
    pub fn new(gpu: GpuBackend) -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        Self {
            gpu,
            system,
            gpu_warnings: WarningLimiter::new(GPU_WARNING_INTERVAL),
        }
    }

    pub fn gpu(&self) -> &GpuBackend {
        &self.gpu
    }

    /// One heartbeat. Blocking (the GPU query may take a second or more). Never fails: a GPU
    /// query that fails is logged (at most every five minutes) and leaves `gpus` empty.
    pub fn sample(&mut self, node_id: &NodeId, sample_seq: u64) -> Heartbeat {
        let sampled_at = Utc::now();
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let disk = root_disk_usage();
        let gpus = match self.gpu.sample() {
            Ok(gpus) => {
                if self.gpu_warnings.succeeded() {
                    info!(
                        gpu_source = self.gpu.source_name(),
                        "gpu sampling works again"
                    );
                }
                gpus
            }
            Err(err) => {
                if let Some(suppressed) = self.gpu_warnings.failed(Instant::now()) {
                    warn!(
                        gpu_source = self.gpu.source_name(),
                        error = &err as &dyn std::error::Error,
                        suppressed,
                        "failed to sample gpus, sending heartbeat without them"
                    );
                }
                Vec::new()
            }
        };
        let cpu_percent = self.system.global_cpu_usage();
        Heartbeat {
            node_id: node_id.clone(),
            sampled_at,
            sample_seq,
            cpu_percent: if cpu_percent.is_finite() {
                cpu_percent.clamp(0.0, 100.0)
            } else {
                0.0
            },
            load_avg_1m: System::load_average().one,
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            disk_used_bytes: disk.used,
            disk_total_bytes: disk.total,
            gpus,
            uptime_secs: System::uptime(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct DiskUsage {
    total: u64,
    used: u64,
}

/// Size of the filesystem holding `/`, as `df` reports it: used = total − free, so blocks
/// reserved for root count as free, not used. Zeroes when it cannot be read.
fn root_disk_usage() -> DiskUsage {
    match rustix::fs::statvfs("/") {
        Ok(stat) => DiskUsage {
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
            used: stat
                .f_blocks
                .saturating_sub(stat.f_bfree)
                .saturating_mul(stat.f_frsize),
        },
        Err(_) => DiskUsage::default(),
    }
}

/// Decides when a repeating failure is worth a log line: the first time, then once per
/// `interval`, counting what was left out in between.
#[derive(Debug)]
struct WarningLimiter {
    interval: Duration,
    last_warned: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl WarningLimiter {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_warned: None,
            suppressed: 0,
            failing: false,
        }
    }

    /// Records a failure; `Some(n)` when it should be logged, `n` being how many were not since.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.failing = true;
        let due = self
            .last_warned
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            self.suppressed += 1;
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Records a success; `true` when it ends a run of failures. The next failure warns at once.
    fn succeeded(&mut self) -> bool {
        let recovered = self.failing;
        *self = Self::new(self.interval);
        recovered
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{SPAWN_LOCK, fake_tool};
    use super::*;

    fn node_id() -> NodeId {
        "gpu-box-1".parse().unwrap()
    }

    #[test]
    fn inventory_reports_this_host() {
        let registered = inventory(
            &GpuBackend::None,
            "gpu-box-1",
            "0.1.0",
            Some("http://10.0.0.5:9100".to_owned()),
        );
        assert_eq!(registered.hostname, "gpu-box-1");
        assert_eq!(registered.agent_version, "0.1.0");
        assert_eq!(
            registered.agent_url.as_deref(),
            Some("http://10.0.0.5:9100")
        );
        assert_eq!(registered.gpu_source, "none");
        assert_eq!(registered.gpus, vec![]);
        assert!(registered.cpu_cores > 0);
        assert!(registered.memory_total_bytes > 0);
        assert!(registered.disk_total_bytes > 0);
        assert!(
            !registered.os.is_empty()
                && !registered.kernel.is_empty()
                && !registered.cpu_model.is_empty(),
            "{registered:?}"
        );
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let logical_cpus = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        assert_eq!(registered.cpu_cores as usize, logical_cpus);
    }

    #[test]
    fn samples_are_sane() {
        let mut sampler = Sampler::new(GpuBackend::None);
        assert_eq!(sampler.gpu().source_name(), "none");
        for seq in [1, 2] {
            let heartbeat = sampler.sample(&node_id(), seq);
            assert_eq!(heartbeat.node_id, node_id());
            assert_eq!(heartbeat.sample_seq, seq);
            assert!(heartbeat.memory_total_bytes > 0);
            assert!(
                heartbeat.memory_used_bytes > 0
                    && heartbeat.memory_used_bytes <= heartbeat.memory_total_bytes,
                "{heartbeat:?}"
            );
            assert!(heartbeat.disk_total_bytes > 0);
            assert!(
                heartbeat.disk_used_bytes > 0
                    && heartbeat.disk_used_bytes <= heartbeat.disk_total_bytes,
                "{heartbeat:?}"
            );
            assert!(
                (0.0..=100.0).contains(&heartbeat.cpu_percent),
                "{heartbeat:?}"
            );
            assert!(heartbeat.load_avg_1m >= 0.0);
            assert!(heartbeat.uptime_secs > 0);
            assert!(heartbeat.gpus.is_empty());
            assert!((Utc::now() - heartbeat.sampled_at).num_seconds().abs() < 60);
        }
    }

    #[test]
    fn cpu_percent_sees_a_busy_core() {
        let mut sampler = Sampler::new(GpuBackend::None);
        // Keep this thread busy for longer than sysinfo's minimum interval between CPU refreshes.
        let started = Instant::now();
        let mut spins = 0_u64;
        while started.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL * 2 {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let heartbeat = sampler.sample(&node_id(), 1);
        assert!(
            heartbeat.cpu_percent > 0.0,
            "{heartbeat:?} after {spins} spins"
        );
    }

    #[test]
    fn the_root_filesystem_matches_df() {
        let usage = root_disk_usage();
        // coreutils' df reports the same filesystem.
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let output = std::process::Command::new("df")
            .args(["-B1", "--output=size,used", "/"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .to_owned();
        let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().unwrap());
        let (size, used) = (fields.next().unwrap(), fields.next().unwrap());
        assert_eq!(usage.total, size);
        // Usage moves between the two reads; a few MiB of slack.
        assert!(
            usage.used.abs_diff(used) < 64 << 20,
            "used {} vs df {used}",
            usage.used
        );
    }

    #[test]
    fn a_failing_gpu_query_still_gives_a_heartbeat() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let broken = fake_tool(
            dir.path(),
            "nvidia-smi",
            "echo 'Unable to determine the device handle for GPU0000:01:00.0: Unknown Error' >&2\nexit 15",
        );
        let mut sampler = Sampler::new(GpuBackend::NvidiaSmi(broken));
        let heartbeat = sampler.sample(&node_id(), 7);
        assert_eq!(heartbeat.sample_seq, 7);
        assert!(heartbeat.gpus.is_empty());
        assert!(heartbeat.memory_total_bytes > 0 && heartbeat.disk_total_bytes > 0);
        assert!(sampler.gpu_warnings.failing);

        let registered = inventory(sampler.gpu(), "gpu-box-1", "0.1.0", None);
        assert_eq!(registered.gpu_source, "nvidia-smi");
        assert_eq!(registered.gpus, vec![]);
    }

    #[test]
    fn warnings_are_rate_limited() {
        let start = Instant::now();
        let mut limiter = WarningLimiter::new(Duration::from_secs(300));
        assert_eq!(limiter.failed(start), Some(0));
        assert_eq!(limiter.failed(start + Duration::from_secs(10)), None);
        assert_eq!(limiter.failed(start + Duration::from_secs(20)), None);
        assert_eq!(limiter.failed(start + Duration::from_secs(300)), Some(2));
        assert_eq!(limiter.failed(start + Duration::from_secs(301)), None);
        assert!(limiter.succeeded());
        assert!(!limiter.succeeded());
        assert_eq!(limiter.failed(start + Duration::from_secs(302)), Some(0));
    }
}
