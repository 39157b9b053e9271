//! Redis: start a throwaway local redis-server when needed and check it answers `PING`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, step};
use crate::net::Endpoint;

/// Whether a local redis-server has to be installed and started.
pub(crate) fn needs_local_server(endpoint: &Endpoint) -> bool {
    endpoint.is_loopback() && !endpoint.accepts()
}

pub(crate) fn ensure(root: &Path, endpoint: &Endpoint) -> Result<()> {
    let address = endpoint.address();
    if endpoint.scheme == "rediss" {
        step("redis", format_args!("{address} uses TLS; not checked"));
        return Ok(());
    }
    if needs_local_server(endpoint) {
        start(root, endpoint)?;
    }
    ping(endpoint)?;
    step("redis", format_args!("{address} answers PING"));
    Ok(())
}

/// No persistence: the dev stack's Redis holds caches only.
fn start(root: &Path, endpoint: &Endpoint) -> Result<()> {
    let state_dir = root.join(".nebula");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("failed to create {}", state_dir.display()))?;
    let port = endpoint.port.to_string();
    cmd::run_captured(
        Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .arg("--dir")
            .arg(&state_dir)
            .arg("--pidfile")
            .arg(state_dir.join("redis.pid"))
            .arg("--logfile")
            .arg(state_dir.join("redis.log")),
    )?;
    if !cmd::wait_until(Duration::from_secs(10), || Ok(endpoint.accepts()))? {
        bail!(
            "redis-server did not accept connections on port {port} within 10 s; see .nebula/redis.log"
        );
    }
    step(
        "redis",
        format_args!("started redis-server on 127.0.0.1:{port} (pid in .nebula/redis.pid)"),
    );
    Ok(())
}

/// Sends `AUTH` (when the URL has a password) and `PING`; expects `+OK` and `+PONG`.
fn ping(endpoint: &Endpoint) -> Result<()> {
    let address = endpoint.address();
    let mut stream = endpoint
        .connect()
        .with_context(|| format!("nothing answers at REDIS_URL ({address})"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .context("failed to set a read timeout")?;
    let mut request = Vec::new();
    if let Some(password) = endpoint.password.as_deref() {
        let mut auth = vec!["AUTH"];
        auth.extend(endpoint.user.as_deref());
        auth.push(password);
        request.extend(resp_command(&auth));
    }
    request.extend(resp_command(&["PING"]));
    stream
        .write_all(&request)
        .with_context(|| format!("failed to send PING to {address}"))?;

    let mut reader = BufReader::new(stream);
    let expected = if endpoint.password.is_some() {
        ["+OK", "+PONG"].as_slice()
    } else {
        &["+PONG"]
    };
    for want in expected {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .with_context(|| format!("no answer to PING from {address}"))?;
        if line.trim_end() != *want {
            bail!(
                "{address} answered {:?} where Redis answers {want:?}",
                line.trim_end()
            );
        }
    }
    Ok(())
}

/// A command in RESP's array form, which is safe for any bytes in the arguments.
fn resp_command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend(format!("${}\r\n{part}\r\n", part.len()).into_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_resp_arrays() {
        assert_eq!(resp_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            resp_command(&["AUTH", "p w"]),
            b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n"
        );
    }
}
