//! Small helpers for running programs and printing progress.

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Prints one progress line: `xtask: <step>: <message>`.
pub(crate) fn step(name: &str, message: impl Display) {
    println!("xtask: {name}: {message}");
}

/// Runs `command` with captured output; fails with the tail of its output when it exits non-zero.
pub(crate) fn run_captured(command: &mut Command) -> Result<String> {
    run_with_stdin(command, None)
}

/// Like [`run_captured`], writing `stdin` to the program first.
pub(crate) fn run_with_stdin(command: &mut Command, stdin: Option<&str>) -> Result<String> {
    let program = describe(command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start `{program}`"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("failed to write to the stdin of `{program}`"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("failed to wait for `{program}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`{program}` failed ({}):\n{}{}",
            output.status,
            tail(&stdout, 20),
            tail(&stderr, 20)
        );
    }
    Ok(stdout)
}

/// Whether `command` runs and exits with status 0 (output discarded).
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The program and its arguments, for messages.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`, each ending in a newline.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Finds an executable on `PATH`, like `command -v`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Polls `ready` every 100 ms until it returns true or `limit` has passed.
pub(crate) fn wait_until(limit: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A log file opened for appending, twice: for a child's stdout and its stderr.
pub(crate) fn log_files(path: &Path) -> Result<(std::fs::File, std::fs::File)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let again = log
        .try_clone()
        .with_context(|| format!("failed to duplicate the handle of {}", path.display()))?;
    Ok((log, again))
}
