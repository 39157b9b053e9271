//! Per-user cooldowns and per-channel quotas, held in Redis so every instance of a chat service
//! sees the same counts. One Lua script decides and takes atomically: a rejected command
//! consumes neither the user's cooldown nor the channel's quota.

use std::sync::Arc;
use std::time::Duration;

use events::chat::{ChannelSettings, Platform};
use kv::{Kv, KvError, Script};

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
    kv: Arc<(Kv, Script)>,
    prefix: String,
}

impl Limits {
    /// Connects to Redis (and keeps reconnecting on its own); keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Limits, KvError> {
        Ok(Limits {
            kv: Arc::new((Kv::connect(url).await?, Script::new(TAKE))),
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
    ) -> Result<Result<(), Limited>, KvError> {
        let (kv, take) = &*self.kv;
        let keys = [
            format!("{}:cooldown:{platform}:{scope}:{user}", self.prefix),
            format!("{}:quota:{platform}:{scope}", self.prefix),
        ];
        let args = [
            i64::from(settings.cooldown_secs),
            i64::from(settings.quota),
            i64::from(settings.quota_window_secs),
        ];
        let answer = kv.run(take, &keys, &args).await?;
        let (verdict, millis) = (answer.first().copied(), answer.get(1).copied());
        let retry_after = Duration::from_millis(u64::try_from(millis.unwrap_or(0)).unwrap_or(0));
        Ok(match verdict {
            Some(0) => Ok(()),
            Some(1) => Err(Limited::Cooldown { retry_after }),
            _ => Err(Limited::Quota { retry_after }),
        })
    }

    /// Remembers a short-lived secret for a command (a Discord interaction token).
    pub async fn put_secret(&self, key: &str, value: &str, ttl: Duration) -> Result<(), KvError> {
        let key = format!("{}:secret:{key}", self.prefix);
        self.kv.0.set(&key, value, ttl).await
    }

    pub async fn secret(&self, key: &str) -> Result<Option<String>, KvError> {
        self.kv
            .0
            .get(&format!("{}:secret:{key}", self.prefix))
            .await
    }

    /// The last job a user started from chat (what `cancel` cancels), kept for a day.
    pub async fn set_last_job(
        &self,
        platform: Platform,
        user: &str,
        job_id: &str,
    ) -> Result<(), KvError> {
        let key = format!("{}:last_job:{platform}:{user}", self.prefix);
        self.kv
            .0
            .set(&key, job_id, Duration::from_secs(86_400))
            .await
    }

    pub async fn last_job(
        &self,
        platform: Platform,
        user: &str,
    ) -> Result<Option<String>, KvError> {
        let key = format!("{}:last_job:{platform}:{user}", self.prefix);
        self.kv.0.get(&key).await
    }
}
