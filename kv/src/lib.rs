//! The only crate that talks to Redis: short-lived state shared by every instance of a service
//! (chat cooldowns and quotas, reply tokens, each user's last job), values with a time to live,
//! and Lua scripts that decide and write atomically. Nothing in Redis is a fact: facts are
//! events; what is here may be lost (Redis runs without persistence), and its owner rebuilds it
//! from the log (chat's cooldowns and quotas: `chat::limits`).

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::Mutex;

/// A Redis failure: the message of the client's error.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct KvError(#[from] redis::RedisError);

/// A connection to Redis that reconnects on its own. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    connection: ConnectionManager,
}

/// A Lua script, sent once and then run by its hash.
pub struct Script(redis::Script);

impl Script {
    pub fn new(lua: &str) -> Self {
        Self(redis::Script::new(lua))
    }
}

/// How long one Redis operation may take before it counts as Redis being away.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// `operation`, or a timeout error after [`OPERATION_TIMEOUT`] (a Redis that went away mid-call
/// may otherwise leave it hanging until the connection notices).
async fn timed<T>(
    operation: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, KvError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(KvError(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis did not answer within 5 s",
        )))),
    }
}

impl Kv {
    /// Connects to `url` (`redis://host:port[/db]`).
    pub async fn connect(url: &str) -> Result<Kv, KvError> {
        let client = redis::Client::open(url)?;
        Ok(Kv {
            connection: ConnectionManager::new(client).await?,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        timed(
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut self.connection.clone()),
        )
        .await
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        timed(
            redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut self.connection.clone()),
        )
        .await
    }

    /// Sets `key` to `value` for `ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), KvError> {
        timed(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async(&mut self.connection.clone()),
        )
        .await
    }

    /// Sets every `(key, value, ttl)` in one transaction (all or none).
    pub async fn set_all(&self, entries: &[(String, String, Duration)]) -> Result<(), KvError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, value, ttl) in entries {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .ignore();
        }
        timed(pipe.query_async::<()>(&mut self.connection.clone())).await
    }

    /// Runs `script` with `keys` and integer `args`; its answer is a list of integers.
    pub async fn run(
        &self,
        script: &Script,
        keys: &[String],
        args: &[i64],
    ) -> Result<Vec<i64>, KvError> {
        let mut invocation = script.0.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        timed(invocation.invoke_async(&mut self.connection.clone())).await
    }
}

/// Whether Redis answers, for health checks: connects lazily (so its owner starts while Redis
/// is down) and reconnects after a failure.
pub struct Probe {
    client: Result<redis::Client, String>,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Probe {
    pub fn new(url: &str) -> Self {
        Self {
            client: redis::Client::open(url).map_err(|err| err.to_string()),
            connection: Mutex::new(None),
        }
    }

    /// The round trip of a `PING`, or why there was none (within two seconds).
    pub async fn ping(&self) -> Result<Duration, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let started = Instant::now();
        let mut guard = self.connection.lock().await;
        if guard.is_none() {
            let connection = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|err| err.to_string())?;
            *guard = Some(connection);
        }
        let Some(connection) = guard.as_mut() else {
            return Err("not connected".to_owned());
        };
        let pong: Result<String, String> = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async(connection),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|result| result.map_err(|err| err.to_string()));
        if pong.is_err() {
            *guard = None;
        }
        pong.map(|_| started.elapsed())
    }
}
