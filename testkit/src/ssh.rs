//! A real OpenSSH server per test: Debian's `sshd -D` on a free loopback port, with its own
//! configuration, a throwaway host key and one authorized client key, as a plain process
//! (never the machine's sshd, never a service). `cargo xtask` installs `openssh-server`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd and the keys to reach it.
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    /// The user the client key logs in as (whoever runs the tests).
    pub user: String,
    /// The authorized client key (OpenSSH private key text).
    pub client_key: String,
    /// A second key, not authorized.
    pub stranger_key: String,
    /// The host key's fingerprint (`SHA256:…`), as `ssh-keygen -lf` prints it.
    pub host_fingerprint: String,
    /// What every session's environment gets (sshd's `SetEnv`).
    env: Vec<(String, String)>,
}

fn sshd_path() -> PathBuf {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("sshd is not installed (apt: openssh-server); `cargo xtask test` installs it")
}

/// `ssh-keygen -t ed25519` into `path`; the private key's text.
fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nebula-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen is not installed (apt: openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    std::fs::read_to_string(path).expect("the generated key")
}

/// The `SHA256:…` fingerprint of a public key file.
pub fn fingerprint(public_key: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .expect("ssh-keygen");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -lf prints a fingerprint")
        .to_owned()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let client_key = keygen(&dir.path().join("client"));
        let stranger_key = keygen(&dir.path().join("stranger"));
        std::fs::copy(
            dir.path().join("client.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        keygen(&dir.path().join("host"));
        let user = std::env::var("USER")
            .ok()
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| {
                let output = Command::new("id").arg("-un").output().expect("id -un");
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            });
        let mut sshd = Sshd {
            host_fingerprint: fingerprint(&dir.path().join("host.pub")),
            dir,
            child: None,
            port: crate::free_port(),
            user,
            client_key,
            stranger_key,
            env: Vec::new(),
        };
        sshd.resume();
        sshd
    }

    /// Gives every later session `name=value` in its environment (as a host's own profile
    /// would, e.g. `DOCKER_HOST`), restarting the server.
    pub fn set_env(&mut self, name: &str, value: &str) {
        assert!(
            !value.contains(['"', '\n', ' ']),
            "SetEnv values here are plain words"
        );
        self.env.push((name.to_owned(), value.to_owned()));
        self.resume();
    }

    /// The client key's file (for the OpenSSH client).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// Stops the server and drops every connection it holds (the port then refuses
    /// connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Each connection is a child process of the listener.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same keys.
    pub fn resume(&mut self) {
        self.stop();
        let dir = self.dir.path();
        // Privilege separation needs its empty folder (a package's tmpfiles rule makes it at
        // boot, which a test machine may not have had).
        let _ = std::fs::create_dir_all("/run/sshd");
        let set_env: String = self
            .env
            .iter()
            .map(|(name, value)| format!("SetEnv {name}={value}\n"))
            .collect();
        let config = format!(
            "{set_env}Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
            port = self.port,
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("sshd.log");
        let child = Command::new(sshd_path())
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("failed to start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {} within 10 s: {}",
                self.port,
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives the server a new host key (as a reinstalled host would have) and restarts it.
    pub fn change_host_key(&mut self) {
        let dir = self.dir.path();
        let _ = std::fs::remove_file(dir.join("host"));
        let _ = std::fs::remove_file(dir.join("host.pub"));
        keygen(&dir.join("host"));
        self.host_fingerprint = fingerprint(&dir.join("host.pub"));
        self.resume();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
