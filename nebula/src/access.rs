//! `nebula tokens create|list|revoke`: named API tokens, straight on the event log (as the user
//! running the CLI), for the machine that holds the bus.

use std::io::Write;

use anyhow::Context;
use bus::Bus;
use chrono::Utc;
use clap::Subcommand;
use events::access::Role;

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token; its text is printed once, here, and kept nowhere.
    Create {
        /// A name for who uses it (`grafana`, `ci`): every action it takes is recorded under it.
        #[arg(long)]
        name: String,
        /// viewer (reads, live feed, metrics), operator (also jobs and posts) or admin.
        #[arg(long)]
        role: Role,
        /// Days until it stops working (never, when absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Every token name: role, status, who issued it and when.
    List,
    /// Stop a token at once.
    Revoke { name: String },
}

/// Who the CLI acts as on the log: `cli:<login>`.
pub(crate) fn cli_actor() -> events::Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    events::Actor::User(format!("cli:{user}"))
}

fn actor_name(actor: &events::Actor) -> String {
    match actor {
        events::Actor::User(id) => id.clone(),
        events::Actor::Service(id) => format!("service:{id}"),
        events::Actor::Node(id) => format!("node:{id}"),
    }
}

pub(crate) async fn tokens(config: &Config, command: TokensCommand) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let commands = bus::store::commands::<domain::access::ApiToken>(bus.clone(), ());
    let meta = || bus::store::CommandMeta::new(cli_actor());
    match command {
        TokensCommand::Create {
            name,
            role,
            expires_in_days,
        } => {
            let expires_at = sagas::access::expiry(None, expires_in_days, Utc::now())?;
            let token = sagas::access::issue_token(&commands, &name, role, expires_at, meta())
                .await
                .with_context(|| format!("token {name:?} was not issued"))?;
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "issued {name} ({role}{}); the token is shown once:",
                expires_at.map_or(String::new(), |at| format!(", expires {}", at.to_rfc3339()))
            )?;
            println!("{token}");
        }
        TokensCommand::List => {
            let now = Utc::now();
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<24} {:<9} {:<8} {:<26} {:<20} EXPIRES",
                "NAME", "ROLE", "STATUS", "ISSUED", "BY"
            )?;
            for record in sagas::access::list_tokens(&bus).await? {
                writeln!(
                    out,
                    "{:<24} {:<9} {:<8} {:<26} {:<20} {}",
                    record.name,
                    record.role,
                    record.status(now),
                    record.issued_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    actor_name(&record.issued_by),
                    record.expires_at.map_or("never".to_owned(), |at| at
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string())
                )?;
            }
        }
        TokensCommand::Revoke { name } => {
            sagas::access::revoke_token(&commands, &name, meta())
                .await
                .with_context(|| format!("token {name:?} was not revoked"))?;
            println!(
                "revoked {name}: it stops working at once on this gateway, within {} s on any other",
                gateway::RECHECK_AFTER.as_secs()
            );
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a new version of a secret, its value read from stdin (never from an argument,
    /// which would land in the shell's history and the process list).
    Set { name: String },
    /// Every secret: name, version, who set it and when (never a value).
    List,
    /// Delete a secret.
    Rm { name: String },
}

pub(crate) async fn secrets(config: &Config, command: SecretsCommand) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let site = config.site(None);
    let vault = vault::Vault::open(&bus, &vault::KeySource::new(site.vault_key_file), true).await?;
    let meta = || bus::store::CommandMeta::new(cli_actor());
    match command {
        SecretsCommand::Set { name } => {
            use std::io::{IsTerminal, Read};
            if std::io::stdin().is_terminal() {
                eprintln!("value of {name} (end with Ctrl-D):");
            }
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("failed to read the value from stdin")?;
            // One trailing newline is how `echo` and editors end a line, not part of a token.
            let value = value
                .strip_suffix("\r\n")
                .or_else(|| value.strip_suffix('\n'))
                .unwrap_or(&value);
            let version = vault
                .set(&name, &common::Secret::new(value), meta())
                .await
                .with_context(|| format!("secret {name:?} was not set"))?;
            println!("{name} is now version {version}");
        }
        SecretsCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<32} {:>7} {:<26} BY", "NAME", "VERSION", "SET")?;
            for record in vault.list().await? {
                writeln!(
                    out,
                    "{:<32} {:>7} {:<26} {}",
                    record.name,
                    record.version,
                    record.set_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    actor_name(&record.set_by)
                )?;
            }
        }
        SecretsCommand::Rm { name } => {
            let version = vault
                .remove(&name, meta())
                .await
                .with_context(|| format!("secret {name:?} was not removed"))?;
            println!("removed {name} (it was at version {version})");
        }
    }
    Ok(())
}
