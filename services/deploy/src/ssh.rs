//! Nodes without an agent, reached over SSH: where a target names no agent but a registered
//! host, each container command of a run becomes one `docker` command line run on that host by
//! the hosts executor (`host_exec`: run once, its output on the log), in the run's correlation.
//! A container's `secret:` values travel on the command's standard input
//! (`--env-file /dev/stdin`), read from the vault by the executor as it runs: never in the
//! command line, an event or a log line.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::store::JetStreamStore;
use cqrs_es::EventStore;
use domain::host::{ExecStatus, Host};
use domain::node::Node;
use events::container::{ContainerAction, secret_reference};
use events::host::{ExecRequested, OutputStream};

/// How a deploy target is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Its agent (container commands on the bus).
    Agent,
    /// A registered SSH host with no agent: `docker` over SSH.
    Ssh,
}

/// The nodes and SSH hosts as the log knows them: how each target is reached, and at which
/// address (what `{node_host}` becomes, where a domain's requests go).
pub(crate) struct Places {
    pub(crate) nodes: JetStreamStore<Node>,
    pub(crate) hosts: JetStreamStore<Host>,
}

impl Places {
    pub(crate) fn new(bus: &bus::Bus) -> Self {
        Self {
            nodes: JetStreamStore::new(bus.clone()),
            hosts: JetStreamStore::new(bus.clone()),
        }
    }

    /// An agent that ever registered under `target` wins (an agent that is away fails the run
    /// rather than being gone around); else a registered host of that name.
    pub(crate) async fn reach(&self, target: &str) -> Result<(Reach, String), String> {
        let node = self
            .nodes
            .load_aggregate(target)
            .await
            .map_err(|err| format!("node {target} could not be read: {err}"))?;
        if let Some(inventory) = &node.state().inventory {
            let url = inventory.agent_url.clone().ok_or_else(|| {
                format!("node {target} has no known address (its agent advertises none)")
            })?;
            return Ok((Reach::Agent, host_of_url(target, &url)?));
        }
        let host = self
            .hosts
            .load_aggregate(target)
            .await
            .map_err(|err| format!("host {target} could not be read: {err}"))?;
        match &host.state().registered {
            Some(registered) => Ok((Reach::Ssh, registered.address.clone())),
            None => Err(format!(
                "{target} is neither a node with an agent nor a registered SSH host"
            )),
        }
    }

    /// The address of `target`: its agent's host, or the SSH host's address.
    pub(crate) async fn address(&self, target: &str) -> Result<String, String> {
        self.reach(target).await.map(|(_, address)| address)
    }
}

/// The host part of an agent's URL.
fn host_of_url(node: &str, url: &str) -> Result<String, String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() {
        return Err(format!("node {node}'s agent address {url:?} names no host"));
    }
    Ok(host.to_owned())
}

/// A container command as a shell command line for a host with the Docker CLI, and the
/// secrets it reads on its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliCommand {
    pub(crate) command: String,
    pub(crate) env_secrets: BTreeMap<String, String>,
}

