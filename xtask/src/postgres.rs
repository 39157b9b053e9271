//! Postgres: start the local Debian cluster when needed, create the role and database from
//! `DATABASE_URL`, and check that the URL works.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, step};
use crate::net::Endpoint;

/// Whether a local Postgres server has to be installed and started (the URL is loopback and
/// nothing listens on its port).
pub(crate) fn needs_local_server(endpoint: &Endpoint) -> bool {
    endpoint.is_loopback() && !endpoint.accepts()
}

pub(crate) fn ensure(endpoint: &Endpoint, database_url: &str) -> Result<()> {
    let address = endpoint.address();
    if needs_local_server(endpoint) {
        if !cmd::is_root() {
            bail!(
                "nothing listens on {address}; start Postgres (as root: `pg_ctlcluster <version> main start`) or run xtask as root"
            );
        }
        start_cluster(endpoint.port)?;
    }
    if endpoint.is_loopback() && cmd::is_root() {
        ensure_role_and_database(endpoint)?;
    }
    verify(endpoint, database_url)
}

/// Starts the Debian cluster that owns `port`, creating `main` when there is no cluster at all.
fn start_cluster(port: u16) -> Result<()> {
    let listing = cmd::run_captured(Command::new("pg_lsclusters").arg("--no-header"))?;
    // columns: version cluster port status owner data-directory log-file
    let clusters: Vec<Vec<&str>> = listing
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let (version, name) = match clusters
        .iter()
        .find(|columns| columns.get(2) == Some(&port.to_string().as_str()))
    {
        Some(columns) => (columns[0].to_owned(), columns[1].to_owned()),
        None if clusters.is_empty() => {
            let version = newest_installed_version()?;
            step(
                "postgres",
                format_args!("creating cluster {version}/main on port {port}"),
            );
            cmd::run_captured(
                Command::new("pg_createcluster")
                    .args([version.as_str(), "main", "--port", &port.to_string()])
                    .current_dir("/"),
            )?;
            (version, "main".to_owned())
        }
        None => bail!("no Postgres cluster uses port {port}; pg_lsclusters shows:\n{listing}"),
    };
    cmd::run_captured(
        Command::new("pg_ctlcluster")
            .args([version.as_str(), name.as_str(), "start"])
            .current_dir("/"),
    )
    .with_context(|| format!("failed to start Postgres cluster {version}/{name}"))?;
    let endpoint = Endpoint::parse(&format!("postgres://127.0.0.1:{port}"), port)?;
    if !cmd::wait_until(Duration::from_secs(30), || Ok(endpoint.accepts()))? {
        bail!(
            "Postgres cluster {version}/{name} started but does not accept connections on port {port} within 30 s"
        );
    }
    step(
        "postgres",
        format_args!("started cluster {version}/{name} on port {port}"),
    );
    Ok(())
}

/// The highest version under /usr/lib/postgresql (Debian's layout).
fn newest_installed_version() -> Result<String> {
    let dir = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "failed to list {} (is the postgresql package installed?)",
                dir.display()
            )
        })?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some((name.parse::<u32>().ok()?, name)))
        .max()
        .map(|(_, name)| name)
        .with_context(|| format!("no Postgres server version under {}", dir.display()))
}

/// Creates the URL's role (LOGIN CREATEDB, with its password) and database when missing, as the
/// `postgres` superuser over the local socket. Skipped when the server is not a Debian cluster.
fn ensure_role_and_database(endpoint: &Endpoint) -> Result<()> {
    let socket = format!("/var/run/postgresql/.s.PGSQL.{}", endpoint.port);
    if !Path::new(&socket).exists() {
        step(
            "postgres",
            format_args!("no {socket} (not a local Debian cluster); not creating roles"),
        );
        return Ok(());
    }
    let Some(role) = endpoint.user.as_deref() else {
        step("postgres", "DATABASE_URL names no user; not creating roles");
        return Ok(());
    };
    // libpq's default database is the user's name
    let database = if endpoint.path.is_empty() {
        role
    } else {
        endpoint.path.as_str()
    };
    let password_clause = if endpoint.password.is_some() {
        " PASSWORD %L"
    } else {
        ""
    };
    // psql interpolates :'name' as a quoted literal; format's %I/%L quote again for the DDL.
    // Every statement is idempotent, so this can run on every `cargo xtask up`.
    let script = format!(
        "SELECT format('CREATE ROLE %I', :'role') \
           WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec\n\
         SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB{password_clause}', :'role', :'password') \\gexec\n\
         SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role') \
           WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \\gexec\n"
    );
    cmd::run_with_stdin(
        Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
            ])
            .args(["-p", &endpoint.port.to_string()])
            .args(["-v", &format!("role={role}")])
            .args([
                "-v",
                &format!(
                    "password={}",
                    endpoint.password.as_deref().unwrap_or_default()
                ),
            ])
            .args(["-v", &format!("database={database}")])
            .args(["-f", "-"])
            .current_dir("/"),
        Some(&script),
    )
    .with_context(|| format!("failed to create role {role} and database {database}"))?;
    step(
        "postgres",
        format_args!("role {role} (LOGIN CREATEDB) and database {database} exist"),
    );
    Ok(())
}

/// Connects with `DATABASE_URL` and checks the role may create databases (`#[sqlx::test]` does).
fn verify(endpoint: &Endpoint, database_url: &str) -> Result<()> {
    let address = endpoint.address();
    let output = cmd::run_captured(
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                database_url,
            ])
            .args([
                "-c",
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
            ])
            .env("PGCONNECT_TIMEOUT", "5"),
    )
    // the error of run_captured would show the URL, password included
    .map_err(|err| anyhow::anyhow!("{}", redact(&format!("{err:#}"), endpoint)))
    .with_context(|| format!("failed to connect to Postgres at {address} with DATABASE_URL"))?;
    if output.trim() != "t" {
        bail!(
            "the Postgres role in DATABASE_URL may not create databases, which #[sqlx::test] needs: ALTER ROLE {} CREATEDB",
            endpoint.user.as_deref().unwrap_or("<user>")
        );
    }
    step(
        "postgres",
        format_args!("DATABASE_URL connects to {address} (role may create databases)"),
    );
    Ok(())
}

fn redact(text: &str, endpoint: &Endpoint) -> String {
    match endpoint.password.as_deref() {
        Some(password) => text.replace(password, "****"),
        None => text.to_owned(),
    }
}
