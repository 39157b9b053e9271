//! `cargo xtask bench`: throughput and latency of the event pipeline, each figure next to the
//! raw ceiling of the same machine measured in the same run. Prints a table and writes
//! `bench/results/latest.json`. Targets are printed, never asserted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull, stream};
use bench::gateway::{self, GatewayProcess};
use bench::jobs::{Job, JobCommand};
use bench::{Env, job_commits, preload, rate, spawn_event_projections};

mod aidev;
mod chat_burst;
mod containers;
mod deploys;

mod hosts;
mod live;
mod restart;
mod video;
mod video_scenes;
use bus::StreamName;
use bus::consumer::{ConsumerSpec, Outcome};
use bus::store::{CommandMeta, commands};
use bytes::Bytes;
use events::{Actor, JobId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use projections::runner::RunnerConfig;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Sizes {
    ceiling_messages: u64,
    ceiling_rows: u64,
    single_rows: u64,
    sync_always_messages: u64,
    p1_events: u64,
    p1_batch1_seconds: u64,
    p2_aggregates: u64,
    p2_commands_per_aggregate: u64,
    p3_clients: usize,
    p3_rate: u64,
    p3_seconds: u64,
    p4_events: u64,
    p6_messages: u64,
    p7_requests: usize,
    p8_rounds: usize,
    p9_rounds: usize,
    p10_seconds: u64,
    p11_rounds: usize,
    p12_rounds: usize,
    p12_steps: usize,
    p13_rounds: usize,
    p14_rounds: usize,
    p15_sizes: [u64; 3],
    p16_commands: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                ceiling_messages: 20_000,
                ceiling_rows: 20_000,
                single_rows: 500,
                sync_always_messages: 500,
                p1_events: 20_000,
                p1_batch1_seconds: 3,
                p2_aggregates: 100,
                p2_commands_per_aggregate: 10,
                p3_clients: 20,
                p3_rate: 500,
                p3_seconds: 3,
                p4_events: 50_000,
                p6_messages: 5_000,
                p7_requests: 500,
                p8_rounds: 5,
                p9_rounds: 10,
                p10_seconds: 3,
                p11_rounds: 3,
                p12_rounds: 2,
                p12_steps: 10,
                p13_rounds: 1,
                p14_rounds: 1,
                p15_sizes: [0, 10_000, 50_000],
                p16_commands: 300,
            }
        } else {
            Sizes {
                ceiling_messages: 200_000,
                ceiling_rows: 200_000,
                single_rows: 3_000,
                sync_always_messages: 3_000,
                p1_events: 200_000,
                p1_batch1_seconds: 10,
                p2_aggregates: 1_000,
                p2_commands_per_aggregate: 20,
                p3_clients: 200,
                p3_rate: 500,
                p3_seconds: 20,
                p4_events: 1_000_000,
                p6_messages: 50_000,
                p7_requests: 4_000,
                p8_rounds: 25,
                p9_rounds: 50,
                p10_seconds: 10,
                p11_rounds: 10,
                p12_rounds: 5,
                p12_steps: 30,
                p13_rounds: 3,
                p14_rounds: 2,
                p15_sizes: [0, 100_000, 1_000_000],
                p16_commands: 3_000,
            }
        }
    }
}

#[derive(Default)]
struct Report {
    ceilings: BTreeMap<&'static str, Value>,
    figures: BTreeMap<&'static str, Value>,
    rows: Vec<[String; 5]>,
}

