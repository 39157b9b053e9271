//! The shared preparation of `up` and `test`: packages, nats-server, Postgres, Redis, and the
//! environment for the programs xtask runs next. Every step is idempotent.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, step};
use crate::net::Endpoint;
use crate::{docker, nats, postgres, redis};

pub(crate) const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4322";
pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://nebula:nebula@127.0.0.1:5432/nebula";
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment for child processes. xtask never changes its own environment
/// (`set_var` is unsafe in edition 2024 and `unsafe` is forbidden here).
pub(crate) struct Stack {
    pub(crate) env: Vec<(&'static str, String)>,
    /// The Docker engine (stopped after tests and benchmarks when this run started it).
    pub(crate) docker: docker::Engine,
}

/// Whether the UI tests' browser (chromium + chromedriver) and Node (the dashboard's unit
/// tests) are part of the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Browser {
    Needed,
    NotNeeded,
}

pub(crate) fn prepare(root: &Path, browser: Browser) -> Result<Stack> {
    let nats_url = env_or("NATS_URL", DEFAULT_NATS_URL);
    let database_url = env_or("DATABASE_URL", DEFAULT_DATABASE_URL);
    let redis_url = env_or("REDIS_URL", DEFAULT_REDIS_URL);
    let nats = Endpoint::parse(&nats_url, 4222).context("invalid NATS_URL")?;
    let database = Endpoint::parse(&database_url, 5432).context("invalid DATABASE_URL")?;
    let redis = Endpoint::parse(&redis_url, 6379).context("invalid REDIS_URL")?;

    let browser_paths = match browser {
        Browser::Needed => Some((
            program_path("CHROMIUM_BIN", "chromium"),
            program_path("CHROMEDRIVER", "chromedriver"),
        )),
        Browser::NotNeeded => None,
    };
    install_missing_packages(root, &database, &redis, browser_paths.as_ref())?;
    if browser == Browser::Needed {
        ensure_pytest()?;
    }

    let nats_server = nats::ensure_binary(root)?;
    let control_seed = nats::ensure_credentials(root)?;
    nats::ensure_running(root, &nats, &nats_server)?;
    postgres::ensure(&database, &database_url)?;
    redis::ensure(root, &redis)?;
    let docker = docker::ensure(root)?;

    let mut env = vec![
        ("NATS_URL", nats_url),
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("NATS_SERVER_BIN", nats_server.display().to_string()),
        ("NEBULA_DOCKER_HOST", docker.host.clone()),
    ];
    // The control plane's credentials, unless the caller brought others.
    if std::env::var_os("NATS_NKEY_FILE").is_none() && std::env::var_os("NATS_CREDS_FILE").is_none()
    {
        env.push(("NATS_NKEY_FILE", control_seed.display().to_string()));
    }
    if let Some((chromium, chromedriver)) = browser_paths {
        for (name, path) in [("CHROMIUM_BIN", chromium), ("CHROMEDRIVER", chromedriver)] {
            if !cmd::is_executable(&path) {
                bail!("{name} {} is not an executable file", path.display());
            }
            env.push((name, path.display().to_string()));
        }
        step("browser", "chromium and chromedriver present");
    }
    let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
    step("env", format_args!("exporting {}", names.join(" ")));
    Ok(Stack { env, docker })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `$variable` when set, else the program on PATH, else `/usr/bin/<program>` (where apt puts it).
fn program_path(variable: &str, program: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .or_else(|| cmd::find_in_path(program))
        .unwrap_or_else(|| Path::new("/usr/bin").join(program))
}

/// Installs with apt only what this run needs and lacks; as non-root, names it and fails.
fn pytest_present() -> bool {
    cmd::succeeds(Command::new("python3").args(["-m", "pytest", "--version"]))
}

/// What the media crate needs to build and test that this machine lacks.
fn media_packages() -> Vec<&'static str> {
    let mut packages = Vec::new();
    let has_pkg_config = cmd::find_in_path("pkg-config").is_some();
    if !has_pkg_config {
        packages.push("pkg-config");
    }
    for (library, package) in [
        ("libavcodec", "libavcodec-dev"),
        ("libavformat", "libavformat-dev"),
        ("libavutil", "libavutil-dev"),
        ("libavfilter", "libavfilter-dev"),
        ("libavdevice", "libavdevice-dev"),
        ("libswscale", "libswscale-dev"),
        ("libswresample", "libswresample-dev"),
    ] {
        if !has_pkg_config || !cmd::succeeds(Command::new("pkg-config").args(["--exists", library]))
        {
            packages.push(package);
        }
    }
    let libclang = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            entry.file_name().to_string_lossy().starts_with("llvm-")
                && entry.path().join("lib/libclang.so").exists()
        });
    if !libclang {
        packages.extend(["clang", "libclang-dev"]);
    }
    if cmd::find_in_path("espeak-ng").is_none() {
        packages.push("espeak-ng");
    }
    if cmd::find_in_path("ffprobe").is_none() {
        packages.push("ffmpeg");
    }
    // Subtitles and thumbnail titles are drawn in DejaVu Sans.
    if !Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf").exists() {
        packages.push("fonts-dejavu-core");
    }
    packages
}

