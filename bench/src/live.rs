//! Live latency over the websocket feed (P3, and P10 beside a flood of followed log lines): a
//! steady rate of appended events, each stamped with its send time, and many viewers that
//! time its arrival; with the minimal websocket client the load generator needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use bench::Env;
use bus::ExpectedSeq;
use bus::StreamName;
use events::{Actor, CorrelationId, EventEnvelope, JobId};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use bench::gateway::GatewayProcess;

/// 200 websocket clients on a separate gateway process while events are published at a fixed
/// rate; latency from publish to each client's receipt.
/// P3: events appended at a steady rate, read by `clients` websocket viewers of a gateway of
/// its own; latency from append to arrival, and the gateway's memory.
pub(crate) async fn live_latency(
    env: &Env,
    clients: usize,
    per_second: u64,
    seconds: u64,
) -> Result<Value> {
    let gateway = GatewayProcess::start(env).await?;
    // The clients sign in as a named viewer, as a dashboard would; auth is paid once per
    // connection, never per frame.
    let token = gateway.issue_token("bench-viewer", "viewer").await?;
    let mut live = measure(env, gateway.port, &token, clients, per_second, seconds).await?;
    let rss = memory_kb(gateway.pid());
    drop(gateway);
    live["gateway_peak_rss_mb"] = json!(rss.0 as f64 / 1024.0);
    live["gateway_rss_mb"] = json!(rss.1 as f64 / 1024.0);
    Ok(live)
}

/// Appends `per_second` events for `seconds`, each stamped with its send time, and measures
/// when each of `clients` websocket viewers of the gateway at `port` receives it.
pub(crate) async fn measure(
    env: &Env,
    port: u16,
    token: &str,
    clients: usize,
    per_second: u64,
    seconds: u64,
) -> Result<Value> {
    let head = env.bus.last_seq(StreamName::Events).await?.0;
    let total_events = per_second * seconds;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut socket = RawWebSocket::connect(port, &format!("/ws?since={head}"), token).await?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut count = 0;
            while count < total_events {
                let Ok(Ok(Some(payload))) =
                    tokio::time::timeout(Duration::from_secs(15), socket.next_text()).await
                else {
                    break;
                };
                let Some(sent) = sent_ns(&payload) else {
                    continue;
                };
                let latency_us = (now_ns().saturating_sub(sent) / 1000).max(1);
                let _ = histogram.record(latency_us.min(60_000_000));
                count += 1;
                received.fetch_add(1, Ordering::Relaxed);
            }
            histogram
        }));
    }
    // The publisher: a steady rate, each event stamped with its send time.
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total_events {
        interval.tick().await;
        let event = EventEnvelope::new(
            JobId::new().to_string(),
            1,
            &bench::jobs::JobEvent::Requested(bench::jobs::JobRequested {
                kind: "latency".into(),
                priority: 0,
                params: json!({ "sent_ns": now_ns() }),
            }),
            CorrelationId::new(),
            None,
            Actor::Service("bench".into()),
        );
        env.bus.append(&[event], ExpectedSeq::Any).await?;
        sent += 1;
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for reader in readers {
        merged.add(reader.await?)?;
    }
    let expected = total_events * clients as u64;
    let received = received.load(Ordering::Relaxed);
    Ok(json!({
        "clients": clients,
        "events_per_second": per_second,
        "seconds": seconds,
        "sent": total_events,
        "expected": expected,
        "received": received,
        "lost": expected.saturating_sub(received),
        "p50_ms": merged.value_at_quantile(0.50) as f64 / 1000.0,
        "p95_ms": merged.value_at_quantile(0.95) as f64 / 1000.0,
        "p99_ms": merged.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": merged.max() as f64 / 1000.0,
    }))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn sent_ns(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let start = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = frame[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// A minimal websocket client for the load generator: a hand-made upgrade and a frame reader
/// over a large buffer. The library client cost more CPU than the gateway itself on 2 cores,
/// which then showed up as "latency".
pub(crate) struct RawWebSocket {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl RawWebSocket {
    pub(crate) async fn connect(port: u16, path: &str, token: &str) -> Result<RawWebSocket> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Authorization: Bearer {token}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, stream);
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        if !status.contains(" 101 ") {
            bail!("websocket upgrade refused: {status}");
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Ok(RawWebSocket { reader })
    }

    /// The next text frame's payload (server frames are unmasked); `None` at close.
    pub(crate) async fn next_text(&mut self) -> Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        loop {
            let mut header = [0u8; 2];
            self.reader.read_exact(&mut header).await?;
            let opcode = header[0] & 0x0f;
            let length = match header[1] & 0x7f {
                126 => u64::from(self.reader.read_u16().await?),
                127 => self.reader.read_u64().await?,
                short => u64::from(short),
            };
            let mut payload = vec![0; usize::try_from(length)?];
            self.reader.read_exact(&mut payload).await?;
            match opcode {
                0x1 => return Ok(Some(payload)),
                0x8 => return Ok(None),
                _ => {}
            }
        }
    }
}

/// (peak, current) resident memory of a process, in KiB.
pub(crate) fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
