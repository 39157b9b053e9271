//! Hardware detection: which GPUs this machine has, what the host is, and how it is doing.
//!
//! GPU data comes from one [`GpuBackend`], chosen once at start by [`GpuBackend::detect`]:
//! NVML (the NVIDIA driver's library, loaded at run time), else the `nvidia-smi` tool, else the
//! `rocm-smi` tool (AMD), else none. A tool is chosen only if it runs and reports at least one GPU,
//! so a machine with `nvidia-smi` installed but no working driver still falls through to `rocm-smi`.
//!
//! Host facts come from `sysinfo`. Disk figures are those of **the filesystem holding `/`**
//! (`statvfs("/")`, the visible root): summing "real" disks would double-count bind mounts,
//! btrfs subvolumes and overlay roots, and tmpfs is RAM. Inside a container whose root is an
//! overlay, that is the filesystem backing the overlay. "Used" is total − free, as `df` shows it.
//!
//! Everything here blocks (NVML calls, spawning tools, reading `/proc`): call it from
//! `spawn_blocking` or a dedicated thread. Tools are killed after [`TOOL_TIMEOUT`], so a wedged
//! driver cannot stall the heartbeat forever.
//!
//! **Architecture Invariant:** a failing GPU query never fails a heartbeat or a registration; it
//! costs the GPU list, not the host sample.

mod host;
mod nvidia_smi;
mod nvml;
mod rocm_smi;
mod tool;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use events::node::GpuInfo;
use events::telemetry::GpuSample;
use tracing::{debug, info, warn};

pub use host::{Sampler, inventory};
pub use nvidia_smi::parse_nvidia_smi_csv;
pub use rocm_smi::parse_rocm_smi_json;
pub use tool::TOOL_TIMEOUT;

/// Why a GPU query failed.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// The tool could not be started (not found, not executable, ...).
    #[error("failed to run {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and exited unsuccessfully. `stderr` is its trimmed standard error, or its
    /// standard output when stderr was empty (`nvidia-smi` prints its failures there).
    #[error("{} failed ({status}): {stderr}", path.display())]
    ToolFailed {
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    /// The tool did not finish in time and was killed.
    #[error("{} did not finish within {timeout:?}", path.display())]
    TimedOut { path: PathBuf, timeout: Duration },
    /// The tool's output was not what we expected; `line` is the offending line.
    #[error("unparsable {tool} output ({reason}): {line:?}")]
    Unparsable {
        tool: &'static str,
        line: String,
        reason: String,
    },
    /// An NVML call failed.
    #[error("nvml query failed")]
    Nvml(#[source] nvml_wrapper::error::NvmlError),
}

/// Where GPU data comes from, chosen once at start.
pub enum GpuBackend {
    /// Boxed: the loaded library's function table is about 12 KB.
    Nvml(Box<nvml_wrapper::Nvml>),
    NvidiaSmi(PathBuf),
    RocmSmi(PathBuf),
    None,
}

/// What [`GpuBackend::detect_with`] may try. `None` for a tool means "don't try it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectOptions {
    pub use_nvml: bool,
    pub nvidia_smi: Option<PathBuf>,
    pub rocm_smi: Option<PathBuf>,
}

impl Default for DetectOptions {
    /// NVML on, and both tools looked up now: on `PATH`, and for `rocm-smi` also in
    /// `/opt/rocm/bin`, where ROCm installs it without adding it to `PATH`.
    fn default() -> Self {
        Self {
            use_nvml: true,
            nvidia_smi: find_executable("nvidia-smi", &[]),
            rocm_smi: find_executable("rocm-smi", &[Path::new("/opt/rocm/bin")]),
        }
    }
}

impl GpuBackend {
    /// NVML first, then `nvidia-smi`, then `rocm-smi` (found as [`DetectOptions::default`]
    /// finds them), else [`GpuBackend::None`]. A backend counts only if it reports at least one
    /// GPU now. Finding no GPU is not an error.
    pub fn detect() -> GpuBackend {
        Self::detect_with(&DetectOptions::default())
    }

    /// Like [`GpuBackend::detect`], with explicit tool paths and NVML optionally skipped.
    pub fn detect_with(options: &DetectOptions) -> GpuBackend {
        let candidates = [
            options.nvidia_smi.clone().map(GpuBackend::NvidiaSmi),
            options.rocm_smi.clone().map(GpuBackend::RocmSmi),
        ];
        let nvml = options
            .use_nvml
            .then(nvml::init)
            .flatten()
            .map(|nvml| GpuBackend::Nvml(Box::new(nvml)));
        let backend = nvml
            .into_iter()
            .chain(candidates.into_iter().flatten())
            .find_map(probe)
            .unwrap_or(GpuBackend::None);
        info!(gpu_source = backend.source_name(), "gpu backend chosen");
        backend
    }

