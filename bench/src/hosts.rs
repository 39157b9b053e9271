//! P9: a command's round trip on a host over SSH through Nebula — REST → `host_exec.requested`
//! → the executor → the pooled russh session → the outcome on the log → the waiting answer —
//! against OpenSSH's own client running the same command over a fresh connection, in the same
//! run against the same sshd (a throwaway one on loopback, testkit's).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Env;
use testkit::ssh::Sshd;

use crate::containers::RoundTrips;
use bench::gateway::GatewayProcess;

const COMMAND: &str = "true";

pub(crate) async fn round_trips(rounds: usize) -> Result<RoundTrips> {
    let env = Env::new("bench_p9", "").await?;
    let stack = GatewayProcess::start_with(
        &env,
        "up",
        &[
            ("NEBULA_AGENT_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("NEBULA_AGENT__DISABLE_GPU_DETECTION", "true".to_owned()),
            ("REDIS_URL", testkit::redis_url()),
        ],
    )
    .await?;
    let sshd = Sshd::start();
    let key = serde_json::json!({ "value": sshd.client_key }).to_string();
    let (status, answer) = stack
        .call("PUT", "/api/secrets/bench-ssh", Some(&key))
        .await?;
    if status != 200 {
        bail!("the key was not stored: {status} {answer}");
    }
    let host = serde_json::json!({
        "name": "bench", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
        "key_secret": "bench-ssh",
    })
    .to_string();
    let (status, answer) = stack.call("POST", "/api/hosts", Some(&host)).await?;
    if status != 201 {
        bail!("the host was not added: {status} {answer}");
    }
    let known_hosts = tempfile::NamedTempFile::new()?;
    let body = serde_json::json!({ "command": COMMAND }).to_string();
    // One untimed command each: the pin and the pool (Nebula), the known host (OpenSSH).
    nebula_exec(&stack, &body).await?;
    openssh(&sshd, known_hosts.path()).await?;
    let mut nebula = Vec::with_capacity(rounds);
    let mut direct = Vec::with_capacity(rounds);
    // Alternated round by round, so drift on a shared machine lands on both.
    for _ in 0..rounds {
        let started = Instant::now();
        nebula_exec(&stack, &body).await?;
        nebula.push(started.elapsed());
        let started = Instant::now();
        openssh(&sshd, known_hosts.path()).await?;
        direct.push(started.elapsed());
    }
    drop(stack);
    env.drop_database().await;
    Ok(RoundTrips { nebula, direct })
}

/// `POST /api/hosts/bench/exec`, then the execution waited for.
async fn nebula_exec(stack: &GatewayProcess, body: &str) -> Result<()> {
    let (status, answer) = stack
        .call("POST", "/api/hosts/bench/exec", Some(body))
        .await?;
    let id = answer["exec_id"]
        .as_str()
        .with_context(|| format!("exec through nebula: {status} {answer}"))?;
    let (status, answer) = stack
        .call("GET", &format!("/api/host-execs/{id}?wait=30"), None)
        .await?;
    if status != 200 || answer["exit_status"] != 0 {
        bail!("exec through nebula: {status} {answer}");
    }
    Ok(())
}

/// `ssh` (OpenSSH's client) running the command on a fresh connection.
async fn openssh(sshd: &Sshd, known_hosts: &std::path::Path) -> Result<()> {
    let status = tokio::process::Command::new("ssh")
        .args(["-q", "-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg("StrictHostKeyChecking=accept-new")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(sshd.client_key_file())
        .args(["-p", &sshd.port.to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user))
        .arg(COMMAND)
        .stdin(Stdio::null())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .context("ssh did not finish in 30 s")??;
    if !status.success() {
        bail!("ssh {COMMAND} failed: {status}");
    }
    Ok(())
}
