//! The projector part (`nebula projector`, and inside `nebula up`): one [`Runner`] per
//! projection, each restarted by the context when it fails.

use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use service::Context;

use crate::runner::{Runner, RunnerConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// Attempts at a failing message before it is dead-lettered.
    pub max_attempts: u32,
    /// Which projections to run (all when empty).
    pub only: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let runner = RunnerConfig::default();
        Self {
            batch_size: runner.batch_size,
            max_attempts: runner.max_attempts,
            only: Vec::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.batch_size) {
            problems.push(format!(
                "batch_size must be 1..=10000, got {}",
                self.batch_size
            ));
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts must be at least 1".to_owned());
        }
        for name in &self.only {
            if crate::by_name(name).is_none() {
                problems.push(format!("only names unknown projection {name:?}"));
            }
        }
        problems
    }
}

/// Connects to Postgres (migrating it) and keeps every chosen projection up to date until the
/// context is cancelled.
pub async fn start(ctx: &Context, config: Config) -> anyhow::Result<()> {
    let pool = crate::open(&ctx.site.database_url, 8).await?;
    let runner_config = RunnerConfig {
        batch_size: config.batch_size,
        max_attempts: config.max_attempts,
        ..RunnerConfig::default()
    };
    for projection in crate::all() {
        if !config.only.is_empty() && !config.only.iter().any(|n| n == projection.name()) {
            continue;
        }
        let runner = Arc::new(Runner::new(
            pool.clone(),
            ctx.bus.clone(),
            projection,
            runner_config.clone(),
        ));
        ctx.spawn(runner.name(), move |cancel| {
            let runner = Arc::clone(&runner);
            async move {
                runner
                    .run(cancel)
                    .await
                    .with_context(|| format!("projection {}", runner.name()))
            }
        });
    }
    Ok(())
}