    /// `"nvml"`, `"nvidia-smi"`, `"rocm-smi"` or `"none"`, as in `NodeRegistered::gpu_source`.
    pub fn source_name(&self) -> &'static str {
        match self {
            GpuBackend::Nvml(_) => "nvml",
            GpuBackend::NvidiaSmi(_) => "nvidia-smi",
            GpuBackend::RocmSmi(_) => "rocm-smi",
            GpuBackend::None => "none",
        }
    }

    /// The GPUs and their static facts. Blocking.
    pub fn inventory(&self) -> Result<Vec<GpuInfo>, HardwareError> {
        match self {
            GpuBackend::Nvml(nvml) => nvml::inventory(nvml),
            GpuBackend::NvidiaSmi(path) => Ok(nvidia_smi::query(path)?
                .into_iter()
                .map(|(info, _)| info)
                .collect()),
            GpuBackend::RocmSmi(path) => Ok(rocm_smi::query(path)?
                .into_iter()
                .map(|(info, _)| info)
                .collect()),
            GpuBackend::None => Ok(Vec::new()),
        }
    }

    /// Current utilization, memory, temperature and power of every GPU. Blocking.
    pub fn sample(&self) -> Result<Vec<GpuSample>, HardwareError> {
        match self {
            GpuBackend::Nvml(nvml) => nvml::sample(nvml),
            GpuBackend::NvidiaSmi(path) => Ok(nvidia_smi::query(path)?
                .into_iter()
                .map(|(_, sample)| sample)
                .collect()),
            GpuBackend::RocmSmi(path) => Ok(rocm_smi::query(path)?
                .into_iter()
                .map(|(_, sample)| sample)
                .collect()),
            GpuBackend::None => Ok(Vec::new()),
        }
    }
}

impl fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuBackend::Nvml(_) => f.write_str("Nvml(..)"),
            GpuBackend::NvidiaSmi(path) => f.debug_tuple("NvidiaSmi").field(path).finish(),
            GpuBackend::RocmSmi(path) => f.debug_tuple("RocmSmi").field(path).finish(),
            GpuBackend::None => f.write_str("None"),
        }
    }
}

/// Keeps `backend` if it reports at least one GPU right now.
fn probe(backend: GpuBackend) -> Option<GpuBackend> {
    let gpu_source = backend.source_name();
    match backend.inventory() {
        Ok(gpus) if !gpus.is_empty() => {
            debug!(gpu_source, gpu_count = gpus.len(), "gpu backend works");
            Some(backend)
        }
        Ok(_) => {
            debug!(gpu_source, "gpu backend reports no gpus");
            None
        }
        Err(err) => {
            warn!(
                gpu_source,
                error = &err as &dyn std::error::Error,
                "gpu backend present but not working, skipping it"
            );
            None
        }
    }
}

