//! One-shot commands: migrate, tail, replay, rebuild.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use bus::{Bus, ReadFrom, StoredMessage, StreamName};
use clap::Args;
use events::StreamSeq;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Config;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only subjects matching this NATS filter, e.g. `nebula.events.node.>`.
    #[arg(long)]
    pub subject: Option<String>,
    /// Start at a stream sequence (`1200`) or a duration ago (`10m`, `2h`, `1d`); default: only new events.
    #[arg(long)]
    pub since: Option<String>,
    /// Print each commit as stored (JSON) instead of one line per event.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// First stream sequence (inclusive).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Last stream sequence (inclusive); default: the end of the log when the replay starts.
    #[arg(long)]
    pub to: Option<u64>,
    /// A NATS subject filter (`nebula.events.job.*`), or an event type or type prefix (`node.`, `job.failed`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Print each commit as stored (JSON) instead of one line per event.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--since`: a stream sequence, or a duration ago (`90s`, `10m`, `2h`, `1d`).
fn parse_since(raw: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<bus::ReadFrom> {
    if let Ok(seq) = raw.parse::<u64>() {
        return Ok(bus::ReadFrom::Seq(events::StreamSeq(seq)));
    }
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let amount: i64 = number.parse().with_context(|| {
        format!("--since must be a sequence or a duration like 10m, got {raw:?}")
    })?;
    let seconds = match unit {
        "s" => amount,
        "m" => amount * 60,
        "h" => amount * 3600,
        "d" => amount * 86_400,
        _ => anyhow::bail!("--since unit must be s, m, h or d, got {raw:?}"),
    };
    Ok(bus::ReadFrom::Time(
        now - chrono::Duration::seconds(seconds),
    ))
}

pub(crate) async fn migrate(config: &Config) -> anyhow::Result<()> {
    projections::open(config.database_url.expose(), 2).await?;
    Bus::connect(config.bus_config())
        .await
        .with_context(|| format!("failed to provision streams on {}", config.nats_url))?;
    println!("database migrated and streams provisioned");
    Ok(())
}

/// One line per event: `seq  time  type  aggregate  correlation  data`.
fn print_message(
    out: &mut impl Write,
    message: &StoredMessage,
    json: bool,
    type_filter: Option<&str>,
) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", String::from_utf8_lossy(&message.payload));
    }
    match message.decode_commit() {
        Ok(commit) => {
            for event in commit {
                if type_filter.is_some_and(|prefix| !event.event_type.starts_with(prefix)) {
                    continue;
                }
                writeln!(
                    out,
                    "{:>8}  {}  {:<22} {}/{}#{}  corr={}  {}",
                    message.stream_seq,
                    event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    event.event_type,
                    event.aggregate_type,
                    event.aggregate_id,
                    event.aggregate_seq,
                    event.correlation_id,
                    event.data
                )?;
            }
            Ok(())
        }
        Err(err) => writeln!(
            out,
            "{:>8}  {}  <undecodable: {err}>",
            message.stream_seq, message.subject
        ),
    }
}

pub(crate) async fn tail(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let from = match &args.since {
        Some(raw) => parse_since(raw, chrono::Utc::now())?,
        None => ReadFrom::New,
    };
    let mut messages = bus
        .read(StreamName::Events, from, args.subject.clone())
        .await?;
    let stdout = std::io::stdout();
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = messages.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                let mut out = stdout.lock();
                print_message(&mut out, &message, args.json, None)?;
                out.flush()?;
            }
            Some(Err(err)) => tracing::warn!(error = %err, "read failed; continuing"),
            None => return Ok(()),
        }
    }
}

pub(crate) async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let head = bus.last_seq(StreamName::Events).await?;
    let to = StreamSeq(args.to.unwrap_or(head.0).min(head.0));
    anyhow::ensure!(args.from >= 1, "--from starts at 1");
    if args.from > to.0 {
        eprintln!("nothing to replay: the log ends at {head}");
        return Ok(());
    }
    let (subject, type_prefix) = match args.filter.as_deref() {
        Some(filter) if events::subjects::is_ours(filter) => (Some(filter.to_owned()), None),
        Some(filter) => (None, Some(filter)),
        None => (None, None),
    };
    let mut messages = bus
        .read(
            StreamName::Events,
            ReadFrom::Seq(StreamSeq(args.from)),
            subject.clone(),
        )
        .await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        // Everything asked for is already stored, so a long silence means nothing more matches.
        let next =
            match tokio::time::timeout(std::time::Duration::from_secs(3), messages.next()).await {
                Ok(Some(next)) => next?,
                Ok(None) | Err(_) => break,
            };
        if next.stream_seq > to {
            break;
        }
        print_message(&mut out, &next, args.json, type_prefix)?;
        if next.stream_seq >= to || next.pending == Some(0) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) async fn list_projections(config: &Config) -> anyhow::Result<()> {
    let pool = projections::connect(config.database_url.expose(), 2).await?;
    let bus = Bus::connect_only(config.bus_config()).await?;
    let checkpoints = projections::ReadModels::new(pool).checkpoints().await?;
    println!(
        "{:<16} {:<10} {:>10} {:>10}",
        "projection", "stream", "position", "lag"
    );
    for projection in projections::all() {
        let position = checkpoints
            .iter()
            .find(|(n, _)| n == projection.name())
            .map_or(0, |(_, s)| *s);
        let head = bus.last_seq(projection.stream()).await?.0 as i64;
        println!(
            "{:<16} {:<10} {:>10} {:>10}",
            projection.name(),
            projection.stream().as_str(),
            position,
            (head - position).max(0)
        );
    }
    Ok(())
}

