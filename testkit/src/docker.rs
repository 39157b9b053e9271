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

/// `docker -H <host> <args>`; its standard output, or a panic with its error.
pub fn docker(args: &[&str]) -> String {
    let host = host();
    let output = Command::new("docker")
        .args(["-H", &host])
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
}

impl TestContainer {
    /// Runs `command` (e.g. `["sleep", "3600"]`) detached, as `<prefix>-<random>`, with no
    /// network and `extra` options before the image (e.g. `["--health-cmd", "true"]`).
    pub fn run(prefix: &str, extra: &[&str], command: &[&str]) -> TestContainer {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        args.extend_from_slice(extra);
        args.push(TEST_IMAGE);
        args.extend_from_slice(command);
        let id = docker(&args);
        TestContainer { name, id }
    }

    /// Docker's state of it (`running`, `exited`, …), or `None` once it is gone.
    pub fn state(&self) -> Option<String> {
        let host = host();
        let output = Command::new("docker")
            .args([
                "-H",
                &host,
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
            .args(["-H", &host(), "rm", "-f", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
