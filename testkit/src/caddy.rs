//! A real Caddy per test: Debian's `caddy run` as a plain process, its admin API on a free
//! loopback port and no configuration beyond that (Nebula builds its server through the admin
//! API). `cargo xtask` installs `caddy`; the machine's own Caddy (if any) is never touched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Caddy {
    _dir: tempfile::TempDir,
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub admin: String,
}

impl Caddy {
    pub fn start() -> Caddy {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = crate::free_port();
        let admin = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("caddy.json");
        std::fs::write(
            &config,
            format!(r#"{{"admin": {{"listen": "127.0.0.1:{port}"}}}}"#),
        )
        .expect("caddy's config");
        let child = Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(&config)
            // its data and config dirs (certificates, autosave) inside the test's own dir
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caddy is not installed (apt: caddy); `cargo xtask test` installs it");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "caddy's admin API did not open on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Caddy {
            _dir: dir,
            child,
            admin,
        }
    }

    /// Stops it (its routes are gone with it) …
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.kill();
    }
}