impl Report {
    fn ceiling(&mut self, name: &'static str, value: f64, unit: &str) {
        println!("  ceiling {name:<34} {value:>12.0} {unit}");
        self.ceilings
            .insert(name, json!({ "value": value.round(), "unit": unit }));
        self.rows.push([
            format!("ceiling: {name}"),
            format!("{value:.0} {unit}"),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    fn figure(
        &mut self,
        name: &'static str,
        value: f64,
        unit: &str,
        ceiling: Option<(&'static str, f64)>,
        target: &str,
        extra: Value,
    ) {
        let ratio = ceiling.map(|(_, c)| value / c.max(1e-9));
        let ratio_text = ratio
            .map(|r| format!("{r:.2} of {}", ceiling.map_or("", |(n, _)| n)))
            .unwrap_or_default();
        println!("  {name:<42} {value:>12.0} {unit:<10} {ratio_text}");
        let mut entry = json!({ "value": value.round(), "unit": unit, "target": target });
        if let (Some(ratio), Some((against, _))) = (ratio, ceiling) {
            entry["ratio"] = json!((ratio * 1000.0).round() / 1000.0);
            entry["ratio_to"] = json!(against);
        }
        if let (Value::Object(entry), Value::Object(extra)) = (&mut entry, extra) {
            entry.extend(extra);
        }
        self.figures.insert(name, entry);
        self.rows.push([
            name.to_owned(),
            format!("{value:.0} {unit}"),
            ratio_text,
            target.to_owned(),
            String::new(),
        ]);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only p3` runs the ceilings and the named figures only (for iterating on one of them).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect());
    let wanted = |figure: &str| {
        only.as_ref()
            .is_none_or(|only| only.iter().any(|o| o == figure))
    };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || testkit::workspace_root().join("bench/results/latest.json"),
            PathBuf::from,
        );
    let sizes = Sizes::new(quick);
    let mut report = Report::default();
    let started = Instant::now();

    println!("ceilings (raw clients, 256-byte messages)");
    let mut env = Env::new("bench", "").await?;
    let client = async_nats::ConnectOptions::with_nkey(env.nats.control_nkey())
        .connect(env.nats.url())
        .await?;
    let publish_ceiling = ceiling_publish(&client, "CEIL", sizes.ceiling_messages).await?;
    report.ceiling("jetstream_async_publish", publish_ceiling, "msg/s");
    let consume_ceiling = ceiling_consume(&client, "CEIL", sizes.ceiling_messages).await?;
    report.ceiling("jetstream_pull_consume_ack", consume_ceiling, "msg/s");
    let (unnest, single) = ceiling_postgres(&env, sizes.ceiling_rows, sizes.single_rows).await?;
    report.ceiling("postgres_unnest_1000_row_batches", unnest, "rows/s");
    report.ceiling("postgres_one_row_per_transaction", single, "rows/s");
    {
        let strict = testkit::NatsServer::start_with("sync_interval: always");
        let strict_client = async_nats::ConnectOptions::with_nkey(strict.control_nkey())
            .connect(strict.url())
            .await?;
        let always =
            ceiling_publish(&strict_client, "CEIL_SYNC", sizes.sync_always_messages).await?;
        report.ceiling("jetstream_async_publish_sync_always", always, "msg/s");
    }

    if wanted("p1") {
        println!("P1 projection");
        let commits = job_commits((sizes.p1_events / 4) as usize);
        let preload_time = preload(&env.bus, commits, 64).await?;
        report.figure(
            "append_no_check_64_in_flight",
            rate(sizes.p1_events, preload_time),
            "events/s",
            Some(("jetstream_async_publish", publish_ceiling)),
            "info",
            json!({}),
        );
        let before = projection_counters(&env.bus);
        let (elapsed, head) = project_all(&env, RunnerConfig::default(), None).await?;
        let profile = projection_profile(&env.bus, &before, elapsed);
        report.figure(
        "p1_projection",
        rate(head, elapsed),
        "events/s",
        Some(("jetstream_pull_consume_ack", consume_ceiling)),
        ">= 0.5 of consume ceiling",
        json!({ "events": head, "projections": PROJECTIONS, "batch_size": RunnerConfig::default().batch_size, "profile": profile }),
    );
        env.reset_database().await?;
        let batch_one = RunnerConfig {
            batch_size: 1,
            ..RunnerConfig::default()
        };
        let (elapsed, applied) = project_all(
            &env,
            batch_one,
            Some(Duration::from_secs(sizes.p1_batch1_seconds)),
        )
        .await?;
        report.figure(
            "p1_projection_batch_size_1",
            rate(applied, elapsed),
            "events/s",
            Some(("jetstream_pull_consume_ack", consume_ceiling)),
            "info",
            json!({ "events": applied }),
        );
    }

    if wanted("p2") {
        println!("P2 append through the event store");
        let (commands_done, elapsed) =
            append_commands(&env, sizes.p2_aggregates, sizes.p2_commands_per_aggregate).await?;
        report.figure(
            "p2_append",
            rate(commands_done, elapsed),
            "events/s",
            Some(("jetstream_async_publish", publish_ceiling)),
            ">= 0.5 of publish ceiling",
            json!({ "aggregates": sizes.p2_aggregates, "commands": commands_done }),
        );
    }

    if wanted("p3") {
        println!("P3 live latency");
        let live =
            live::live_latency(&env, sizes.p3_clients, sizes.p3_rate, sizes.p3_seconds).await?;
        for (name, key) in [
            ("p3_latency_p50", "p50_ms"),
            ("p3_latency_p95", "p95_ms"),
            ("p3_latency_p99", "p99_ms"),
        ] {
            report.figure(
                name,
                live[key].as_f64().unwrap_or_default() * 1000.0,
                "us",
                None,
                if key == "p99_ms" {
                    "p99 <= 20 ms"
                } else {
                    "info"
                },
                json!({}),
            );
        }
        report.figure(
            "p3_deliveries",
            live["received"].as_f64().unwrap_or_default(),
            "frames",
            None,
            "== sent x clients (no loss)",
            live.clone(),
        );
        report.figure(
            "p3_gateway_rss",
            live["gateway_peak_rss_mb"].as_f64().unwrap_or_default(),
            "MB",
            None,
            "<= 150 MB",
            json!({}),
        );
    }

    if wanted("p7") {
        println!("P7 the cost of auth on a REST read");
        let gateway = GatewayProcess::start(&env).await?;
        let named = gateway.issue_token("bench-reader", "viewer").await?;
        let (connections, requests) = (8, sizes.p7_requests);
        // Alternated, twice each, so drift on a shared machine lands on both.
        let (mut bootstrap, mut token) = (0f64, 0f64);
        for _ in 0..2 {
            bootstrap += gateway
                .reads(
                    "/api/whoami",
                    gateway::BOOTSTRAP_TOKEN,
                    connections,
                    requests,
                )
                .await?;
            token += gateway
                .reads("/api/whoami", &named, connections, requests)
                .await?;
        }
        report.ceiling("rest_read_bootstrap_token", bootstrap / 2.0, "req/s");
        report.figure(
            "p7_rest_read_named_token",
            token / 2.0,
            "req/s",
            Some(("rest_read_bootstrap_token", bootstrap / 2.0)),
            ">= 0.9 of the bootstrap-token read (auth within noise)",
            json!({ "route": "/api/whoami", "connections": connections, "requests": connections * requests }),
        );
    }

    if wanted("p8") {
        println!("P8 a container command's round trip (stop, start)");
        let trips = containers::round_trips(sizes.p8_rounds).await?;
        let direct_p50 = containers::quantile_us(&trips.direct, 0.5);
        let direct_p99 = containers::quantile_us(&trips.direct, 0.99);
        report.ceiling("docker_stop_start_direct_p50", direct_p50, "us");
        report.ceiling("docker_stop_start_direct_p99", direct_p99, "us");
        let extra = json!({ "rounds": sizes.p8_rounds, "operations": trips.nebula.len(), "path": "REST ?wait → log → router → WORK → agent → Docker → log" });
        report.figure(
            "p8_container_command_p50",
            containers::quantile_us(&trips.nebula, 0.5),
            "us",
            Some(("docker_stop_start_direct_p50", direct_p50)),
            "info (the cost of recording, routing and answering over Docker's own time)",
            extra.clone(),
        );
        report.figure(
            "p8_container_command_p99",
            containers::quantile_us(&trips.nebula, 0.99),
            "us",
            Some(("docker_stop_start_direct_p99", direct_p99)),
            "info",
            extra,
        );
    }

    if wanted("p9") {
        println!("P9 a command's round trip on a host over SSH");
        let trips = hosts::round_trips(sizes.p9_rounds).await?;
        let direct_p50 = containers::quantile_us(&trips.direct, 0.5);
        let direct_p99 = containers::quantile_us(&trips.direct, 0.99);
        report.ceiling("openssh_fresh_exec_p50", direct_p50, "us");
        report.ceiling("openssh_fresh_exec_p99", direct_p99, "us");
        let extra = json!({ "rounds": sizes.p9_rounds, "command": "true", "path": "REST exec → log → executor → pooled russh session → log → REST ?wait", "reference": "ssh (OpenSSH client), a fresh connection per command" });
        report.figure(
            "p9_ssh_exec_p50",
            containers::quantile_us(&trips.nebula, 0.5),
            "us",
            Some(("openssh_fresh_exec_p50", direct_p50)),
            "< 1.0 (a pooled session beats a fresh OpenSSH connection, recording included)",
            extra.clone(),
        );
        report.figure(
            "p9_ssh_exec_p99",
            containers::quantile_us(&trips.nebula, 0.99),
            "us",
            Some(("openssh_fresh_exec_p99", direct_p99)),
            "info",
            extra,
        );
    }

    if wanted("p11") {
        println!("P11 a deploy and a rollback through the Deploy Center");
        let runs = deploys::deploys(sizes.p11_rounds).await?;
        let direct_p50 = containers::quantile_us(&runs.direct, 0.5);
        report.ceiling("docker_replace_and_check_direct_p50", direct_p50, "us");
        let extra = json!({ "rounds": sizes.p11_rounds, "path": "REST → log → deployer → agent (stop old, remove leftover, create+start new) → HTTP check → log → REST ?wait", "reference": "bollard stop, remove, create, start and the same HTTP check, directly" });
        report.figure(
            "p11_deploy_p50",
            containers::quantile_us(&runs.deploy, 0.5),
            "us",
            Some(("docker_replace_and_check_direct_p50", direct_p50)),
            "info (what recording and routing every step costs over doing it by hand)",
            extra.clone(),
        );
        report.figure(
            "p11_rollback_p50",
            containers::quantile_us(&runs.rollback, 0.5),
            "us",
            Some(("docker_replace_and_check_direct_p50", direct_p50)),
            "info",
            extra,
        );
    }

    if wanted("p12") {
        println!("P12 the AI developer: a step, and a build verification");
        let measured = aidev::ai_dev(sizes.p12_rounds, sizes.p12_steps).await?;
        let model_p50 = containers::quantile_us(&measured.model_direct, 0.5);
        let direct_p50 = containers::quantile_us(&measured.verify_direct, 0.5);
        report.ceiling("ollama_chat_direct_p50", model_p50, "us");
        report.ceiling("cargo_build_test_direct_p50", direct_p50, "us");
        report.figure(
            "p12_ai_step_p50",
            containers::quantile_us(&measured.step, 0.5),
            "us",
            Some(("ollama_chat_direct_p50", model_p50)),
            "info (a step over the model's own answer: the tool, the event, the memory in Redis)",
            json!({ "rounds": sizes.p12_rounds, "steps_per_job": sizes.p12_steps, "tool": "update_plan", "model": "the fake Ollama, answering at once", "p99_us": containers::quantile_us(&measured.step, 0.99) }),
        );
        report.figure(
            "p12_verify_p50",
            containers::quantile_us(&measured.verify, 0.5),
            "us",
            Some(("cargo_build_test_direct_p50", direct_p50)),
            "<= 1.2 of the same commands run directly",
            json!({ "project": "a one-file Cargo crate, warm target folder", "commands": ["cargo build --all-targets", "cargo test"] }),
        );
    }

    if wanted("p13") {
        println!("P13 video assembly: 30 s in process, against the ffmpeg command line");
        let rounds = sizes.p13_rounds;
        let measured = tokio::task::spawn_blocking(move || video::assembly(rounds)).await??;
        let theirs = containers::quantile_us(&measured.ffmpeg, 0.5);
        report.ceiling("ffmpeg_cli_assembly_30s_p50", theirs, "us");
        report.figure(
            "p13_assembly_30s_p50",
            containers::quantile_us(&measured.ours, 0.5),
            "us",
            Some(("ffmpeg_cli_assembly_30s_p50", theirs)),
            "<= 1.2 of the ffmpeg command line",
            json!({ "rounds": rounds, "video": "6 stills of 1280x720, 5 s each with a Ken Burns zoom, 720x1280 at 30 fps, subtitles burned in, narration as AAC, libx264 veryfast CRF 21" }),
        );
    }

    if wanted("p14") {
        println!("P14 a video project, end to end per scene, on the simulated GPU");
        let measured = video_scenes::scenes(sizes.p14_rounds).await?;
        let direct = containers::quantile_us(&measured.direct, 0.5);
        report.ceiling("video_scene_direct_p50", direct, "us");
        report.figure(
            "p14_video_scene_p50",
            containers::quantile_us(&measured.pipeline, 0.5),
            "us",
            Some(("video_scene_direct_p50", direct)),
            "<= 1.5 of the same work done directly (info: renders queue on one simulated GPU)",
            json!({ "rounds": sizes.p14_rounds, "scenes": video_scenes::SCENES, "project": "9:16 stills, espeak-ng, 1080x1920 at 30 fps, 0.4 s cross-fades, subtitles, thumbnail", "render": "simulated GPU, 20 steps of 120 ms at 576x1024", "direct": "the same renders, narrations, assembly and thumbnail in one process, no log" }),
        );
    }

    if wanted("p15") {
        println!("P15 restart time of nebula up as the log grows");
        let measured = restart::restarts(&sizes.p15_sizes).await?;
        let first = measured
            .at
            .first()
            .map_or(0.0, |(_, d)| d.as_micros() as f64);
        report.ceiling("p15_restart_empty_log", first, "us");
        let names = [
            "p15_restart_log_empty",
            "p15_restart_log_grown",
            "p15_restart_log_large",
        ];
        for ((events, took), name) in measured.at.iter().zip(names) {
            report.figure(
                name,
                took.as_micros() as f64,
                "us",
                Some(("p15_restart_empty_log", first)),
                "<= 2 of the restart with an empty log (healthy, and a new render job placed)",
                json!({ "events": events, "grown_with": "render job lifecycles (copies of one the stack ran): the dispatcher's own history", "what": "nebula up killed and started again, every projection caught up and the dispatcher's checkpoint at the head before; timed to /health and a submitted render job assigned" }),
            );
        }
    }

    if wanted("p16") {
        println!("P16 a chat flood decided by the intake");
        let measured = chat_burst::burst(sizes.p16_commands).await?;
        report.ceiling("chat_raw_decisions", measured.raw_per_sec, "cmd/s");
        report.figure(
            "p16_chat_decided_rate",
            measured.decided_per_sec,
            "cmd/s",
            Some(("chat_raw_decisions", measured.raw_per_sec)),
            ">= 50 cmd/s (the flood it must keep up with), 0 lost, 0 duplicated",
            json!({ "commands": measured.commands, "chatters": 300, "jobs": measured.jobs, "refused": measured.refused, "lost": measured.lost, "duplicated": measured.duplicated, "raw": "per command the intake's Redis script and two acked JetStream publishes, 8 at once" }),
        );
    }

    if wanted("p10") {
        println!("P10 live latency beside a flooding followed log");
        let flood = containers::flood(20, 200, sizes.p10_seconds, 4).await?;
        let p99 = |live: &Value| live["p99_ms"].as_f64().unwrap_or_default() * 1000.0;
        report.ceiling("p10_latency_p99_no_follower", p99(&flood.quiet), "us");
        report.figure(
            "p10_latency_p99_flooded",
            p99(&flood.flooded),
            "us",
            Some(("p10_latency_p99_no_follower", p99(&flood.quiet))),
            "p99 <= 20 ms (P3's budget) while 4 viewers follow the flooding log",
            json!({ "clients": 20, "events_per_second": 200, "followers": 4, "quiet": flood.quiet, "flooded": flood.flooded }),
        );
        report.figure(
            "p10_log_write_rate",
            flood.log_bytes_per_sec / 1e6,
            "MB/s",
            None,
            "info (what the container wrote, as a follower saw it: sent + left out)",
            json!({ "kept_per_follower_mb_s": flood.kept_bytes_per_sec / 1e6 }),
        );
    }

    if wanted("p4") {
        println!("P4 rebuild");
        let current = env.bus.last_seq(StreamName::Events).await?.0;
        if current < sizes.p4_events {
            let missing = (sizes.p4_events - current).div_ceil(4) as usize;
            preload(&env.bus, job_commits(missing), 64).await?;
        }
        env.reset_database().await?;
        let (rebuilt, elapsed) = rebuild(&env).await?;
        report.figure(
            "p4_rebuild_event_log",
            rate(rebuilt, elapsed),
            "events/s",
            Some(("jetstream_pull_consume_ack", consume_ceiling)),
            ">= 0.5 of consume ceiling",
            json!({ "events": rebuilt }),
        );
    }

    if wanted("p6") {
        println!("P6 work-queue scaling");
        for consumers in [1usize, 2, 4] {
            let throughput = work_queue(&env, consumers, sizes.p6_messages).await?;
            let name: &'static str = match consumers {
                1 => "p6_work_queue_1_consumer",
                2 => "p6_work_queue_2_consumers",
                _ => "p6_work_queue_4_consumers",
            };
            report.figure(
                name,
                throughput,
                "msg/s",
                Some(("jetstream_pull_consume_ack", consume_ceiling)),
                "info",
                json!({ "messages": sizes.p6_messages }),
            );
        }
    }
    let nats_version = client.server_info().version;
    let postgres_version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&env.pool)
        .await?;
    env.drop_database().await;

    let document = json!({
        "generated_at": chrono::Utc::now(),
        "quick": quick,
        "duration_s": started.elapsed().as_secs(),
        "machine": machine(&nats_version, &postgres_version),
        "ceilings": report.ceilings,
        "figures": report.figures,
    });
    if only.is_some() && !args.iter().any(|a| a == "--out") {
        print_table(&report);
        println!("\n(--only: partial run, not written to {})", out.display());
        return Ok(());
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&document)? + "\n")?;
    print_table(&report);
    println!(
        "\nwritten to {} in {} s",
        out.display(),
        started.elapsed().as_secs()
    );
    Ok(())
}

fn print_table(report: &Report) {
    println!("\n| figure | value | ratio | target |\n|---|---|---|---|");
    for [name, value, ratio, target, _] in &report.rows {
        println!("| {name} | {value} | {ratio} | {target} |");
    }
}

fn machine(nats_version: &str, postgres_version: &str) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": cpu,
        "memory_gib": (memory_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "nats_server": nats_version,
        "postgres": postgres_version.split(" on ").next().unwrap_or(postgres_version),
        "rustc": rustc,
    })
}

async fn ceiling_publish(client: &async_nats::Client, name: &str, messages: u64) -> Result<f64> {
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    })
    .await?;
    let payload = Bytes::from(vec![b'x'; 256]);
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..messages {
        if in_flight.len() >= 256 {
            in_flight.next().await.context("ack stream ended")??;
        }
        let ack = js
            .publish(
                format!("{}.{}", name.to_lowercase(), i % 16),
                payload.clone(),
            )
            .await?;
        in_flight.push(ack.into_future());
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    Ok(rate(messages, started.elapsed()))
}

async fn ceiling_consume(client: &async_nats::Client, name: &str, messages: u64) -> Result<f64> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(name).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("ceiling".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut stream = consumer.messages().await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < messages {
        let message = stream
            .next()
            .await
            .context("consumer ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        seen += 1;
    }
    Ok(rate(messages, started.elapsed()))
}

async fn ceiling_postgres(env: &Env, rows: u64, single_rows: u64) -> Result<(f64, f64)> {
    sqlx::query("CREATE TABLE ceiling_rows (id bigint PRIMARY KEY, payload text NOT NULL)")
        .execute(&env.pool)
        .await?;
    let payload = "x".repeat(256);
    let started = Instant::now();
    for batch in 0..rows.div_ceil(1000) {
        let ids: Vec<i64> = (batch * 1000..((batch + 1) * 1000).min(rows))
            .map(|i| i as i64)
            .collect();
        let payloads = vec![payload.clone(); ids.len()];
        sqlx::query(
            "INSERT INTO ceiling_rows (id, payload) SELECT * FROM UNNEST($1::int8[], $2::text[])",
        )
        .bind(ids)
        .bind(payloads)
        .execute(&env.pool)
        .await?;
    }
    let unnest = rate(rows, started.elapsed());
    let started = Instant::now();
    for i in 0..single_rows {
        let mut tx = env.pool.begin().await?;
        sqlx::query("INSERT INTO ceiling_rows (id, payload) VALUES ($1, $2)")
            .bind((rows + i) as i64)
            .bind(&payload)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let single = rate(single_rows, started.elapsed());
    sqlx::query("DROP TABLE ceiling_rows")
        .execute(&env.pool)
        .await?;
    Ok((unnest, single))
}

const PROJECTIONS: [&str; 4] = ["event_log", "nodes", "jobs", "render"];

/// (messages, batches, seconds in Postgres) per projection, from the bus's metrics.
fn projection_counters(bus: &bus::Bus) -> Vec<(f64, f64, f64)> {
    let metrics = bus.metrics();
    PROJECTIONS
        .iter()
        .map(|p| {
            let labels = [("projection", *p)];
            (
                metrics.get("nebula_projection_messages_applied_total", &labels),
                metrics.get("nebula_projection_batches_total", &labels),
                metrics.get("nebula_projection_apply_seconds_total", &labels),
            )
        })
        .collect()
}

/// Where each projection's time went: average batch, and the share of wall time spent inside
/// its Postgres transactions (the rest is reading and decoding from JetStream, or waiting).
fn projection_profile(bus: &bus::Bus, before: &[(f64, f64, f64)], elapsed: Duration) -> Value {
    let after = projection_counters(bus);
    let mut profile = serde_json::Map::new();
    for ((name, (m0, b0, s0)), (m1, b1, s1)) in PROJECTIONS.iter().zip(before).zip(after) {
        let (messages, batches, seconds) = (m1 - m0, b1 - b0, s1 - s0);
        let share = seconds / elapsed.as_secs_f64().max(1e-9);
        println!(
            "    {name:<10} avg batch {:>6.0}   in postgres {:>4.0}% of wall time",
            messages / batches.max(1.0),
            share * 100.0
        );
        profile.insert(
            (*name).to_owned(),
            json!({ "avg_batch": (messages / batches.max(1.0)).round(), "postgres_share": (share * 100.0).round() / 100.0 }),
        );
    }
    Value::Object(profile)
}

/// Runs every EVENTS projection from its checkpoint until all reach the head (or `limit`
/// passes); returns the elapsed time and the events the slowest one applied.
async fn project_all(
    env: &Env,
    config: RunnerConfig,
    limit: Option<Duration>,
) -> Result<(Duration, u64)> {
    let head = env.bus.last_seq(StreamName::Events).await?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let tasks = spawn_event_projections(&env.pool, &env.bus, &config, Some(head), &cancel);
    if let Some(limit) = limit {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            cancel.cancel();
        });
    }
    let mut slowest = u64::MAX;
    for task in tasks {
        slowest = slowest.min(task.await??.0);
    }
    Ok((started.elapsed(), slowest))
}

/// Commands through cqrs-es on the JetStream store, one task per aggregate.
async fn append_commands(
    env: &Env,
    aggregates: u64,
    per_aggregate: u64,
) -> Result<(u64, Duration)> {
    let cqrs = Arc::new(commands::<Job>(env.bus.clone(), ()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..aggregates)
        .map(|_| {
            let cqrs = cqrs.clone();
            tokio::spawn(async move {
                let id = JobId::new().to_string();
                let meta = CommandMeta::new(Actor::Service("bench".into()));
                let mut sequence = vec![
                    JobCommand::Request {
                        kind: "bench".into(),
                        priority: 0,
                        params: Value::Null,
                    },
                    JobCommand::Start {
                        worker: "bench".into(),
                        node_id: None,
                    },
                ];
                for value in 1..=per_aggregate.saturating_sub(2) {
                    sequence.push(JobCommand::ReportProgress {
                        value,
                        max: per_aggregate,
                    });
                }
                for command in sequence {
                    cqrs.execute_with_metadata(&id, command, meta.clone().into_metadata())
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((aggregates * per_aggregate.max(2), started.elapsed()))
}

async fn rebuild(env: &Env) -> Result<(u64, Duration)> {
    let projection = projections::by_name("event_log").context("no event_log projection")?;
    let started = Instant::now();
    let config = RunnerConfig {
        batch_size: 2000,
        ..RunnerConfig::default()
    };
    let rebuilt = projections::rebuild::rebuild(
        &env.pool,
        &env.bus,
        projection,
        config,
        |_, _| {},
        CancellationToken::new(),
    )
    .await?;
    Ok((rebuilt.position.0, started.elapsed()))
}

async fn work_queue(env: &Env, consumers: usize, messages: u64) -> Result<f64> {
    let subject = format!("nebula.work.bench{consumers}");
    let lanes = 32;
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let bus = env.bus.clone();
            let subject = subject.clone();
            tokio::spawn(async move {
                for i in (lane..messages).step_by(lanes as usize) {
                    bus.publish_raw(
                        subject.clone(),
                        format!("w{consumers}-{i}"),
                        Vec::new(),
                        Bytes::from(vec![b'x'; 256]),
                    )
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let done = Arc::new(AtomicU64::new(0));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..consumers {
        let spec = ConsumerSpec {
            filter_subject: Some(subject.clone()),
            max_ack_pending: 10_000,
            ..ConsumerSpec::new(StreamName::Work, format!("bench-{consumers}"))
        };
        let (bus, cancel, done) = (env.bus.clone(), cancel.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            bus.consume(spec, cancel, |_| {
                done.fetch_add(1, Ordering::Relaxed);
                async { Outcome::Ack }
            })
            .await
        }));
    }
    while done.load(Ordering::Relaxed) < messages {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("work queue did not drain");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    cancel.cancel();
    for worker in workers {
        worker.await??;
    }
    Ok(rate(messages, elapsed))
}