pub(crate) async fn rebuild(config: &Config, name: &str) -> anyhow::Result<()> {
    let projection = projections::by_name(name).ok_or_else(|| {
        let known: Vec<&str> = projections::all().iter().map(|p| p.name()).collect();
        anyhow::anyhow!("unknown projection {name:?}; known: {}", known.join(", "))
    })?;
    let pool = projections::open(config.database_url.expose(), 4).await?;
    let bus = Bus::connect(config.bus_config()).await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(name.to_owned());
    let progress_bar = Arc::new(bar);
    let reporter = progress_bar.clone();
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let runner_config = projections::runner::RunnerConfig {
        batch_size: config.projector.batch_size.max(1000),
        max_attempts: config.projector.max_attempts,
        ..Default::default()
    };
    let rebuilt = projections::rebuild::rebuild(
        &pool,
        &bus,
        projection,
        runner_config,
        move |position, head| {
            reporter.set_length(head.0);
            reporter.set_position(position.0.min(head.0));
        },
        cancel,
    )
    .await?;
    progress_bar.finish();
    println!("rebuilt {name} up to stream sequence {}", rebuilt.position);
    Ok(())
}

/// `dlq list`: one line per letter, newest first.
pub(crate) async fn dlq_list(config: &Config, limit: usize) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let (letters, total) = bus.dead_letters(limit).await?;
    let mut out = std::io::stdout().lock();
    if letters.is_empty() {
        writeln!(out, "the DLQ is empty")?;
        return Ok(());
    }
    for letter in &letters {
        writeln!(
            out,
            "{:>6}  {}  {:<24} {}#{}  {}",
            letter.seq,
            letter.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
            letter.origin,
            letter.origin_subject,
            letter.origin_seq,
            letter.reason
        )?;
    }
    if letters.len() as u64 != total {
        writeln!(out, "({} of {total}; --limit for more)", letters.len())?;
    }
    Ok(())
}

/// `dlq show`: where a letter came from, why, and its payload.
pub(crate) async fn dlq_show(config: &Config, seq: u64) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let letter = bus
        .dead_letter_at(StreamSeq(seq))
        .await?
        .with_context(|| format!("no dead letter {seq} on the DLQ"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "dead letter    {}", letter.seq)?;
    writeln!(
        out,
        "at             {}",
        letter.dead_lettered_at.to_rfc3339()
    )?;
    writeln!(out, "given up by    {}", letter.origin)?;
    writeln!(
        out,
        "came from      {} {}#{}",
        letter.origin_stream.map_or("?", |s| s.as_str()),
        letter.origin_subject,
        letter.origin_seq
    )?;
    writeln!(out, "reason         {}", letter.reason)?;
    match letter.replayable() {
        Ok(()) => writeln!(out, "replayable     yes: nebula dlq replay {seq}")?,
        Err(why) => writeln!(out, "replayable     no: {why}")?,
    }
    writeln!(out, "payload        {} bytes", letter.payload.len())?;
    match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
        Ok(json) => writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?,
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&letter.payload))?,
    }
    Ok(())
}

/// `dlq replay`: sends a letter back where it came from, once, as the user running the CLI.
pub(crate) async fn dlq_replay(config: &Config, seq: u64) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let letters = bus::store::commands::<domain::dlq::DeadLetter>(bus.clone(), ());
    let meta = bus::store::CommandMeta::new(crate::access::cli_actor());
    let replayed = sagas::replay_dead_letter(&bus, &letters, StreamSeq(seq), meta)
        .await
        .with_context(|| format!("dead letter {seq}"))?;
    println!(
        "dead letter {seq} sent back to {} (sequence {})",
        replayed.letter.origin_subject, replayed.replayed_seq
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_sequences_and_durations() {
        let now = chrono::Utc::now();
        assert_eq!(
            parse_since("42", now).unwrap(),
            bus::ReadFrom::Seq(events::StreamSeq(42))
        );
        assert_eq!(
            parse_since("10m", now).unwrap(),
            bus::ReadFrom::Time(now - chrono::Duration::minutes(10))
        );
        assert!(parse_since("10y", now).is_err());
        assert!(parse_since("soon", now).is_err());
    }
}
