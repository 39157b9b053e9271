//! A fake of Cloudflare's DNS API v4 (the parts Nebula uses), keeping Cloudflare's shapes: the
//! `{success, errors: [{code, message}], messages, result, result_info}` envelope, zones looked
//! up by name, records listed by type and name, created (a duplicate is 400 with code 81057),
//! patched and deleted (a missing one 404 with code 81044), a wrong token 403 with code 10000.
//! Faults can be queued: the next requests answered 429 or 500.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    token: String,
    /// zone name → zone id
    zones: BTreeMap<String, String>,
    /// record id → record
    records: BTreeMap<String, Value>,
    /// statuses to answer the next requests with, first first
    faults: Vec<u16>,
    /// every request, `METHOD path`
    seen: Vec<String>,
    /// (type, name, content) made by "someone else" just before the next create is handled
    race: Option<(String, String, String)>,
    next_id: u64,
}

#[derive(Clone, Default)]
pub struct FakeCloudflare {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:<port>/client/v4`
    pub api: String,
}

fn envelope(status: StatusCode, result: Value, errors: Vec<(i64, &str)>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(code, message)| json!({ "code": code, "message": message }))
        .collect();
    let success = errors.is_empty();
    (
        status,
        Json(json!({ "success": success, "errors": errors, "messages": [], "result": result,
                     "result_info": { "page": 1, "per_page": 100, "count": result.as_array().map_or(1, Vec::len), "total_count": result.as_array().map_or(1, Vec::len), "total_pages": 1 } })),
    )
        .into_response()
}

impl FakeCloudflare {
    /// Serves the API for `token`, with these zones.
    pub async fn start(token: &str, zones: &[&str]) -> FakeCloudflare {
        let mut inner = Inner {
            token: token.to_owned(),
            ..Inner::default()
        };
        for (index, zone) in zones.iter().enumerate() {
            inner
                .zones
                .insert((*zone).to_owned(), format!("zone{index:029}"));
        }
        let inner = Arc::new(Mutex::new(inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}/client/v4", listener.local_addr().unwrap());
        let fake = FakeCloudflare { inner, api };
        let app = Router::new()
            .route("/client/v4/zones", get(zones_list))
            .route(
                "/client/v4/zones/{zone}/dns_records",
                get(records_list).post(record_create),
            )
            .route(
                "/client/v4/zones/{zone}/dns_records/{id}",
                patch(record_patch).delete(record_delete),
            )
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers the next requests with these statuses (429, 500, …), one each.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().faults.extend_from_slice(statuses);
    }

    /// Adds a record as if someone made it by hand.
    pub fn seed(&self, zone: &str, kind: &str, name: &str, content: &str) -> String {
        let mut inner = self.lock();
        let zone_id = inner.zones[zone].clone();
        inner.next_id += 1;
        let id = format!("rec{:029}", inner.next_id);
        let record = json!({ "id": id, "zone_id": zone_id, "type": kind, "name": name, "content": content, "ttl": 1, "proxied": false });
        inner.records.insert(id.clone(), record);
        id
    }

    /// Just before the next create is handled, someone else creates this record (a race the
    /// client must survive: its create is refused with 81057).
    pub fn race_next_create(&self, kind: &str, name: &str, content: &str) {
        self.lock().race = Some((kind.to_owned(), name.to_owned(), content.to_owned()));
    }

    /// The records of `zone`, by name: (type, content, proxied).
    pub fn records(&self, zone: &str) -> BTreeMap<String, (String, String, bool)> {
        let inner = self.lock();
        let zone_id = inner.zones[zone].clone();
        inner
            .records
            .values()
            .filter(|r| r["zone_id"] == zone_id.as_str())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    (
                        r["type"].as_str().unwrap_or_default().to_owned(),
                        r["content"].as_str().unwrap_or_default().to_owned(),
                        r["proxied"].as_bool().unwrap_or(false),
                    ),
                )
            })
            .collect()
    }

    /// Every request so far, `METHOD path`.
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    /// The fault or auth refusal for this request, if any.
    fn gate(&self, headers: &HeaderMap, what: String) -> Option<Response> {
        let mut inner = self.lock();
        inner.seen.push(what);
        if !inner.faults.is_empty() {
            let status = inner.faults.remove(0);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = if status == StatusCode::TOO_MANY_REQUESTS {
                "Rate limited. Please wait and consider throttling your request speed"
            } else {
                "Internal server error"
            };
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                971
            } else {
                10002
            };
            return Some(envelope(status, Value::Null, vec![(code, message)]));
        }
        let wanted = format!("Bearer {}", inner.token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(wanted.as_str()) {
            return Some(envelope(
                StatusCode::FORBIDDEN,
                Value::Null,
                vec![(10000, "Authentication error")],
            ));
        }
        None
    }
}

async fn zones_list(
    State(fake): State<FakeCloudflare>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = fake.gate(&headers, "GET /zones".to_owned()) {
        return refused;
    }
    let inner = fake.lock();
    let found: Vec<Value> = inner
        .zones
        .iter()
        .filter(|(name, _)| query.get("name").is_none_or(|wanted| wanted == *name))
        .map(|(name, id)| json!({ "id": id, "name": name, "status": "active" }))
        .collect();
    envelope(StatusCode::OK, Value::Array(found), vec![])
}

fn known_zone(fake: &FakeCloudflare, zone: &str) -> bool {
    fake.lock().zones.values().any(|id| id == zone)
}

async fn records_list(
    State(fake): State<FakeCloudflare>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = fake.gate(&headers, "GET /dns_records".to_owned()) {
        return refused;
    }
    if !known_zone(&fake, &zone) {
        return envelope(
            StatusCode::NOT_FOUND,
            Value::Null,
            vec![(
                7003,
                "Could not route to /zones, perhaps your object identifier is invalid?",
            )],
        );
    }
    let inner = fake.lock();
    let found: Vec<Value> = inner
        .records
        .values()
        .filter(|r| r["zone_id"] == zone.as_str())
        .filter(|r| query.get("type").is_none_or(|t| r["type"] == t.as_str()))
        .filter(|r| query.get("name").is_none_or(|n| r["name"] == n.as_str()))
        .cloned()
        .collect();
    envelope(StatusCode::OK, Value::Array(found), vec![])
}

async fn record_create(
    State(fake): State<FakeCloudflare>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = fake.gate(&headers, "POST /dns_records".to_owned()) {
        return refused;
    }
    if !known_zone(&fake, &zone) {
        return envelope(
            StatusCode::NOT_FOUND,
            Value::Null,
            vec![(7003, "Could not route to /zones")],
        );
    }
    let race = fake.lock().race.take();
    if let Some((kind, name, content)) = race {
        let zone_name = fake
            .lock()
            .zones
            .iter()
            .find(|(_, id)| **id == zone)
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        fake.seed(&zone_name, &kind, &name, &content);
    }
    let mut inner = fake.lock();
    let duplicate = inner.records.values().any(|r| {
        r["zone_id"] == zone.as_str() && r["type"] == body["type"] && r["name"] == body["name"]
    });
    if duplicate {
        return envelope(
            StatusCode::BAD_REQUEST,
            Value::Null,
            vec![(81057, "Record already exists.")],
        );
    }
    inner.next_id += 1;
    let id = format!("rec{:029}", inner.next_id);
    let mut record = body.clone();
    record["id"] = json!(id);
    record["zone_id"] = json!(zone);
    inner.records.insert(id, record.clone());
    envelope(StatusCode::OK, record, vec![])
}

async fn record_patch(
    State(fake): State<FakeCloudflare>,
    headers: HeaderMap,
    Path((zone, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = fake.gate(&headers, "PATCH /dns_records".to_owned()) {
        return refused;
    }
    let mut inner = fake.lock();
    let Some(record) = inner
        .records
        .get_mut(&id)
        .filter(|r| r["zone_id"] == zone.as_str())
    else {
        return envelope(
            StatusCode::NOT_FOUND,
            Value::Null,
            vec![(81044, "Record does not exist.")],
        );
    };
    if let (Some(record), Some(changes)) = (record.as_object_mut(), body.as_object()) {
        for (key, value) in changes {
            record.insert(key.clone(), value.clone());
        }
    }
    let answer = record.clone();
    envelope(StatusCode::OK, answer, vec![])
}

async fn record_delete(
    State(fake): State<FakeCloudflare>,
    headers: HeaderMap,
    Path((_zone, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = fake.gate(&headers, "DELETE /dns_records".to_owned()) {
        return refused;
    }
    match fake.lock().records.remove(&id) {
        Some(_) => envelope(StatusCode::OK, json!({ "id": id }), vec![]),
        None => envelope(
            StatusCode::NOT_FOUND,
            Value::Null,
            vec![(81044, "Record does not exist.")],
        ),
    }
}
