//! The shape every long-running part of Nebula has (the gateway, the projector, the render
//! dispatcher and every crate under `services/`): a serde `Config` with its own defaults and a
//! `validate()` that reports every problem at once, and one `start(ctx, config)` that does its
//! fallible set-up, spawns its loops with [`Context::spawn`] and returns.
//!
//! One failure policy: a loop spawned with [`Context::spawn`] that fails (an error, or a panic)
//! is logged, counted (`nebula_part_restarts_total{part}`) and started again after a backoff;
//! only an error marked [`Fatal`] — one no restart can fix, such as a refused credential —
//! stops the whole process, and so does the failure of a task that cannot be started again
//! ([`Context::spawn_once`]). Every task is tracked and stops on the context's token.

mod site;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::Bus;
use common::Backoff;
use common::metrics::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use site::Site;

/// What every part is given by the process that runs it.
#[derive(Clone)]
pub struct Context {
    pub bus: Bus,
    /// Fires when the process shuts down (a signal, or a part that failed for good).
    pub cancel: CancellationToken,
    /// Every task a part spawns, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The settings the parts of one installation share.
    pub site: Arc<Site>,
    /// The waits before a failed loop starts again (1 s doubling to 30 s).
    pub restart: Backoff,
    /// The process's own token: a fatal failure fires it, in a child context too.
    process: CancellationToken,
}

/// An error no restart can fix: the process stops (after logging it) instead of trying again.
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// `Err(fatal(...))` from a loop stops the process.
pub fn fatal(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fatal(message.into()))
}

/// Whether `err` (or anything in its chain) is [`Fatal`].
pub fn is_fatal(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Fatal>())
}

/// A loop that ran at least this long before failing starts again without waiting long.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl Context {
    pub fn new(bus: Bus, site: Site) -> Self {
        let cancel = CancellationToken::new();
        Self {
            bus,
            process: cancel.clone(),
            cancel,
            tracker: TaskTracker::new(),
            site: Arc::new(site),
            restart: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        }
    }

    /// A context for a part that is stopped and started again while the process runs (when a
    /// secret it uses rotates): its tasks stop with this context or with [`Context::stop`],
    /// and a fatal failure in it still stops the process.
    pub fn child(&self) -> Context {
        Context {
            cancel: self.cancel.child_token(),
            tracker: TaskTracker::new(),
            ..self.clone()
        }
    }

    /// Stops this context's tasks and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// The process's metrics (the bus reports into the same registry).
    pub fn metrics(&self) -> &Registry {
        self.bus.metrics()
    }

    /// Runs `run(shutdown)` on the tracker until it returns `Ok` or the context is cancelled
    /// (`shutdown` is the context's token, for the loop to stop on). An error or a panic
    /// restarts it after a backoff ([`Context::restart`], reset after a minute of health); a
    /// [`Fatal`] error stops the process.
    pub fn spawn<F, Fut>(&self, part: &'static str, mut run: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let ctx = self.clone();
        self.tracker.spawn(async move {
            let mut backoff = ctx.restart.clone();
            while !ctx.cancel.is_cancelled() {
                let started = Instant::now();
                let attempt = ctx.tracker.spawn(run(ctx.cancel.clone()));
                let err = match attempt.await {
                    Ok(Ok(())) => return,
                    Ok(Err(err)) => err,
                    Err(join) if join.is_panic() => anyhow::anyhow!("panicked: {join}"),
                    Err(join) => anyhow::anyhow!("{join}"),
                };
                if ctx.cancel.is_cancelled() {
                    return;
                }
                if is_fatal(&err) {
                    tracing::error!(part, error = format!("{err:#}"), "stopped for good; shutting down");
                    ctx.process.cancel();
                    return;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                ctx.metrics()
                    .add("nebula_part_restarts_total", &[("part", part)], 1.0);
                tracing::warn!(part, error = format!("{err:#}"), retry_in = ?backoff.peek(), "failed; starting it again");
                if !backoff.wait(&ctx.cancel).await {
                    return;
                }
            }
        });
    }

    /// Runs `task` once, on the tracker: for a loop that owns something it cannot open again
    /// (a platform client's message channel, a bound listener). Its error cannot be mended by a
    /// restart, so it stops the process.
    pub fn spawn_once<Fut>(&self, part: &'static str, task: Fut)
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (cancel, process) = (self.cancel.clone(), self.process.clone());
        self.tracker.spawn(async move {
            if let Err(err) = task.await
                && !cancel.is_cancelled()
            {
                tracing::error!(
                    part,
                    error = format!("{err:#}"),
                    "stopped for good; shutting down"
                );
                process.cancel();
            }
        });
    }
}
