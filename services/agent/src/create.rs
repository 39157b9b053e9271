//! Creating a container from a [`ContainerSpec`]: its `secret:NAME` environment values asked of
//! the control plane while the command runs (never on the log, never on WORK), the spec turned
//! into Docker's create body, then created and started.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bus::Bus;
use events::container::{
    ContainerSpec, RevealedSecrets, SECRETS_QUESTION, SecretsQuestion, parse_port, secret_reference,
};

/// The values of the secrets `spec` names, asked of the control plane for command `command_id`.
pub(crate) async fn secrets(
    bus: &Bus,
    node: &str,
    command_id: &str,
    spec: &ContainerSpec,
) -> Result<BTreeMap<String, String>, String> {
    if spec.secrets().is_empty() {
        return Ok(BTreeMap::new());
    }
    let question = SecretsQuestion {
        command_id: command_id.to_owned(),
    };
    let revealed: RevealedSecrets = bus
        .ask_control(node, SECRETS_QUESTION, &question, Duration::from_secs(15))
        .await
        .map_err(|err| format!("the secrets it names were not given: {err}"))?;
    Ok(revealed.values)
}

/// Docker's create body for `spec`, its secret references replaced by `secrets`' values.
pub(crate) fn body(
    spec: &ContainerSpec,
    secrets: &BTreeMap<String, String>,
) -> Result<ContainerCreateBody, String> {
    let mut env = Vec::with_capacity(spec.env.len());
    for (name, value) in &spec.env {
        let value = match secret_reference(value) {
            Some(secret) => secrets
                .get(secret)
                .ok_or_else(|| format!("secret {secret} was not given"))?,
            None => value,
        };
        env.push(format!("{name}={value}"));
    }
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for raw in &spec.ports {
        let (ip, host, container, protocol) =
            parse_port(raw).ok_or_else(|| format!("ports: {raw:?} does not read"))?;
        bindings
            .entry(format!("{container}/{protocol}"))
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: ip,
                host_port: Some(host.to_string()),
            });
    }
    let restart_policy = spec.restart_policy.as_deref().map(|policy| {
        let (name, count) = policy.split_once(':').unwrap_or((policy, ""));
        RestartPolicy {
            name: Some(match name {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: count.parse().ok(),
        }
    });
    let nano_cpus = spec
        .cpus
        .as_deref()
        .and_then(|cpus| cpus.parse::<f64>().ok())
        .map(|cpus| (cpus * 1e9) as i64);
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: (!bindings.is_empty()).then(|| bindings.keys().cloned().collect()),
        host_config: Some(HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy,
            memory: spec
                .memory_limit_bytes
                .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            nano_cpus,
            network_mode: spec.network.clone(),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

/// Creates `name` from `body` and starts it. A container created but refused a start is left
/// as Docker has it (as `docker run` would), and the error says so.
pub(crate) async fn create_and_start(
    docker: &bollard::Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<(), String> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|err| format!("docker: {}", crate::docker_message(&err)))?;
    docker.start_container(name, None).await.map_err(|err| {
        format!(
            "docker: created {name} but did not start it: {}",
            crate::docker_message(&err)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_becomes_dockers_body_with_its_secrets_filled_in() {
        let spec = ContainerSpec {
            image: "nebula-test/busybox:1".into(),
            command: vec!["sleep".into(), "60".into()],
            env: [
                ("TOKEN".to_owned(), "secret:api".to_owned()),
                ("MODE".to_owned(), "prod".to_owned()),
            ]
            .into(),
            ports: vec!["8080:80".into(), "127.0.0.1:8443:443".into()],
            volumes: vec!["data:/data:ro".into()],
            restart_policy: Some("on-failure:3".into()),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            memory_limit_bytes: Some(64 << 20),
            cpus: Some("0.5".into()),
            network: Some("none".into()),
        };
        let secrets = [("api".to_owned(), "s3cr3t".to_owned())].into();
        let made = body(&spec, &secrets).unwrap();
        assert_eq!(
            made.env.unwrap(),
            ["MODE=prod".to_owned(), "TOKEN=s3cr3t".to_owned()]
        );
        let host = made.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        let restart = host.restart_policy.unwrap();
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(3));
        let ports = host.port_bindings.unwrap();
        assert_eq!(
            ports["443/tcp"].as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(body(&spec, &BTreeMap::new()).is_err());
    }
}
