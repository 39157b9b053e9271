//! Stopping a process the system started in a group of its own (a supervised service, ComfyUI).

use std::time::Duration;

/// What a supervised process (ComfyUI, an agent's service) may see of its parent's environment:
/// the system's basics, the GPU selection and the Python environment. Nothing that could hold a
/// secret.
pub const INHERITED_ENV: [&str; 22] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_HOME",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "PYTORCH_CUDA_ALLOC_CONF",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "HF_HOME",
    "XDG_CACHE_HOME",
];

/// Stops the process group `pid` leads (`pid`: the leader's, remembered when it was spawned):
/// SIGTERM, up to `grace` for the leader to exit, then SIGKILL for whatever of the group is
/// left (a wrapper's children included). An error says why the group could not be signalled.
pub async fn stop_group(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    grace: Duration,
) -> Result<(), String> {
    let group = pid
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    let Some(group) = group else {
        // no pid: it was reaped already; only the leader is known
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(());
    };
    let mut failed = None;
    let mut signal = |signal| match rustix::process::kill_process_group(group, signal) {
        // ESRCH: nobody of the group is left
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(err) => failed = Some(format!("cannot signal process group {group:?}: {err}")),
    };
    if !grace.is_zero() {
        signal(rustix::process::Signal::TERM);
        let _ = tokio::time::timeout(grace, child.wait()).await;
    }
    signal(rustix::process::Signal::KILL);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    failed.map_or(Ok(()), Err)
}

/// Asks the process whose pid `pid_file` holds to read its configuration again (SIGHUP), when
/// that process is `program` (a stale pid file naming another process is left alone): its pid,
/// `None` when there is no such file or the process is gone or another, or why the signal
/// could not be sent.
pub fn reload(pid_file: &std::path::Path, program: &str) -> Result<Option<u32>, String> {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return Ok(None);
    };
    let Some(pid) = text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(None);
    };
    let raw = pid.as_raw_nonzero().get();
    let is_program = std::fs::read(format!("/proc/{raw}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(program));
    if !is_program {
        return Ok(None);
    }
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .map_err(|err| format!("cannot signal {program} (pid {raw}): {err}"))?;
    Ok(u32::try_from(raw).ok())
}
