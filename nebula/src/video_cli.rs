//! `nebula video new|ls|show|cancel|personas|schedules`: video projects asked for, followed and
//! cancelled from a terminal, recorded on the log as the user running the CLI (the same
//! commands the REST API records).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bus::Bus;
use bus::store::{CommandMeta, JetStreamStore};
use clap::Subcommand;
use cqrs_es::EventStore;
use domain::video::VideoProject;
use events::video::{ProjectRequested, VideoFormat};

use crate::Config;

#[derive(Debug, Subcommand)]
pub enum VideoCommand {
    /// Ask for a video from a script (a paragraph a scene); prints its id.
    New {
        #[arg(long)]
        title: String,
        /// The script's file (`-`: standard input).
        #[arg(long)]
        script: PathBuf,
        /// A persona's name: its look and voice go with the project.
        #[arg(long)]
        persona: Option<String>,
        /// 9:16, 16:9 or 1:1.
        #[arg(long, default_value = "9:16")]
        format: String,
        /// Each scene an AnimateDiff clip instead of a still moved slowly.
        #[arg(long)]
        clips: bool,
        #[arg(long, default_value_t = 0)]
        priority: i32,
    },
    /// Every project: status, title, id.
    Ls,
    /// One project: its steps, scenes and outputs.
    Show { id: String },
    /// Cancel a project (and its renders).
    Cancel { id: String },
    /// The personas.
    Personas,
    /// The schedules and their next firings.
    Schedules,
}

pub(crate) async fn run(config: &Config, command: VideoCommand) -> anyhow::Result<()> {
    let bus = Bus::connect_only(config.bus_config()).await?;
    let meta = || CommandMeta::new(crate::access::cli_actor());
    let projects = bus::store::commands::<VideoProject>(bus.clone(), ());
    let state = JetStreamStore::<VideoProject>::new(bus.clone());
    let mut out = std::io::stdout().lock();
    match command {
        VideoCommand::New {
            title,
            script,
            persona,
            format,
            clips,
            priority,
        } => {
            let script = if script.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("the script from standard input")?
            } else {
                std::fs::read_to_string(&script)
                    .with_context(|| format!("the script {}", script.display()))?
            };
            let format: VideoFormat = serde_json::from_value(serde_json::json!(format))
                .map_err(|_| anyhow::anyhow!("format must be 9:16, 16:9 or 1:1"))?;
            let persona = match persona {
                None => None,
                Some(name) => Some(
                    sagas::video::persona_view(&bus, &name)
                        .await?
                        .with_context(|| format!("there is no persona {name:?}"))?
                        .persona,
                ),
            };
            let requested = ProjectRequested {
                title,
                script: Some(script),
                topic: None,
                persona,
                format,
                visuals: if clips {
                    events::video::Visuals::Clips
                } else {
                    events::video::Visuals::Stills
                },
                target_secs: 30,
                music: None,
                priority,
                post: None,
            };
            let queue = bus::store::commands(bus.clone(), ());
            let id = sagas::video::request_project(
                &queue,
                &projects,
                config.video.queue_cap(),
                requested,
                meta(),
            )
            .await
            .map_err(|err| match err {
                sagas::video::RequestError::Queue(err) => anyhow::anyhow!("{err}"),
                sagas::video::RequestError::Project(err) => anyhow::anyhow!("{err}"),
            })?;
            writeln!(out, "{id}")?;
        }
        VideoCommand::Ls => {
            let listed = sagas::video::list_projects(&bus, &state).await?;
            writeln!(out, "{:<10} {:<38} TITLE", "STATUS", "ID")?;
            for (id, project) in listed {
                let status = project.status.map_or("?", |s| s.as_str());
                let title = project.requested.as_ref().map_or("", |r| r.title.as_str());
                writeln!(out, "{status:<10} {id:<38} {title}")?;
            }
        }
        VideoCommand::Show { id } => {
            if !project_id(&id) {
                bail!("no project {id}");
            }
            let project = state.load_aggregate(&id).await?.state().clone();
            let Some(requested) = &project.requested else {
                bail!("no project {id}");
            };
            writeln!(
                out,
                "{} ({}, {})",
                requested.title,
                project.status.map_or("?", |s| s.as_str()),
                requested.format.as_str()
            )?;
            for scene in &project.scenes {
                let made = project.progress.get(&scene.n).cloned().unwrap_or_default();
                writeln!(
                    out,
                    "  scene {}: picture {} narration {}  {}",
                    scene.n,
                    if made.picture.is_some() { "yes" } else { "no " },
                    if made.narration.is_some() {
                        "yes"
                    } else {
                        "no "
                    },
                    scene.text
                )?;
            }
            if let Some(video) = &project.video {
                writeln!(out, "  video {video}")?;
            }
            if let Some((step, reason)) = &project.failure {
                writeln!(out, "  failed at {step}: {reason}")?;
            }
        }
        VideoCommand::Cancel { id } => {
            if !project_id(&id) {
                bail!("no project {id}");
            }
            sagas::video::cancel_project(&projects, &id, meta())
                .await
                .with_context(|| format!("project {id} was not cancelled"))?;
            writeln!(out, "project {id}: cancellation asked for")?;
        }
        VideoCommand::Personas => {
            for persona in sagas::video::list_personas(&bus).await? {
                writeln!(
                    out,
                    "{:<20} {:<20} {}",
                    persona.persona.name, persona.persona.voice, persona.persona.style_prompt
                )?;
            }
        }
        VideoCommand::Schedules => {
            let schedules =
                sagas::video::list_schedules(&bus, &JetStreamStore::new(bus.clone())).await?;
            for (name, schedule) in schedules {
                let Some(defined) = &schedule.defined else {
                    continue;
                };
                let next = domain::schedule::Schedule::parse(&defined.cron, &defined.time_zone)
                    .map(|s| s.next_firings(chrono::Utc::now(), 1))
                    .unwrap_or_default();
                let next = next
                    .first()
                    .map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
                writeln!(
                    out,
                    "{name:<20} {:<20} {:<16} fired {:<4} next {next}",
                    defined.cron, defined.time_zone, schedule.fired
                )?;
            }
        }
    }
    Ok(())
}

/// Whether `id` can be a project's id (a UUID; it names a subject).
fn project_id(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