/// The first executable file called `name` on `PATH`, then in `extra_dirs`.
fn find_executable(name: &str, extra_dirs: &[&Path]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(extra_dirs.iter().copied())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{
        NVIDIA_SMI_CSV, ROCM_SMI_JSON, SPAWN_LOCK, expected_nvidia_gpus, fake_tool,
    };
    use super::*;

    #[test]
    fn detect_with_fake_nvidia_smi_uses_it() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let script = fake_tool(
            dir.path(),
            "nvidia-smi",
            &format!(
                "[ \"$1\" = \"{}\" ] && [ \"$2\" = \"{}\" ] || {{ echo \"bad args: $*\" >&2; exit 2; }}\ncat <<'EOF'\n{NVIDIA_SMI_CSV}EOF",
                nvidia_smi::QUERY_ARGS[0],
                nvidia_smi::QUERY_ARGS[1],
            ),
        );

        let backend = GpuBackend::detect_with(&DetectOptions {
            use_nvml: false,
            nvidia_smi: Some(script.clone()),
            rocm_smi: None,
        });

        assert_eq!(backend.source_name(), "nvidia-smi");
        assert!(matches!(&backend, GpuBackend::NvidiaSmi(path) if *path == script));
        let (infos, samples): (Vec<_>, Vec<_>) = expected_nvidia_gpus().into_iter().unzip();
        assert_eq!(backend.inventory().unwrap(), infos);
        assert_eq!(backend.sample().unwrap(), samples);
    }

    #[test]
    fn detect_falls_back_to_rocm_smi_when_nvidia_smi_fails() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let nvidia_smi = fake_tool(
            dir.path(),
            "nvidia-smi",
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9",
        );
        let rocm_smi = fake_tool(
            dir.path(),
            "rocm-smi",
            &format!("cat <<'EOF'\n{ROCM_SMI_JSON}\nEOF"),
        );

        let backend = GpuBackend::detect_with(&DetectOptions {
            use_nvml: false,
            nvidia_smi: Some(nvidia_smi),
            rocm_smi: Some(rocm_smi),
        });

        assert_eq!(backend.source_name(), "rocm-smi");
        let gpus = backend.inventory().unwrap();
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].vendor, "amd");
    }

    #[test]
    fn detect_skips_tools_that_report_no_gpus() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let nvidia_smi = fake_tool(dir.path(), "nvidia-smi", "exit 0");
        let rocm_smi = fake_tool(
            dir.path(),
            "rocm-smi",
            "echo '{\"system\": {\"Driver version\": \"6.8.5\"}}'",
        );

        let backend = GpuBackend::detect_with(&DetectOptions {
            use_nvml: false,
            nvidia_smi: Some(nvidia_smi),
            rocm_smi: Some(rocm_smi),
        });

        assert!(matches!(backend, GpuBackend::None));
        assert_eq!(backend.source_name(), "none");
        assert_eq!(backend.inventory().unwrap(), vec![]);
        assert_eq!(backend.sample().unwrap(), vec![]);
    }

    #[test]
    fn detect_with_missing_tool_paths_gives_none() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let backend = GpuBackend::detect_with(&DetectOptions {
            use_nvml: false,
            nvidia_smi: Some(dir.path().join("no-such-nvidia-smi")),
            rocm_smi: Some(dir.path().join("no-such-rocm-smi")),
        });
        assert!(matches!(backend, GpuBackend::None));
    }

    /// On a machine without an NVIDIA or AMD GPU (like CI) this must be `None`; on a GPU node it
    /// must find the GPUs. Either way it must not panic or error.
    #[test]
    fn detect_matches_this_machine() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let backend = GpuBackend::detect();
        let nvml_sees_gpus = nvml_wrapper::Nvml::init()
            .and_then(|nvml| nvml.device_count())
            .is_ok_and(|count| count > 0);
        match &backend {
            GpuBackend::None => {
                assert!(!nvml_sees_gpus, "nvml sees gpus but detect() chose none");
                assert_eq!(backend.inventory().unwrap(), vec![]);
            }
            found => {
                assert!(
                    !found.inventory().unwrap().is_empty(),
                    "{found:?} was chosen but reports no gpus"
                );
                if nvml_sees_gpus {
                    assert_eq!(found.source_name(), "nvml");
                }
            }
        }
    }

    #[test]
    fn default_options_use_nvml_and_only_executables() {
        let options = DetectOptions::default();
        assert!(options.use_nvml);
        for path in [&options.nvidia_smi, &options.rocm_smi]
            .into_iter()
            .flatten()
        {
            assert!(is_executable(path), "{} is not executable", path.display());
        }
    }

    #[test]
    fn find_executable_skips_non_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), "not a program").unwrap();
        assert_eq!(find_executable("plain", &[dir.path()]), None);
        assert_eq!(
            find_executable("sh-that-does-not-exist-anywhere", &[dir.path()]),
            None
        );
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tool = fake_tool(dir.path(), "tool", "exit 0");
        assert_eq!(find_executable("tool", &[dir.path()]), Some(tool));
    }

    #[test]
    fn backend_errors_read_well() {
        let err = HardwareError::Unparsable {
            tool: "nvidia-smi",
            line: "0, broken".to_owned(),
            reason: "expected 9 fields, found 2".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "unparsable nvidia-smi output (expected 9 fields, found 2): \"0, broken\""
        );
        let err = HardwareError::TimedOut {
            path: PathBuf::from("/usr/bin/nvidia-smi"),
            timeout: Duration::from_secs(10),
        };
        assert_eq!(
            err.to_string(),
            "/usr/bin/nvidia-smi did not finish within 10s"
        );
    }

    #[test]
    fn backend_debug_does_not_need_nvml() {
        assert_eq!(
            format!(
                "{:?}",
                GpuBackend::NvidiaSmi(PathBuf::from("/usr/bin/nvidia-smi"))
            ),
            "NvidiaSmi(\"/usr/bin/nvidia-smi\")"
        );
        assert_eq!(format!("{:?}", GpuBackend::None), "None");
    }

    #[test]
    fn backend_and_sampler_can_move_to_a_blocking_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<GpuBackend>();
        assert_send::<Sampler>();
        assert_send::<HardwareError>();
    }
}
