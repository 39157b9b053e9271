//! Running a GPU tool (`nvidia-smi`, `rocm-smi`) with a deadline.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Backoff;

use super::HardwareError;

/// How long a GPU tool may run before it is killed. `nvidia-smi` hangs when the driver is wedged;
/// a heartbeat without GPUs is better than no heartbeat.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// More output than any GPU tool prints for a few dozen GPUs; the rest is not read.
const OUTPUT_LIMIT: u64 = 4 * 1024 * 1024;

/// How much of a failing tool's message goes into the error.
const MESSAGE_LIMIT: usize = 1000;

/// Runs `path args…` and returns its standard output, or why that failed.
pub(super) fn run_tool(
    path: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String, HardwareError> {
    let spawn_error = |source| HardwareError::Spawn {
        path: path.to_owned(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;

    let readers = match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), Some(stderr)) => read_in_background(stdout, "gpu-tool-stdout")
            .and_then(|stdout| Ok((stdout, read_in_background(stderr, "gpu-tool-stderr")?))),
        _ => Err(std::io::Error::other("output pipes were not created")),
    };
    let (stdout, stderr) = match readers {
        Ok(readers) => readers,
        Err(source) => {
            kill(&mut child);
            return Err(spawn_error(source));
        }
    };

    let timed_out = || HardwareError::TimedOut {
        path: path.to_owned(),
        timeout,
    };
    let status = match wait_until(&mut child, deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill(&mut child);
            return Err(timed_out());
        }
        Err(source) => {
            kill(&mut child);
            return Err(spawn_error(source));
        }
    };

    // The tool has exited; its output arrives unless something it started still holds the pipes.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let stdout = stdout.recv_timeout(remaining).map_err(|_| timed_out())?;
    let stderr = stderr.recv_timeout(remaining).map_err(|_| timed_out())?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&stdout).into_owned());
    }
    let message = if stderr.iter().any(|byte| !byte.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    Err(HardwareError::ToolFailed {
        path: path.to_owned(),
        status,
        stderr: shorten(String::from_utf8_lossy(&message).trim()),
    })
}

/// Reads `pipe` to its end on a thread, so a tool filling one pipe cannot block on the other.
fn read_in_background(
    pipe: impl Read + Send + 'static,
    name: &str,
) -> std::io::Result<mpsc::Receiver<Vec<u8>>> {
    let (sender, receiver) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut buffer = Vec::new();
            // A read error leaves what was read so far; the exit status tells whether it matters.
            let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut buffer);
            let _ = sender.send(buffer);
        })?;
    Ok(receiver)
}

/// Polls `child` until it exits (`Some(status)`) or `deadline` passes (`None`).
fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(backoff.next_delay().min(deadline - now));
    }
}

fn kill(child: &mut Child) {
    // Both fail only when the child is already gone, which is what we want.
    let _ = child.kill();
    let _ = child.wait();
}

fn shorten(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{SPAWN_LOCK, fake_tool};
    use super::*;

    #[test]
    fn returns_stdout_of_a_successful_tool() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(dir.path(), "tool", "echo \"args: $*\"\necho 'noise' >&2");
        let output = run_tool(&tool, &["--a", "b c"], TOOL_TIMEOUT).unwrap();
        assert_eq!(output, "args: --a b c\n");
    }

    #[test]
    fn non_zero_exit_carries_stderr() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(
            dir.path(),
            "tool",
            "echo 'partial output'\necho '  rocm-smi: no AMD GPUs  ' >&2\nexit 3",
        );
        let err = run_tool(&tool, &[], TOOL_TIMEOUT).unwrap_err();
        match &err {
            HardwareError::ToolFailed { status, stderr, .. } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "rocm-smi: no AMD GPUs");
            }
            other => panic!("unexpected error: {other:?}"),
        }
        assert!(
            err.to_string()
                .ends_with("failed (exit status: 3): rocm-smi: no AMD GPUs"),
            "{err}"
        );
    }

    #[test]
    fn non_zero_exit_with_empty_stderr_carries_stdout() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(
            dir.path(),
            "nvidia-smi",
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9",
        );
        let err = run_tool(&tool, &[], TOOL_TIMEOUT).unwrap_err();
        assert!(
            matches!(&err, HardwareError::ToolFailed { stderr, .. } if stderr == "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
            "{err:?}"
        );
    }

    #[test]
    fn missing_tool_is_a_spawn_error() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let err = run_tool(&dir.path().join("absent"), &[], TOOL_TIMEOUT).unwrap_err();
        match &err {
            HardwareError::Spawn { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("unexpected error: {other:?}"),
        }
        assert!(std::error::Error::source(&err).is_some());
        assert!(
            !err.to_string().contains("No such file"),
            "message repeats its source: {err}"
        );
    }

    #[test]
    fn hung_tool_is_killed_at_the_deadline() {
        let _guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tool = fake_tool(dir.path(), "tool", "exec sleep 30");
        let started = Instant::now();
        let err = run_tool(&tool, &[], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, HardwareError::TimedOut { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn long_messages_are_shortened() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(MESSAGE_LIMIT + 5);
        assert_eq!(shorten(&long).chars().count(), MESSAGE_LIMIT + 1);
    }
}
