//! What supervising a service does to it, by kind: start it (a command spawned in a process
//! group of its own, a container started on the node's Docker, a unit started by systemctl),
//! tell whether it still runs, restart it, stop it; and the health checks (HTTP status and
//! JSON, TCP connect).

use std::process::Stdio;
use std::time::Duration;

use common::process::INHERITED_ENV;

use crate::config::{HealthConfig, ServiceConfig};

/// A started service: what is known of it while it runs.
pub enum Running {
    /// The process and its pid (remembered: a reaped leader's group may still hold others).
    Command(tokio::process::Child, Option<u32>),
    /// A container or a unit: nothing held here.
    Outside,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Running::Command(_, pid) => *pid,
            Running::Outside => None,
        }
    }
}

/// How a running service is doing apart from its health check.
pub enum Alive {
    Yes,
    /// It stopped: why, and whether it ended well (exit status 0).
    Ended {
        reason: String,
        success: bool,
    },
    /// Docker's own health check says unhealthy.
    Unhealthy(String),
}

/// Where the service lives.
pub enum Target {
    Command,
    Container { docker_host: String, name: String },
    Systemd { systemctl: String, unit: String },
}

impl Target {
    /// Where `config`'s service lives: the node's Docker at `docker_host` serves a container,
    /// `systemctl` a unit.
    pub fn of(config: &ServiceConfig, docker_host: &str, systemctl: &str) -> Target {
        if let Some(name) = &config.container {
            Target::Container {
                docker_host: docker_host.to_owned(),
                name: name.clone(),
            }
        } else if let Some(unit) = &config.systemd_unit {
            Target::Systemd {
                systemctl: systemctl.to_owned(),
                unit: unit.clone(),
            }
        } else {
            Target::Command
        }
    }

    /// Starts it (a container or unit already running is taken as it is).
    pub async fn start(&self, config: &ServiceConfig) -> Result<Running, String> {
        match self {
            Target::Command => {
                let inherited = INHERITED_ENV
                    .iter()
                    .copied()
                    .chain(config.pass_env.iter().map(String::as_str))
                    .filter_map(|name| Some((name, std::env::var_os(name)?)));
                let mut command = tokio::process::Command::new(&config.command[0]);
                command
                    .args(&config.command[1..])
                    .env_clear()
                    .envs(inherited)
                    .envs(&config.env)
                    .stdin(Stdio::null())
                    .stdout(output(config)?)
                    .stderr(output(config)?)
                    .process_group(0)
                    .kill_on_drop(true);
                if let Some(dir) = &config.working_dir {
                    command.current_dir(dir);
                }
                command
                    .spawn()
                    .map(|child| {
                        let pid = child.id();
                        Running::Command(child, pid)
                    })
                    .map_err(|err| format!("failed to start {:?}: {err}", config.command[0]))
            }
            Target::Container { docker_host, name } => {
                let docker = docker(docker_host).await?;
                let inspected = docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|err| format!("docker: {}", docker_message(&err)))?;
                let running = inspected.state.and_then(|s| s.running).unwrap_or(false);
                if !running {
                    docker
                        .start_container(name, None)
                        .await
                        .map_err(|err| format!("docker: {}", docker_message(&err)))?;
                }
                Ok(Running::Outside)
            }
            Target::Systemd { systemctl, unit } => {
                if systemctl_status(systemctl, "is-active", unit).await? != "active" {
                    systemctl_status(systemctl, "start", unit).await?;
                }
                Ok(Running::Outside)
            }
        }
    }

    /// Whether it still runs.
    pub async fn alive(&self, running: &mut Running) -> Alive {
        match (self, running) {
            (Target::Command, Running::Command(child, _)) => match child.try_wait() {
                Ok(None) => Alive::Yes,
                Ok(Some(status)) => Alive::Ended {
                    reason: format!("exited: {status}"),
                    success: status.success(),
                },
                Err(err) => Alive::Ended {
                    reason: format!("cannot be waited for: {err}"),
                    success: false,
                },
            },
            (Target::Container { docker_host, name }, _) => {
                let inspected = match docker(docker_host).await {
                    Ok(docker) => docker
                        .inspect_container(name, None)
                        .await
                        .map_err(|err| format!("docker: {}", docker_message(&err))),
                    Err(err) => Err(err),
                };
                let state = match inspected {
                    Ok(inspected) => inspected.state.unwrap_or_default(),
                    Err(err) => {
                        return Alive::Ended {
                            reason: err,
                            success: false,
                        };
                    }
                };
                if !state.running.unwrap_or(false) {
                    let code = state.exit_code.unwrap_or(-1);
                    return Alive::Ended {
                        reason: format!(
                            "container {name} is {} (exit code {code})",
                            state
                                .status
                                .map_or_else(|| "not running".to_owned(), |s| s.to_string())
                        ),
                        success: code == 0,
                    };
                }
                match state.health.and_then(|h| h.status) {
                    Some(bollard::models::HealthStatusEnum::UNHEALTHY) => {
                        Alive::Unhealthy(format!("container {name}'s health check fails"))
                    }
                    _ => Alive::Yes,
                }
            }
            (Target::Systemd { systemctl, unit }, _) => {
                match systemctl_status(systemctl, "is-active", unit).await {
                    Ok(state)
                        if state == "active" || state == "activating" || state == "reloading" =>
                    {
                        Alive::Yes
                    }
                    Ok(state) => Alive::Ended {
                        reason: format!("unit {unit} is {state}"),
                        success: state == "inactive",
                    },
                    Err(err) => Alive::Ended {
                        reason: err,
                        success: false,
                    },
                }
            }
            (Target::Command, Running::Outside) => Alive::Ended {
                reason: "no process".to_owned(),
                success: false,
            },
        }
    }

    /// Stops what the agent owns: a command's process group (SIGTERM, `grace`, then SIGKILL);
    /// a hung container or unit is stopped so that the next start restarts it; on shutdown
    /// (`hung` false) containers and units are left running.
    pub async fn stop(&self, running: &mut Running, grace: Duration, hung: bool) {
        match (self, running) {
            (Target::Command, Running::Command(child, pid)) => {
                if let Err(err) = common::process::stop_group(child, *pid, grace).await {
                    tracing::warn!(error = %err, "cannot stop a service's process group");
                }
            }
            (Target::Container { docker_host, name }, _) if hung => {
                if let Ok(docker) = docker(docker_host).await {
                    let options = bollard::query_parameters::StopContainerOptionsBuilder::new()
                        .t(i32::try_from(grace.as_secs()).unwrap_or(10))
                        .build();
                    let _ = docker.stop_container(name, Some(options)).await;
                }
            }
            (Target::Systemd { systemctl, unit }, _) if hung => {
                let _ = systemctl_status(systemctl, "stop", unit).await;
            }
            _ => {}
        }
    }
}

