//! Per-user cooldowns and per-channel quotas, held in Redis so every instance of a chat service
//! sees the same counts. One Lua script decides and takes atomically: a rejected command
//! consumes neither the user's cooldown nor the channel's quota.

use std::time::Duration;

use events::chat::{ChannelSettings, Platform};
use redis::aio::ConnectionManager;

const TAKE: &str = r#"
local cooldown = redis.call('PTTL', KEYS[1])
if cooldown > 0 then return {1, cooldown} end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used >= tonumber(ARGV[2]) then
  local left = redis.call('PTTL', KEYS[2])
  if left < 0 then left = tonumber(ARGV[3]) * 1000 end
  return {2, left}
end
if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]) * 1000) end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) * 1000) end
return {0, 0}
"#;

/// Why a command may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Cooldown { retry_after: Duration },
    Quota { retry_after: Duration },
}

#[derive(Clone)]
pub struct Limits {
    redis: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl Limits {
    /// Connects to Redis (and keeps reconnecting on its own); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> redis::RedisResult<Limits> {
        let client = redis::Client::open(url)?;
        let redis = ConnectionManager::new(client).await?;
        Ok(Limits {
            redis,
            script: redis::Script::new(TAKE),
            prefix: prefix.to_owned(),
        })
    }

    /// Takes one use for `user` in `scope`, or says why not.
    pub async fn take(
        &self,
        platform: Platform,
        scope: &str,
        user: &str,
        settings: &ChannelSettings,
    ) -> redis::RedisResult<Result<(), Limited>> {
        let cooldown = format!("{}:cooldown:{platform}:{scope}:{user}", self.prefix);
        let quota = format!("{}:quota:{platform}:{scope}", self.prefix);
        let (verdict, millis): (i64, i64) = self
            .script
            .key(cooldown)
            .key(quota)
            .arg(settings.cooldown_secs)
            .arg(settings.quota)
            .arg(settings.quota_window_secs)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let retry_after = Duration::from_millis(u64::try_from(millis).unwrap_or(0));
        Ok(match verdict {
            0 => Ok(()),
            1 => Err(Limited::Cooldown { retry_after }),
            _ => Err(Limited::Quota { retry_after }),
        })
    }

    /// Remembers a short-lived secret for a command (a Discord interaction token).
    pub async fn put_secret(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(format!("{}:secret:{key}", self.prefix))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut self.redis.clone())
            .await
    }

    pub async fn secret(&self, key: &str) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(format!("{}:secret:{key}", self.prefix))
            .query_async(&mut self.redis.clone())
            .await
    }

    /// The last job a user started from chat (what `cancel` cancels), kept for a day.
    pub async fn set_last_job(
        &self,
        platform: Platform,
        user: &str,
        job_id: &str,
    ) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(format!("{}:last_job:{platform}:{user}", self.prefix))
            .arg(job_id)
            .arg("EX")
            .arg(86_400)
            .query_async(&mut self.redis.clone())
            .await
    }

    pub async fn last_job(
        &self,
        platform: Platform,
        user: &str,
    ) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(format!("{}:last_job:{platform}:{user}", self.prefix))
            .query_async(&mut self.redis.clone())
            .await
    }
}