/// Whether `python3` is Debian's own.
fn system_python() -> bool {
    cmd::find_in_path("python3").is_some_and(|path| path.starts_with("/usr/bin"))
}

/// pytest for a python3 that is not Debian's (which apt cannot reach), from PyPI.
fn ensure_pytest() -> Result<()> {
    if pytest_present() {
        return Ok(());
    }
    // In a virtualenv pip installs into it; elsewhere into the user's site.
    let user = std::env::var_os("VIRTUAL_ENV").is_none();
    step("python", "installing pytest for python3 from PyPI");
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet"]);
    if user {
        pip.arg("--user");
    }
    cmd::run_captured(pip.arg("pytest"))
        .context("failed to install pytest (python3 -m pip install pytest)")?;
    Ok(())
}

fn install_missing_packages(
    root: &Path,
    database: &Endpoint,
    redis: &Endpoint,
    browser_paths: Option<&(PathBuf, PathBuf)>,
) -> Result<()> {
    let mut packages = Vec::new();
    if nats::needs_download(root)
        && !cmd::succeeds(Command::new("python3").args(["-m", "pip", "--version"]))
    {
        packages.push("python3-pip");
    }
    if postgres::needs_local_server(database) && cmd::find_in_path("pg_ctlcluster").is_none() {
        packages.push("postgresql");
    } else if cmd::find_in_path("psql").is_none() {
        packages.push("postgresql-client");
    }
    if redis::needs_local_server(redis) && cmd::find_in_path("redis-server").is_none() {
        packages.push("redis-server");
    }
    if std::env::var_os("NEBULA_DOCKER_HOST").is_none() {
        packages.extend(docker::missing_packages());
    }
    // The hosts tests run an sshd of their own (never the system's) and the bench OpenSSH's
    // client; Debian's policy-rc.d on these machines keeps apt from starting the service.
    if !Path::new("/usr/sbin/sshd").exists() {
        packages.push("openssh-server");
    }
    if cmd::find_in_path("ssh").is_none() {
        packages.push("openssh-client");
    }
    // The media crate builds against Debian's FFmpeg libraries (ffmpeg-next, bindgen needs
    // libclang); its tests speak with espeak-ng and check videos with ffprobe.
    packages.extend(media_packages());
    // The domains tests run a Caddy of their own, its admin API on a loopback port.
    if cmd::find_in_path("caddy").is_none() {
        packages.push("caddy");
    }
    if let Some((chromium, chromedriver)) = browser_paths {
        if !cmd::is_executable(chromium) {
            packages.push("chromium");
        }
        if !cmd::is_executable(chromedriver) {
            packages.push("chromium-driver");
        }
        // The dashboard's unit tests run under Node's own test runner.
        if cmd::find_in_path("node").is_none() {
            packages.push("nodejs");
        }
        // The AI developer's tests verify a Node package with `npm test`.
        if cmd::find_in_path("npm").is_none() {
            packages.push("npm");
        }
        // The AI developer's tests verify a Python project with pytest: Debian's, for Debian's
        // python3 (pip is refused there); another python3 (pyenv, a venv) gets it from PyPI
        // below.
        if !pytest_present() && system_python() {
            packages.push("python3-pytest");
        }
    }
    if packages.is_empty() {
        step("apt", "all needed packages present");
        return Ok(());
    }
    let list = packages.join(" ");
    if !cmd::is_root() {
        bail!(
            "missing packages: {list}; install them with `sudo apt-get install {list}` (or run xtask as root)"
        );
    }
    if cmd::find_in_path("apt-get").is_none() {
        bail!("missing packages: {list}, and there is no apt-get to install them with");
    }
    step(
        "apt",
        format_args!("installing {list} (this can take a few minutes)"),
    );
    cmd::run_captured(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update failed")?;
    cmd::run_captured(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("failed to install {list}"))?;
    step("apt", format_args!("installed {list}"));
    Ok(())
}