/// `value` as one word for `sh`: bare when it holds nothing the shell reads, else in single
/// quotes.
fn quote(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b));
    if bare {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// The state the container is in afterwards, printed by `docker inspect`.
fn then_state(container: &str) -> String {
    format!(
        " >/dev/null && docker inspect --format '{{{{.State.Status}}}}' {}",
        quote(container)
    )
}

/// The `docker` command line for `action` (the same effect as the agent's Engine API calls:
/// a created container is started, an image is never pulled, a build leaves the image).
pub(crate) fn docker_cli(action: &ContainerAction) -> CliCommand {
    let mut env_secrets = BTreeMap::new();
    let command = match action {
        ContainerAction::Start { container } => {
            format!("docker start {}{}", quote(container), then_state(container))
        }
        ContainerAction::Stop {
            container,
            timeout_secs,
        } => format!(
            "docker stop --time {timeout_secs} {}{}",
            quote(container),
            then_state(container)
        ),
        ContainerAction::Restart {
            container,
            timeout_secs,
        } => format!(
            "docker restart --time {timeout_secs} {}{}",
            quote(container),
            then_state(container)
        ),
        ContainerAction::Remove { container, force } => format!(
            "docker rm{} {} >/dev/null && echo removed",
            if *force { " --force" } else { "" },
            quote(container)
        ),
        ContainerAction::Create { container, spec } => {
            let mut words = vec![
                "docker run --detach --pull never --name".to_owned(),
                quote(container),
            ];
            let mut flag = |name: &str, value: &str| {
                words.push(name.to_owned());
                words.push(quote(value));
            };
            if let Some(policy) = &spec.restart_policy {
                flag("--restart", policy);
            }
            if let Some(bytes) = spec.memory_limit_bytes {
                flag("--memory", &format!("{bytes}b"));
            }
            if let Some(cpus) = &spec.cpus {
                flag("--cpus", cpus);
            }
            if let Some(network) = &spec.network {
                flag("--network", network);
            }
            for port in &spec.ports {
                flag("--publish", port);
            }
            for volume in &spec.volumes {
                flag("--volume", volume);
            }
            for (key, value) in &spec.labels {
                flag("--label", &format!("{key}={value}"));
            }
            for (name, value) in &spec.env {
                match secret_reference(value) {
                    Some(secret) => {
                        env_secrets.insert(name.clone(), secret.to_owned());
                    }
                    None => flag("--env", &format!("{name}={value}")),
                }
            }
            if !env_secrets.is_empty() {
                words.push("--env-file /dev/stdin".to_owned());
            }
            words.push(quote(&spec.image));
            words.extend(spec.command.iter().map(|word| quote(word)));
            format!("{}{}", words.join(" "), then_state(container))
        }
        ContainerAction::Build {
            image,
            repo,
            commit,
            dockerfile,
            command,
        } => {
            let checkout = format!(
                "set -e; work=$(mktemp -d); trap 'rm -rf \"$work\"' EXIT; \
                 git clone --quiet {} \"$work/src\"; cd \"$work/src\"; \
                 git -c advice.detachedHead=false checkout --quiet {}; ",
                quote(repo),
                quote(commit)
            );
            let build = match command {
                None => format!(
                    "docker build --tag {} --file {} .",
                    quote(image),
                    quote(dockerfile)
                ),
                Some(command) => format!(
                    "NEBULA_IMAGE={image} NEBULA_COMMIT={commit} sh -c {}; \
                     docker image inspect {image} >/dev/null 2>&1 || \
                     {{ echo 'the build command left no image {image}' >&2; exit 1; }}",
                    quote(command),
                    image = quote(image),
                    commit = quote(commit),
                ),
            };
            format!(
                "{checkout}{build}; echo built {} from {}",
                quote(image),
                &commit[..12.min(commit.len())]
            )
        }
    };
    CliCommand {
        command,
        env_secrets,
    }
}

impl crate::Deployer {
    /// One container command on SSH host `host`, as a `docker` command line run once by the
    /// hosts executor: what it printed, or why it failed (its error output and exit status).
    pub(crate) async fn over_ssh(
        &self,
        run: &crate::Pending,
        host: &str,
        action: &ContainerAction,
        timeout: Duration,
    ) -> Result<String, String> {
        let cli = docker_cli(action);
        let requested = ExecRequested {
            host: host.to_owned(),
            command: cli.command,
            timeout_secs: u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX),
            env_secrets: cli.env_secrets,
        };
        let exec_id = sagas::hosts::request_exec(&self.execs, requested, self.meta(run))
            .await
            .map_err(|err| format!("not recorded: {err}"))?;
        let exec = sagas::hosts::wait_exec(
            &self.bus,
            &self.exec_state,
            &exec_id,
            timeout + Duration::from_secs(15),
        )
        .await
        .map_err(|err| format!("not followed: {err}"))?;
        if !exec.status.is_some_and(ExecStatus::is_final) {
            return Err(format!("no answer from host {host} in time"));
        }
        let view = sagas::hosts::exec_view(&self.bus, &exec_id)
            .await
            .map_err(|err| format!("its outcome could not be read: {err}"))?
            .ok_or_else(|| format!("execution {exec_id} is not on the log"))?;
        let text = |stream: OutputStream| -> String {
            view.output
                .iter()
                .filter(|chunk| chunk.stream == stream)
                .map(|chunk| chunk.text.as_str())
                .collect::<String>()
                .trim()
                .to_owned()
        };
        match (view.exit_status, &view.error) {
            (Some(0), _) => Ok(text(OutputStream::Stdout)),
            (Some(status), _) => {
                let stderr = text(OutputStream::Stderr);
                Err(if stderr.is_empty() {
                    format!("docker exited {status}")
                } else {
                    format!("{stderr} (exit {status})")
                })
            }
            (None, Some(error)) => Err(format!("over SSH: {error}")),
            (None, None) => Err("over SSH: it ended without a status".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::container::ContainerSpec;

    #[test]
    fn a_created_container_becomes_one_docker_run_with_its_secrets_on_stdin() {
        let mut spec = ContainerSpec {
            image: "nebula-test/busybox:1".to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), "echo 'hi' $X".to_owned()],
            ports: vec!["127.0.0.1:8080:80".to_owned()],
            restart_policy: Some("unless-stopped".to_owned()),
            memory_limit_bytes: Some(1 << 20),
            ..ContainerSpec::default()
        };
        spec.env.insert("MODE".to_owned(), "a b".to_owned());
        spec.env
            .insert("TOKEN".to_owned(), "secret:api-token".to_owned());
        spec.labels
            .insert("nebula.app".to_owned(), "web".to_owned());
        let cli = docker_cli(&ContainerAction::Create {
            container: "web-app-r1".to_owned(),
            spec: Box::new(spec),
        });
        assert_eq!(
            cli.command,
            "docker run --detach --pull never --name web-app-r1 --restart unless-stopped \
             --memory 1048576b --publish 127.0.0.1:8080:80 --label nebula.app=web \
             --env 'MODE=a b' --env-file /dev/stdin nebula-test/busybox:1 sh -c 'echo '\\''hi'\\'' $X' \
             >/dev/null && docker inspect --format '{{.State.Status}}' web-app-r1"
        );
        assert!(!cli.command.contains("api-token"));
        assert_eq!(
            cli.env_secrets,
            BTreeMap::from([("TOKEN".to_owned(), "api-token".to_owned())])
        );
    }

    #[test]
    fn a_build_checks_out_the_commit_and_builds_it_or_runs_its_command() {
        let commit = "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned();
        let mut action = ContainerAction::Build {
            image: "nebula-build/web:4b825dc642cb".to_owned(),
            repo: "/srv/git/web repo".to_owned(),
            commit: commit.clone(),
            dockerfile: "docker/Dockerfile".to_owned(),
            command: None,
        };
        let cli = docker_cli(&action);
        assert!(
            cli.command
                .contains("git clone --quiet '/srv/git/web repo' \"$work/src\"")
        );
        assert!(cli.command.contains(&format!("checkout --quiet {commit};")));
        assert!(cli.command.contains(
            "docker build --tag nebula-build/web:4b825dc642cb --file docker/Dockerfile ."
        ));
        if let ContainerAction::Build { command, .. } = &mut action {
            *command = Some("make image IMAGE=$NEBULA_IMAGE".to_owned());
        }
        let cli = docker_cli(&action);
        assert!(cli.command.contains(
            "NEBULA_IMAGE=nebula-build/web:4b825dc642cb NEBULA_COMMIT=4b825dc642cb6eb9a060e54bf8d69288fbee4904 \
             sh -c 'make image IMAGE=$NEBULA_IMAGE';"
        ));
        assert!(
            cli.command
                .contains("docker image inspect nebula-build/web:4b825dc642cb")
        );
        assert!(!cli.command.contains("docker build"));
    }

    #[test]
    fn stop_and_remove_say_what_they_left() {
        let stop = docker_cli(&ContainerAction::Stop {
            container: "web-app-r1".to_owned(),
            timeout_secs: 10,
        });
        assert_eq!(
            stop.command,
            "docker stop --time 10 web-app-r1 >/dev/null && docker inspect --format '{{.State.Status}}' web-app-r1"
        );
        let remove = docker_cli(&ContainerAction::Remove {
            container: "web-app-r1".to_owned(),
            force: true,
        });
        assert_eq!(
            remove.command,
            "docker rm --force web-app-r1 >/dev/null && echo removed"
        );
    }

    #[test]
    fn an_agent_address_gives_its_host() {
        assert_eq!(
            host_of_url("n", "http://10.0.0.5:7070/x").unwrap(),
            "10.0.0.5"
        );
        assert_eq!(host_of_url("n", "nas.lan").unwrap(), "nas.lan");
        assert!(host_of_url("n", "http://:80").is_err());
    }
}
