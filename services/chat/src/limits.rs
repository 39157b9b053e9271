//! Per-user cooldowns and per-channel quotas, held in Redis so every instance of a chat service
//! sees the same counts. One Lua script decides and takes atomically: a rejected command
//! consumes neither the user's cooldown nor the channel's quota.
//!
//! Redis runs without persistence, so a restart forgets every count. A marker key per platform
//! says the counts are there: when it is missing (a fresh or restarted Redis), the script
//! refuses to decide ([`Limited`] is not returned; [`Taken::Forgotten`] is) until the counts
//! are restored from the event log ([`Limits::restore`], fed by `restore`).

use std::sync::Arc;
use std::time::Duration;

use events::chat::{ChannelSettings, Platform};
use kv::{Kv, KvError, Script};

const TAKE: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 0 then return {3, 0} end
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

/// What taking a use found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Taken, or why not.
    Decided(Result<(), Limited>),
    /// Redis holds no counts for this platform (it restarted): restore them first.
    Forgotten,
}

/// Counts read back from the log, to put into a Redis that forgot them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// `(scope, user)` still cooling down, and for how long.
    pub cooldowns: Vec<(String, String, Duration)>,
    /// `scope`, commands used in its current window, and the time left of that window.
    pub quotas: Vec<(String, u32, Duration)>,
    /// `user`, their last job, and how long it is remembered.
    pub last_jobs: Vec<(String, String, Duration)>,
}

/// How long the last job of a user is remembered (what `status` and `cancel` act on).
pub const LAST_JOB_TTL: Duration = Duration::from_secs(86_400);

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

    fn cooldown_key(&self, platform: Platform, scope: &str, user: &str) -> String {
        format!("{}:cooldown:{platform}:{scope}:{user}", self.prefix)
    }

    fn quota_key(&self, platform: Platform, scope: &str) -> String {
        format!("{}:quota:{platform}:{scope}", self.prefix)
    }

    fn last_job_key(&self, platform: Platform, user: &str) -> String {
        format!("{}:last_job:{platform}:{user}", self.prefix)
    }

    fn marker_key(&self, platform: Platform) -> String {
        format!("{}:restored:{platform}", self.prefix)
    }

    /// Whether Redis holds this platform's counts (false after a restart, until restored).
    pub async fn remembered(&self, platform: Platform) -> Result<bool, KvError> {
        self.kv.0.exists(&self.marker_key(platform)).await
    }

    /// Puts counts read from the log back, with the marker that says they are there, in one
    /// transaction.
    pub async fn restore(&self, platform: Platform, restored: &Restored) -> Result<(), KvError> {
        let mut entries = Vec::new();
        for (scope, user, left) in &restored.cooldowns {
            entries.push((
                self.cooldown_key(platform, scope, user),
                "1".to_owned(),
                *left,
            ));
        }
        for (scope, used, left) in &restored.quotas {
            entries.push((self.quota_key(platform, scope), used.to_string(), *left));
        }
        for (user, job_id, left) in &restored.last_jobs {
            entries.push((self.last_job_key(platform, user), job_id.clone(), *left));
        }
        // The marker lives as long as Redis does (a year is as good as forever here).
        entries.push((
            self.marker_key(platform),
            chrono::Utc::now().to_rfc3339(),
            Duration::from_secs(365 * 86_400),
        ));
        self.kv.0.set_all(&entries).await
    }

    /// Takes one use for `user` in `scope`, or says why not.
    pub async fn take(
        &self,
        platform: Platform,
        scope: &str,
        user: &str,
        settings: &ChannelSettings,
    ) -> Result<Taken, KvError> {
        let (kv, take) = &*self.kv;
        let keys = [
            self.cooldown_key(platform, scope, user),
            self.quota_key(platform, scope),
            self.marker_key(platform),
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
            Some(0) => Taken::Decided(Ok(())),
            Some(1) => Taken::Decided(Err(Limited::Cooldown { retry_after })),
            Some(3) => Taken::Forgotten,
            _ => Taken::Decided(Err(Limited::Quota { retry_after })),
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
        let key = self.last_job_key(platform, user);
        self.kv.0.set(&key, job_id, LAST_JOB_TTL).await
    }

    pub async fn last_job(
        &self,
        platform: Platform,
        user: &str,
    ) -> Result<Option<String>, KvError> {
        self.kv.0.get(&self.last_job_key(platform, user)).await
    }
}
