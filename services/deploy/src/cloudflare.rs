//! Cloudflare's DNS API v4, as the domains part uses it: the zone looked up by name, then the
//! record listed and created or patched (there is no upsert; a create that races another one's
//! — 81057 "Record already exists" — is listed again and patched). 429 and 5xx answers, and a
//! connection that fails, are retried with backoff; any other refusal is returned in
//! Cloudflare's own words. The API token comes from the vault and is never logged.

use std::time::Duration;

use common::Backoff;
use events::web::DnsRecord;
use serde_json::{Value, json};

pub(crate) struct Cloudflare {
    api: String,
    http: reqwest::Client,
}

/// Attempts per call (the first and the retries).
const ATTEMPTS: u32 = 5;

enum Failure {
    /// Worth another try (rate limited, Cloudflare's fault, the network).
    Transient(String),
    /// Cloudflare refused: its first error's code and the message.
    Refused(Option<i64>, String),
}

impl Cloudflare {
    pub(crate) fn new(api: &str) -> Cloudflare {
        Cloudflare {
            api: api.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn once(
        &self,
        token: &str,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| Failure::Transient(format!("cloudflare is unreachable: {err}")))?;
        let status = response.status();
        let envelope: Value = response.json().await.unwrap_or(Value::Null);
        let first = &envelope["errors"][0];
        let message = first["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("answered {}", status.as_u16()));
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Transient(format!(
                "cloudflare answered {}: {message}",
                status.as_u16()
            )));
        }
        if !status.is_success() || envelope["success"] != true {
            return Err(Failure::Refused(
                first["code"].as_i64(),
                format!("cloudflare refused ({}): {message}", status.as_u16()),
            ));
        }
        Ok(envelope["result"].clone())
    }

    /// One call, retried while Cloudflare says try again; the envelope's `result`.
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, (Option<i64>, String)> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.once(token, &method, path, body).await {
                Ok(result) => return Ok(result),
                Err(Failure::Refused(code, message)) => return Err((code, message)),
                Err(Failure::Transient(message)) => {
                    tracing::warn!(path, error = %message, "a cloudflare call is tried again");
                    last = message;
                    backoff.sleep().await;
                }
            }
        }
        Err((None, format!("{last} (gave up after {ATTEMPTS} attempts)")))
    }

    async fn zone_id(&self, token: &str, zone: &str) -> Result<String, String> {
        let zones = self
            .call(
                token,
                reqwest::Method::GET,
                &format!("/zones?name={zone}"),
                None,
            )
            .await
            .map_err(|(_, message)| message)?;
        zones[0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("cloudflare has no zone {zone} for this token"))
    }

    async fn find(
        &self,
        token: &str,
        zone_id: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<String>, String> {
        let path = format!("/zones/{zone_id}/dns_records?type={kind}&name={name}");
        let records = self
            .call(token, reqwest::Method::GET, &path, None)
            .await
            .map_err(|(_, message)| message)?;
        Ok(records[0]["id"].as_str().map(str::to_owned))
    }

    /// Creates or updates `name`'s record; (its id, its type, `created` | `updated`).
    pub(crate) async fn upsert(
        &self,
        token: &str,
        name: &str,
        record: &DnsRecord,
    ) -> Result<(String, String, String), String> {
        let kind = record.record_type();
        let zone_id = self.zone_id(token, &record.zone).await?;
        let body = json!({
            "type": kind, "name": name, "content": record.content, "ttl": 1,
            "proxied": record.proxied, "comment": "managed by Nebula Command",
        });
        let patch = |id: String| {
            let body = body.clone();
            let zone_id = zone_id.clone();
            async move {
                let path = format!("/zones/{zone_id}/dns_records/{id}");
                self.call(token, reqwest::Method::PATCH, &path, Some(&body))
                    .await
                    .map_err(|(_, message)| message)?;
                Ok::<_, String>((id, kind.to_owned(), "updated".to_owned()))
            }
        };
        if let Some(id) = self.find(token, &zone_id, kind, name).await? {
            return patch(id).await;
        }
        let path = format!("/zones/{zone_id}/dns_records");
        match self
            .call(token, reqwest::Method::POST, &path, Some(&body))
            .await
        {
            Ok(created) => Ok((
                created["id"].as_str().unwrap_or_default().to_owned(),
                kind.to_owned(),
                "created".to_owned(),
            )),
            // someone created it meanwhile: list it again and patch it
            Err((Some(81057), _)) => match self.find(token, &zone_id, kind, name).await? {
                Some(id) => patch(id).await,
                None => Err("cloudflare says the record exists but does not list it".to_owned()),
            },
            Err((_, message)) => Err(message),
        }
    }

    /// Deletes `name`'s record (one that is not there is fine).
    pub(crate) async fn remove(
        &self,
        token: &str,
        name: &str,
        record: &DnsRecord,
    ) -> Result<(), String> {
        let zone_id = self.zone_id(token, &record.zone).await?;
        let Some(id) = self
            .find(token, &zone_id, record.record_type(), name)
            .await?
        else {
            return Ok(());
        };
        let path = format!("/zones/{zone_id}/dns_records/{id}");
        match self.call(token, reqwest::Method::DELETE, &path, None).await {
            Ok(_) | Err((Some(81044), _)) => Ok(()),
            Err((_, message)) => Err(message),
        }
    }
}
