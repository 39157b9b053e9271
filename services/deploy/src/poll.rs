//! "Deploy on a new commit": apps whose git source has `poll` set are looked at every
//! `deploy.git_poll_secs`; when their branch points at another commit than their latest
//! release, a deploy is asked for (trigger `git`, by `service git-poll`). A commit is released
//! once: one whose deploy failed is not asked for again until the branch moves.

use std::time::Duration;

use bus::Bus;
use bus::store::{CommandMeta, JetStreamStore, commands};
use events::deploy::{AppEvent, DeployTrigger};
use events::{Actor, DomainEvent};
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(
    bus: Bus,
    every: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let apps = commands::<domain::deploy::App>(bus.clone(), ());
    let app_state = JetStreamStore::<domain::deploy::App>::new(bus.clone());
    let runs = commands::<domain::deploy::DeployRun>(bus.clone(), ());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let names = match bus.aggregate_ids(AppEvent::AGGREGATE_TYPE).await {
            Ok(names) => names,
            Err(err) => {
                tracing::warn!(error = %err, "the apps could not be listed for polling");
                continue;
            }
        };
        for name in names {
            let Ok(Some(app)) = sagas::deploys::load_app(&app_state, &name).await else {
                continue;
            };
            let Some(git) = app
                .defined
                .as_ref()
                .and_then(|d| d.git.clone())
                .filter(|g| g.poll)
            else {
                continue;
            };
            let head = match sagas::deploys::branch_head(&git.repo, &git.branch).await {
                Ok(head) => head,
                Err(err) => {
                    tracing::warn!(app = %name, error = %err, "a polled git source could not be read");
                    continue;
                }
            };
            let released = app
                .latest()
                .and_then(|r| r.build.as_ref())
                .is_some_and(|b| b.commit == head);
            if released {
                continue;
            }
            let meta = CommandMeta::new(Actor::Service("git-poll".to_owned()));
            match sagas::deploys::deploy(&apps, &app_state, &runs, &name, DeployTrigger::Git, meta)
                .await
            {
                Ok(requested) => {
                    tracing::info!(app = %name, commit = %head, run_id = %requested.run_id, "a new commit is deployed")
                }
                Err(err) => {
                    tracing::warn!(app = %name, error = %err, "a polled deploy was not asked for")
                }
            }
        }
    }
}
