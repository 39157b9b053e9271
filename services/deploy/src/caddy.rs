//! Caddy's admin API, as the domains part uses it: one HTTP server of Nebula's own (its
//! listen addresses and TLS mode from `[domains]`), and a route per domain addressed by its
//! `@id` — added, changed (`If-Match` on the config's `Etag`, so a concurrent change is not
//! overwritten) and removed. A change Caddy refuses leaves its old configuration serving; the
//! refusal's own words are returned.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) struct Caddy {
    admin: String,
    server: String,
    listen: Vec<String>,
    tls: String,
    http: reqwest::Client,
}

fn words(status: StatusCode, body: &str) -> String {
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    format!("caddy answered {}: {error}", status.as_u16())
}

impl Caddy {
    pub(crate) fn new(admin: &str, server: &str, listen: Vec<String>, tls: &str) -> Caddy {
        Caddy {
            admin: admin.trim_end_matches('/').to_owned(),
            server: server.to_owned(),
            listen,
            tls: tls.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, String), String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.admin))
            // Caddy checks the origin of admin requests
            .header("origin", &self.admin);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        let response = request
            .send()
            .await
            .map_err(|err| format!("caddy's admin API at {} is unreachable: {err}", self.admin))?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        Ok((status, etag, text))
    }

    /// Nebula's server, created when Caddy has none (a fresh Caddy has no config at all).
    async fn ensure_server(&self) -> Result<(), String> {
        let path = format!("/config/apps/http/servers/{}", self.server);
        let (status, _, text) = self.send(reqwest::Method::GET, &path, None, None).await?;
        if status.is_success() && text.trim() != "null" {
            return Ok(());
        }
        let mut server = json!({ "listen": self.listen, "routes": [] });
        match self.tls.as_str() {
            "off" => server["automatic_https"] = json!({ "disable": true }),
            // A LAN's own CA: no redirect server on :80 either.
            "internal" => server["automatic_https"] = json!({ "disable_redirects": true }),
            _ => {}
        }
        let (status, etag, text) = self
            .send(reqwest::Method::GET, "/config/", None, None)
            .await?;
        if !status.is_success() {
            return Err(words(status, &text));
        }
        let mut config: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !config.is_object() {
            config = json!({});
        }
        config["apps"]["http"]["servers"][&self.server] = server;
        if self.tls == "internal" {
            config["apps"]["tls"]["automation"]["policies"] =
                json!([{ "issuers": [{ "module": "internal" }] }]);
            // Caddy would put its root into the machine's trust store; that is the owner's call
            // (the root is in Caddy's data folder, `pki/authorities/local/root.crt`).
            config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] =
                json!(false);
        }
        let (status, _, text) = self
            .send(
                reqwest::Method::POST,
                "/load",
                Some(&config),
                etag.as_deref(),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(words(status, &text))
        }
    }

    /// Adds or changes the route `route_id`: requests for `host` proxied to `dial`.
    pub(crate) async fn upsert_route(
        &self,
        route_id: &str,
        host: &str,
        dial: &str,
    ) -> Result<(), String> {
        self.ensure_server().await?;
        let route = json!({
            "@id": route_id,
            "match": [{ "host": [host] }],
            "handle": [{ "handler": "reverse_proxy", "upstreams": [{ "dial": dial }] }],
            "terminal": true,
        });
        let (status, etag, _) = self
            .send(reqwest::Method::GET, &format!("/id/{route_id}"), None, None)
            .await?;
        let (status, _, text) = if status.is_success() {
            self.send(
                reqwest::Method::PATCH,
                &format!("/id/{route_id}"),
                Some(&route),
                etag.as_deref(),
            )
            .await?
        } else {
            let (_, etag, _) = self
                .send(reqwest::Method::GET, "/config/", None, None)
                .await?;
            let path = format!("/config/apps/http/servers/{}/routes", self.server);
            self.send(reqwest::Method::POST, &path, Some(&route), etag.as_deref())
                .await?
        };
        if status.is_success() {
            Ok(())
        } else {
            Err(words(status, &text))
        }
    }

    /// Whether the route `route_id` is in Caddy's configuration now.
    pub(crate) async fn has_route(&self, route_id: &str) -> Result<bool, String> {
        let (status, _, text) = self
            .send(reqwest::Method::GET, &format!("/id/{route_id}"), None, None)
            .await?;
        Ok(status.is_success() && text.trim() != "null")
    }

    /// Removes the route `route_id` (one that is not there is fine).
    pub(crate) async fn remove_route(&self, route_id: &str) -> Result<(), String> {
        let (status, _, text) = self
            .send(
                reqwest::Method::DELETE,
                &format!("/id/{route_id}"),
                None,
                None,
            )
            .await?;
        if status.is_success()
            || status == StatusCode::NOT_FOUND
            || text.contains("unknown object ID")
        {
            Ok(())
        } else {
            Err(words(status, &text))
        }
    }
}