/// Where a command's output goes: appended to its `log_file`, else nowhere.
fn output(config: &ServiceConfig) -> Result<Stdio, String> {
    let Some(path) = &config.log_file else {
        return Ok(Stdio::null());
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .map_err(|err| format!("cannot open its log file {}: {err}", path.display()))
}

async fn docker(host: &str) -> Result<bollard::Docker, String> {
    if host.is_empty() {
        return Err("agent.docker_host is not set: a container service needs Docker".to_owned());
    }
    connect_docker(host)
        .await
        .map_err(|err| format!("docker: {err}"))
}

/// A connection to the Docker engine at `host` (`unix://<path>`), its API version negotiated.
pub async fn connect_docker(host: &str) -> Result<bollard::Docker, String> {
    let path = host
        .strip_prefix("unix://")
        .ok_or_else(|| format!("{host} is not a unix:// socket"))?;
    let docker = bollard::Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)
        .map_err(|err| format!("unavailable: {err}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|err| format!("unavailable: {err}"))
}

/// Docker's own words for an error (its message and status when it answered).
pub fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} ({status_code})"),
        other => other.to_string(),
    }
}

/// `systemctl <verb> <unit>`'s first line of output (`is-active` answers the state even when
/// it exits non-zero); an error when systemctl cannot be run or `start`/`stop` fail.
async fn systemctl_status(systemctl: &str, verb: &str, unit: &str) -> Result<String, String> {
    let output = tokio::process::Command::new(systemctl)
        .args([verb, unit])
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .map_err(|_| format!("{systemctl} {verb} {unit} did not answer in 30 s"))?
        .map_err(|err| format!("cannot run {systemctl}: {err}"))?;
    let first = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if verb != "is-active" && !output.status.success() {
        return Err(format!(
            "{systemctl} {verb} {unit} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(first)
}

/// The configured health check: `Ok` when it passes (or when there is none), else why not.
pub async fn check(health: &HealthConfig, http: &reqwest::Client) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(health.timeout_secs);
    if let Some(url) = &health.http {
        let response = http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| format!("GET {url} failed: {err}"))?;
        let status = response.status();
        let expected = health
            .expect_status
            .map_or(status.is_success(), |code| status.as_u16() == code);
        if !expected {
            return Err(format!("GET {url} answered {}", status.as_u16()));
        }
        if let (Some(pointer), Some(wanted)) = (&health.json_pointer, &health.json_equals) {
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|err| format!("GET {url} did not answer JSON: {err}"))?;
            let found = body.pointer(pointer);
            if found != Some(wanted) {
                return Err(format!(
                    "GET {url}: {pointer} is {}, not {wanted}",
                    found.map_or_else(|| "missing".to_owned(), ToString::to_string)
                ));
            }
        }
    }
    if let Some(addr) = &health.tcp {
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| format!("connecting to {addr} took over {} s", timeout.as_secs_f64()))?
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    }
    Ok(())
}
