//! A Docker engine of the project's own: Debian's dockerd on a socket under `.nebula/docker/`
//! (never the system's `/var/run/docker.sock`, never a system service), with the images the
//! tests use made offline (no registry is reachable): a busybox root file system imported as
//! `nebula-test/busybox:1`.

use std::fs;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, step};

/// The image the tests run: busybox's `sh`, `sleep`, `echo`, `cat`, `httpd`, …
pub(crate) const TEST_IMAGE: &str = "nebula-test/busybox:1";
const APPLETS: [&str; 10] = [
    "sh", "echo", "sleep", "cat", "httpd", "ls", "env", "true", "false", "wc",
];

/// The engine's home: socket, data, exec root, pid file and log.
fn home(root: &Path) -> PathBuf {
    root.join(".nebula").join("docker")
}

/// Whether Docker's programs have to be installed (apt: `docker.io`, `busybox-static`).
pub(crate) fn missing_packages() -> Vec<&'static str> {
    let mut packages = Vec::new();
    if cmd::find_in_path("dockerd").is_none() {
        packages.push("docker.io");
    }
    if !Path::new("/bin/busybox").exists() && cmd::find_in_path("busybox").is_none() {
        packages.push("busybox-static");
    }
    packages
}

/// The engine the stack uses, and whether this run started it (then it stops it when done,
/// unless it is `cargo xtask up`'s).
pub(crate) struct Engine {
    pub(crate) host: String,
    pub(crate) started: Option<u32>,
}

impl Engine {
    /// Stops the dockerd this run started (SIGTERM, up to 20 s, then SIGKILL); one that was
    /// already running is left as it was.
    pub(crate) fn stop_if_started(&self) {
        let Some(pid) = self.started else { return };
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let stopped = cmd::wait_until(Duration::from_secs(20), || Ok(!alive())).unwrap_or(false);
        if !stopped {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        step(
            "docker",
            format_args!("stopped the dockerd this run started (pid {pid})"),
        );
    }
}

/// The engine's address (`unix://…`): `NEBULA_DOCKER_HOST` when set, else the project's own
/// dockerd, started when it does not answer; then the test image, made when missing.
pub(crate) fn ensure(root: &Path) -> Result<Engine> {
    if let Some(host) = std::env::var("NEBULA_DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
    {
        step("docker", format_args!("using NEBULA_DOCKER_HOST={host}"));
        return Ok(Engine {
            host,
            started: None,
        });
    }
    let home = home(root);
    let socket = home.join("docker.sock");
    let started = if answers(&socket) {
        None
    } else {
        Some(start(&home, &socket)?)
    };
    let host = format!("unix://{}", socket.display());
    ensure_test_image(&home, &host)?;
    step(
        "docker",
        format_args!("dockerd answers on {host} (image {TEST_IMAGE})"),
    );
    Ok(Engine { host, started })
}

/// Whether a Docker engine answers `GET /_ping` on `socket`.
fn answers(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK")
}

fn start(home: &Path, socket: &Path) -> Result<u32> {
    if !cmd::is_root() {
        bail!(
            "no Docker engine answers on {}; dockerd needs root: run xtask as root, or set NEBULA_DOCKER_HOST",
            socket.display()
        );
    }
    fs::create_dir_all(home).with_context(|| format!("failed to create {}", home.display()))?;
    let _ = fs::remove_file(socket); // a stale socket of a dockerd that is gone
    let log_path = home.join("dockerd.log");
    let (log, log_for_stderr) = cmd::log_files(&log_path)?;
    // vfs (no overlay needed), no iptables and no bridge: containers run with `--network none`
    // or the host's network, and nothing of the machine's own networking is touched.
    let mut child = Command::new("dockerd")
        .args([
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .arg(format!("--host=unix://{}", socket.display()))
        .arg(format!("--data-root={}", home.join("data").display()))
        .arg(format!("--exec-root={}", home.join("exec").display()))
        .arg(format!("--pidfile={}", home.join("docker.pid").display()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        // its own process group: Ctrl-C on `cargo xtask up` stops nebula, not the engine
        .process_group(0)
        .spawn()
        .context("failed to start dockerd")?;
    let mut exited = None;
    let ready = cmd::wait_until(Duration::from_secs(30), || {
        exited = child.try_wait().context("failed to poll dockerd")?;
        Ok(exited.is_some() || answers(socket))
    })?;
    if let Some(status) = exited {
        bail!(
            "dockerd exited at start ({status}); {}:\n{}",
            log_path.display(),
            cmd::tail(&fs::read_to_string(&log_path).unwrap_or_default(), 15)
        );
    }
    if !ready {
        let _ = child.kill();
        bail!(
            "dockerd did not answer on {} within 30 s; see {}",
            socket.display(),
            log_path.display()
        );
    }
    step(
        "docker",
        format_args!(
            "started dockerd (pid {}) on {}, log {}",
            child.id(),
            socket.display(),
            log_path.display()
        ),
    );
    Ok(child.id())
}

/// Imports the busybox root file system as [`TEST_IMAGE`] unless the engine has it.
fn ensure_test_image(home: &Path, host: &str) -> Result<()> {
    if cmd::succeeds(Command::new("docker").args(["-H", host, "image", "inspect", TEST_IMAGE])) {
        return Ok(());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .context("busybox is not installed (apt: busybox-static)")?;
    let rootfs = home.join("busybox-rootfs");
    let bin = rootfs.join("bin");
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(&bin).with_context(|| format!("failed to create {}", bin.display()))?;
    fs::copy(&busybox, bin.join("busybox")).context("failed to copy busybox")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("failed to link {applet}"))?;
    }
    fs::create_dir_all(rootfs.join("tmp"))?;
    // tar | docker import: the archive streams from one to the other.
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("failed to start tar")?;
    let archive = tar.stdout.take().context("tar has no stdout")?;
    let imported = Command::new("docker")
        .args(["-H", host, "import", "-", TEST_IMAGE])
        .stdin(archive)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("failed to run docker import")?;
    let tarred = tar.wait().context("failed to wait for tar")?;
    if !imported.status.success() || !tarred.success() {
        bail!(
            "failed to import {TEST_IMAGE} (tar {tarred}, docker import {}): {}",
            imported.status,
            cmd::tail(&String::from_utf8_lossy(&imported.stderr), 10)
        );
    }
    let _ = fs::remove_dir_all(&rootfs);
    step(
        "docker",
        format_args!("made {TEST_IMAGE} from {}", busybox.display()),
    );
    Ok(())
}
