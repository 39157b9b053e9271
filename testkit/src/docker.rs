//! The Docker engine the tests use: the project's own dockerd that `cargo xtask test` starts
//! (`NEBULA_DOCKER_HOST`), never the machine's. Test containers run the offline image
//! [`TEST_IMAGE`] with no network, and are removed when dropped.

use std::process::{Command, Stdio};

/// The image `cargo xtask` makes from busybox-static (`sh`, `sleep`, `echo`, `httpd`, …).
pub const TEST_IMAGE: &str = "nebula-test/busybox:1";

/// The engine's address (`unix://…`).
pub fn host() -> String {
    std::env::var("NEBULA_DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .expect("NEBULA_DOCKER_HOST is not set: run the tests through `cargo xtask test`, which starts a Docker engine of its own")
}

/// `docker -H <host> <args>` on the shared engine; its standard output, or a panic with its
/// error.
pub fn docker(args: &[&str]) -> String {
    docker_on(&host(), args)
}

/// `docker -H <host> <args>`; its standard output, or a panic with its error.
pub fn docker_on(host: &str, args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(["-H", host])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run the docker client");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A container of the test image, removed (forcibly) when dropped.
pub struct TestContainer {
    pub name: String,
    pub id: String,
    /// The engine it runs on.
    pub host: String,
}

impl TestContainer {
    /// Runs `command` (e.g. `["sleep", "3600"]`) detached, as `<prefix>-<random>`, with no
    /// network and `extra` options before the image (e.g. `["--health-cmd", "true"]`).
    pub fn run(prefix: &str, extra: &[&str], command: &[&str]) -> TestContainer {
        Self::run_on(&host(), prefix, extra, command)
    }

    /// [`TestContainer::run`] on the engine at `host`.
    pub fn run_on(host: &str, prefix: &str, extra: &[&str], command: &[&str]) -> TestContainer {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        args.extend_from_slice(extra);
        args.push(TEST_IMAGE);
        args.extend_from_slice(command);
        let id = docker_on(host, &args);
        TestContainer {
            name,
            id,
            host: host.to_owned(),
        }
    }

    /// Docker's state of it (`running`, `exited`, …), or `None` once it is gone.
    pub fn state(&self) -> Option<String> {
        let output = Command::new("docker")
            .args([
                "-H",
                &self.host,
                "inspect",
                "-f",
                "{{.State.Status}}",
                &self.name,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["-H", &self.host, "rm", "-f", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Docker engine of one test's own (Debian's dockerd as root, on a socket in a temporary
/// folder, with the test image copied in from the shared engine): one that a test may stop and
/// start again. Stopped when dropped.
pub struct PrivateEngine {
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl PrivateEngine {
    pub async fn start() -> PrivateEngine {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut engine = PrivateEngine { dir, child: None };
        engine.resume().await;
        let mut image = tokio::process::Command::new("docker")
            .args(["-H", &host(), "save", TEST_IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let archive: Stdio = image
            .stdout
            .take()
            .expect("docker save's output")
            .try_into()
            .expect("a pipe");
        let loaded = tokio::process::Command::new("docker")
            .args(["-H", &engine.host(), "load", "-q"])
            .stdin(archive)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("docker load");
        assert!(
            loaded.success(),
            "the test image did not load into the private engine"
        );
        let _ = image.wait().await;
        engine
    }

    /// Its address (`unix://…`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Starts its dockerd (again, on the same data), and waits until it answers.
    pub async fn resume(&mut self) {
        let path = self.dir.path();
        let log = std::fs::File::create(path.join("dockerd.log")).expect("a log file");
        let child = tokio::process::Command::new("dockerd")
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--shutdown-timeout=1",
            ])
            .arg(format!("--host={}", self.host()))
            .arg(format!("--data-root={}", path.join("data").display()))
            .arg(format!("--exec-root={}", path.join("exec").display()))
            .arg(format!("--pidfile={}", path.join("docker.pid").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("failed to start dockerd (the tests run it as root)");
        self.child = Some(child);
        let host = self.host();
        crate::wait_until(
            "the private dockerd to answer",
            std::time::Duration::from_secs(30),
            || async {
                tokio::process::Command::new("docker")
                    .args(["-H", &host, "version"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .ok()
                    .filter(|status| status.success())
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Stops its dockerd (SIGTERM: it stops its containers first) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait().await;
        }
    }
}

fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let host = self.host();
        // Its containers go with it, then the engine (waited for, a few seconds at most, so its
        // folder can go too).
        let ids = Command::new("docker")
            .args(["-H", &host, "ps", "-aq"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker")
                .args(["-H", &host, "rm", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        terminate(&child);
        for _ in 0..100 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.start_kill();
    }
}
