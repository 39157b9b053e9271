//! `cargo xtask`: the project's automation (dev stack, tests), in Rust rather than shell.
//! Run `cargo xtask help` for the commands.

mod cmd;
mod docker;
mod nats;
mod net;
mod postgres;
mod prepare;
mod redis;

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::prepare::{Browser, Stack, prepare};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  up            prepare the dev stack, build nebula, run `nebula migrate`, then `nebula up`
  test [args]   prepare the dev stack (with chromium and node), run the dashboard's unit
                tests (`node --test dashboard/tests/`), then
                `cargo test --workspace --no-fail-fast [args]`
  bench [--quick]  prepare the stack, build release binaries, run the benchmark; writes
                bench/results/latest.json (--quick: small sizes, a smoke run)
  chaos [--quick] [--only r5,r6]  fault runs: projector SIGKILLs, nats-server restarts,
                Postgres restarts and two minutes away, poison events, a chat flood, Redis away,
                a full event log; non-zero exit on any lost or duplicated event
  prepare       only prepare the dev stack: apt packages, nats-server, Postgres, Redis
  help          show this

environment (defaults in brackets):
  NATS_URL         [nats://127.0.0.1:4322] a free loopback port gets .nebula/bin/nats-server
                   with nats.conf; 4322 because an old nats-server often holds 4222
  DATABASE_URL     [postgres://nebula:nebula@127.0.0.1:5432/nebula] on loopback, the local
                   Debian cluster is started and the role (CREATEDB) and database created
  REDIS_URL        [redis://127.0.0.1:6379] on loopback, redis-server is started when down
  NATS_NKEY_FILE   [.nebula/nats-auth/control.nk] the control plane's nkey seed; xtask makes
                   one user per role there and nats.conf includes their authorization
  NATS_SERVER_BIN  a nats-server >= 2.10 to use instead of downloading one
  NEBULA_DOCKER_HOST [unix://.nebula/docker/docker.sock] a Docker engine; when unset, xtask
                   starts Debian's dockerd there (vfs, no iptables, no bridge) and imports the
                   test image nebula-test/busybox:1 made from busybox-static
  CHROMIUM_BIN     [/usr/bin/chromium] browser for `test`
  CHROMEDRIVER     [/usr/bin/chromedriver] driver for `test`
  CARGO_TARGET_DIR [target] where `up` finds the nebula binary

State lives in .nebula/ (git-ignored); `kill $(cat .nebula/nats.pid)` stops nats-server,
`kill $(cat .nebula/docker/docker.pid)` the Docker engine (`test`, `bench` and `chaos` stop
a dockerd they started themselves when they finish; `up` leaves it running).
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let command = args.next().map(|arg| arg.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    let root = repo_root()?;
    match command.as_deref() {
        Some("up") => {
            no_arguments("up", &rest)?;
            up(&root)
        }
        Some("test") => test(&root, &rest),
        Some("prepare") => {
            no_arguments("prepare", &rest)?;
            prepare(&root, Browser::NotNeeded)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(tool @ ("bench" | "chaos")) => release_tool(&root, tool, &rest),
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace root: the parent of this crate's directory (not the current directory).
fn repo_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

fn no_arguments(command: &str, rest: &[OsString]) -> Result<()> {
    match rest.first() {
        Some(arg) => bail!(
            "`cargo xtask {command}` takes no arguments (got `{}`)",
            arg.to_string_lossy()
        ),
        None => Ok(()),
    }
}

fn cargo(root: &Path, stack: &Stack) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(root)
        .envs(stack.env.iter().map(|(name, value)| (name, value)));
    command
}

fn up(root: &Path) -> Result<ExitCode> {
    let stack = prepare(root, Browser::NotNeeded)?;
    let status = cargo(root, &stack)
        .args(["build", "-p", "nebula"])
        .status()
        .context("failed to run `cargo build -p nebula`")?;
    if !status.success() {
        bail!("`cargo build -p nebula` failed ({status})");
    }
    // relative CARGO_TARGET_DIR is relative to where cargo ran: the root
    let target_dir =
        root.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()));
    let nebula = target_dir.join("debug/nebula");
    let nebula_command = |subcommand: &str| {
        let mut command = Command::new(&nebula);
        command
            .arg(subcommand)
            .current_dir(root)
            .envs(stack.env.iter().map(|(name, value)| (name, value)));
        command
    };
    let status = nebula_command("migrate")
        .status()
        .with_context(|| format!("failed to run `{} migrate`", nebula.display()))?;
    if !status.success() {
        bail!("`nebula migrate` failed ({status})");
    }
    // exec: nebula takes over this process, so Ctrl-C reaches it alone (xtask is not left to die
    // first) and its exit status is ours. exec returns only when it fails.
    let err = nebula_command("up").exec();
    Err(err).with_context(|| format!("failed to run `{} up`", nebula.display()))
}

/// Builds `nebula` and the bench tools in release mode and runs `tool` (`bench` or `chaos`).
fn release_tool(root: &Path, tool: &str, extra_args: &[OsString]) -> Result<ExitCode> {
    let stack = prepare(root, Browser::NotNeeded)?;
    let status = cargo(root, &stack)
        .args(["build", "--release", "-p", "nebula", "-p", "bench"])
        .status()
        .context("failed to run `cargo build --release`")?;
    if !status.success() {
        bail!("`cargo build --release` failed ({status})");
    }
    let target_dir =
        root.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()));
    let binary = target_dir.join("release").join(tool);
    let status = Command::new(&binary)
        .args(extra_args)
        .current_dir(root)
        .envs(stack.env.iter().map(|(name, value)| (name, value)))
        .status()
        .with_context(|| format!("failed to run {}", binary.display()))?;
    stack.docker.stop_if_started();
    Ok(exit_code(status))
}

fn test(root: &Path, extra_args: &[OsString]) -> Result<ExitCode> {
    let stack = prepare(root, Browser::Needed)?;
    let started = Instant::now();
    let mut dashboard = Command::new("node");
    dashboard
        .args(["--test", "dashboard/tests/"])
        .current_dir(root);
    println!("xtask: running `{}`", cmd::describe(&dashboard));
    let dashboard = dashboard
        .status()
        .context("failed to run the dashboard's unit tests with node")?;
    let mut command = cargo(root, &stack);
    command.arg("test");
    if !selects_packages(extra_args) {
        command.arg("--workspace");
    }
    command.arg("--no-fail-fast").args(extra_args);
    println!("xtask: running `{}`", cmd::describe(&command));
    let status = command.status().context("failed to run `cargo test`");
    // The engine this run started is stopped whatever came of the tests.
    stack.docker.stop_if_started();
    let status = status?;
    println!("xtask: tests took {} s", started.elapsed().as_secs());
    if !dashboard.success() {
        println!("xtask: the dashboard's unit tests failed ({dashboard})");
        return Ok(ExitCode::FAILURE);
    }
    Ok(exit_code(status))
}

/// Whether cargo's own arguments (before `--`) pick packages, which `--workspace` would override.
fn selects_packages(args: &[OsString]) -> bool {
    args.iter()
        .map(|arg| arg.to_string_lossy())
        .take_while(|arg| arg != "--")
        .any(|arg| {
            arg == "-p"
                || arg == "--package"
                || arg.starts_with("--package=")
                || (arg.starts_with("-p") && arg.len() > 2)
        })
}

/// The child's exit code, or 128 + signal like a shell when a signal ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn package_selection_replaces_workspace() {
        assert!(selects_packages(&args(&["-p", "bus"])));
        assert!(selects_packages(&args(&[
            "--package=bus",
            "--",
            "--nocapture"
        ])));
        assert!(selects_packages(&args(&["-pbus"])));
        assert!(!selects_packages(&args(&["--", "-p"])));
        assert!(!selects_packages(&args(&["--release"])));
    }
}
