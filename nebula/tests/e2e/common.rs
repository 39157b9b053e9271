//! Shared set-up for the binary's end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bus::{Bus, BusConfig, ExpectedSeq, NatsAuth};
use events::node::{NodeEvent, NodeRegistered};
use events::{Actor, CorrelationId, EventEnvelope};
use natsauth::Identity;
use nebula::Config;
use sqlx::PgPool;
use testkit::NatsServer;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A studio that renders on its own node: gateway, projector, dispatcher and a render worker
/// on the simulated GPU (what [`render_one`] needs).
pub const RENDERING_STUDIO: nebula::Parts = nebula::Parts::of(&[
    nebula::Part::Gateway,
    nebula::Part::Projector,
    nebula::Part::Dispatcher,
    nebula::Part::RenderWorker,
]);

/// The URL of the database `#[sqlx::test]` made for this test.
pub fn database_url(pool: &PgPool) -> String {
    let base = testkit::database_url();
    let database = pool
        .connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    match base.rfind('/') {
        Some(slash) if base[..slash].contains("://") && slash > base.find("://").unwrap() + 2 => {
            format!("{}/{database}", &base[..slash])
        }
        _ => format!("{base}/{database}"),
    }
}

pub fn config(nats: &NatsServer, pool: &PgPool, state_dir: &std::path::Path) -> Config {
    let mut config = Config {
        nats_url: nats.url(),
        nats: NatsAuth::nkey(nats.control_seed()),
        database_url: database_url(pool).into(),
        redis_url: testkit::redis_url().into(),
        state_dir: state_dir.to_path_buf(),
        artifacts_dir: state_dir.join("artifacts"),
        ..Config::default()
    };
    config.gateway.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.gateway.admin_token = Some(nebula::config::Secret::new(TOKEN));
    config.agent.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.agent.node_id = Some("test-node".to_owned());
    config.agent.heartbeat_interval_secs = 0.2;
    config.agent.disable_gpu_detection = true;
    // Docker only where a test asks for it, and then the project's own engine.
    config.agent.docker_host = String::new();
    config.projector.batch_size = 200;
    config.artifacts_dir = state_dir.join("artifacts");
    config.render.simulated_step_ms = 20;
    config.render.worker.heartbeat_secs = 0.2;
    config.render.dispatcher.tick = std::time::Duration::from_millis(100);
    config
}

/// `config` signed in to NATS as `identity` instead of the control plane: a part that runs on
/// its own (a node's worker, a chat bot) runs with its own role's permissions.
pub fn sign_in_as(config: &mut Config, nats: &NatsServer, identity: &Identity) {
    config.nats = NatsAuth::nkey(nats.seed(identity));
}

/// Asserts that NATS refused `running` nothing: what it did, its credentials allow.
pub fn assert_no_permission_violations(running: &nebula::Running) {
    assert_eq!(
        running
            .bus
            .metrics()
            .get("nebula_nats_permission_violations_total", &[]),
        0.0,
        "NATS refused this process something its work needed (see the log)"
    );
}

/// A bus signed in as `identity`, which checks the streams the control plane made.
pub async fn bus_as(nats: &NatsServer, identity: &Identity) -> Bus {
    Bus::connect_checked(BusConfig {
        url: nats.url(),
        auth: NatsAuth::nkey(nats.seed(identity)),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub async fn bus(nats: &NatsServer) -> Bus {
    Bus::connect(BusConfig {
        url: nats.url(),
        auth: NatsAuth::nkey(nats.control_seed()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Fails when any event on the log so far holds `text` (a secret's value).
pub async fn assert_not_on_log(nats: &NatsServer, text: &str) {
    let bus = bus(nats).await;
    let last = bus.last_seq(bus::StreamName::Events).await.unwrap();
    let mut log = bus
        .read(bus::StreamName::Events, bus::ReadFrom::Start, None)
        .await
        .unwrap();
    while let Some(Ok(message)) = futures::StreamExt::next(&mut log).await {
        assert!(
            !String::from_utf8_lossy(&message.payload).contains(text),
            "a secret on the log at {}",
            message.stream_seq
        );
        if message.stream_seq >= last {
            break;
        }
    }
}

pub fn registered(node: &str) -> EventEnvelope {
    EventEnvelope::new(
        node,
        1,
        &NodeEvent::Registered(NodeRegistered {
            hostname: format!("{node}.lan"),
            os: "Debian GNU/Linux 12".into(),
            kernel: "6.1".into(),
            cpu_model: "test".into(),
            cpu_cores: 4,
            memory_total_bytes: 8 << 30,
            disk_total_bytes: 1 << 40,
            gpus: vec![events::node::GpuInfo {
                index: 0,
                name: "Simulated GPU".into(),
                vendor: "simulated".into(),
                uuid: None,
                memory_total_bytes: 24 << 30,
                driver_version: None,
            }],
            gpu_source: "none".into(),
            agent_version: "0.0.0".into(),
            agent_url: None,
            capabilities: Vec::new(),
        }),
        CorrelationId::new(),
        None,
        Actor::system(),
    )
}

/// Appends one registration event for `node`; returns its stream sequence.
pub async fn publish(bus: &Bus, node: &str) -> u64 {
    bus.append(&[registered(node)], ExpectedSeq::Any)
        .await
        .unwrap()
        .stream_seq
        .0
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `/ws<query>` opened as the bootstrap admin (a bearer header, as non-browser clients do).
pub async fn ws(addr: std::net::SocketAddr, query: &str) -> Ws {
    ws_with(addr, query, TOKEN).await.unwrap()
}

pub async fn ws_with(
    addr: std::net::SocketAddr,
    query: &str,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    ws_at(addr, &format!("/ws{query}"), token).await
}

/// Any websocket path (with its query) opened with a bearer token.
pub async fn ws_at(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// Issues a named token through the REST API (as the bootstrap admin); returns its text.
pub async fn create_token(base: &str, name: &str, role: &str) -> String {
    let response = self::http()
        .post(format!("{base}/api/tokens"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": name, "role": role }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], name);
    assert_eq!(body["role"], role);
    body["token"].as_str().unwrap().to_owned()
}

/// A client whose timeout outlasts the longest `?wait=` a test asks for (30 s), so a slow
/// machine's late answer is an answer, not a client error.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()
        .unwrap()
}

/// `method url` with `token` and a JSON body: the status and the JSON answer (null when none).
pub async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = send(http().request(method, url).bearer_auth(token).json(body)).await;
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// `GET url` with the admin token, as JSON.
pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    send(client.get(url).bearer_auth(TOKEN))
        .await
        .json()
        .await
        .expect("response is not JSON")
}

/// `GET url` without a token, as JSON.
pub async fn get_open_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    send(client.get(url))
        .await
        .json()
        .await
        .expect("response is not JSON")
}

/// `GET url` without a token, as text.
pub async fn get_open_text(client: &reqwest::Client, url: String) -> String {
    send(client.get(url))
        .await
        .text()
        .await
        .expect("response is not text")
}

/// `GET url` with the admin token, as text.
pub async fn get_text(client: &reqwest::Client, url: String) -> String {
    send(client.get(url).bearer_auth(TOKEN))
        .await
        .text()
        .await
        .expect("response is not text")
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request failed")
}

/// A child process that is SIGKILLed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Points the Stream Bot at the test kit's fake Twitch Helix, YouTube and Kick, with the
/// credentials they accept.
pub fn post_to(config: &mut Config, fake: &testkit::stream::FakeStream) {
    let options = testkit::stream::FakeStreamOptions::default();
    let post = &mut config.post;
    post.twitch.api_url = fake.helix_url();
    post.twitch.client_id = Some(options.helix_client_id);
    post.twitch.token = Some(options.helix_token.into());
    post.twitch.broadcaster_id = Some("141981764".into());
    post.youtube.api_url = fake.youtube_url();
    post.youtube.token = Some(options.youtube_token.into());
    post.kick.api_url = fake.kick_url();
    post.kick.token = Some(options.kick_token.into());
    post.kick.broadcaster_user_id = Some(668);
}

/// Every event of one aggregate, in order.
pub async fn envelopes(bus: &Bus, aggregate_type: &str, id: &str) -> Vec<EventEnvelope> {
    bus.aggregate_events(aggregate_type, id).await.unwrap()
}

/// Uploads `png` as a studio input (`POST /api/render/inputs`, as the studio does): its SHA-256.
pub async fn upload_png(base: &str, png: Vec<u8>) -> String {
    let response = http()
        .post(format!("{base}/api/render/inputs"))
        .bearer_auth(TOKEN)
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await
        .expect("request failed");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.expect("response is not JSON");
    body["sha256"].as_str().expect("its sha256").to_owned()
}

/// Renders one small txt2img image through `POST /api/render/jobs` and waits until the read
/// model shows it completed (the stack runs the gateway, projector, dispatcher and a render
/// worker); the job's id and its output's SHA-256.
pub async fn render_one(base: &str) -> (String, String) {
    render_seeded(base, 3).await
}

/// [`render_one`] with its own seed (another seed, other bytes).
pub async fn render_seeded(base: &str, seed: u64) -> (String, String) {
    let client = http();
    let body = serde_json::json!({
        "mode": "txt2img",
        "params": { "prompt": "a lighthouse", "seed": seed, "steps": 2, "width": 64, "height": 64 },
    });
    let (_, submitted) = call(
        reqwest::Method::POST,
        format!("{base}/api/render/jobs"),
        TOKEN,
        &body,
    )
    .await;
    let job_id = submitted["job_id"].as_str().expect("submitted").to_owned();
    let job = testkit::wait_until(
        "the render job to complete",
        Duration::from_secs(30),
        || async {
            let job = get_json(&client, format!("{base}/api/render/jobs/{job_id}")).await;
            (job["status"] == "completed").then_some(job)
        },
    )
    .await;
    let sha256 = job["artifacts"][0]["sha256"].as_str().unwrap().to_owned();
    (job_id, sha256)
}

/// `nebula <args>` as a user runs it (the real binary, the control plane's credentials, user
/// `alice`): awaited, never blocking the test's runtime (agents in the test must keep running).
pub async fn nebula_cli(nats: &NatsServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nebula"))
        .args(args)
        .env("NATS_URL", nats.url())
        .env("NATS_NKEY_FILE", nats.control_seed())
        .env("USER", "alice")
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("failed to run nebula")
}

/// Waits (up to 120 s) for deploy run `run_id` to finish: the run as `GET /api/deploys/{id}`
/// answers it then.
pub async fn finished_run(base: &str, token: &str, run_id: &str) -> serde_json::Value {
    testkit::wait_until(
        "the deploy run to finish",
        Duration::from_secs(120),
        || async {
            let (status, run) = call(
                reqwest::Method::GET,
                format!("{base}/api/deploys/{run_id}?wait=5"),
                token,
                &serde_json::Value::Null,
            )
            .await;
            (status == reqwest::StatusCode::OK).then_some(run)
        },
    )
    .await
}

/// Answers every request on a loopback port with `body` as `content_type` (a catalog host, an
/// upstream that is not an app); its port.
pub fn serve_fixed(body: String, content_type: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The containers of app `app` (labelled `nebula.app`) on the test engine, `name:state`, sorted.
pub fn app_containers(app: &str) -> Vec<String> {
    let mut found: Vec<String> = testkit::docker::docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=nebula.app={app}"),
        "--format",
        "{{.Names}}:{{.State}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    found.sort();
    found
}

/// Removes every container of these apps from the test engine when dropped.
pub struct RemoveAppContainers(pub &'static [&'static str]);

impl Drop for RemoveAppContainers {
    fn drop(&mut self) {
        for app in self.0 {
            for line in app_containers(app) {
                let name = line.split(':').next().unwrap_or_default().to_owned();
                let _ = std::process::Command::new("docker")
                    .args(["-H", &testkit::docker::host(), "rm", "-f", &name])
                    .output();
            }
        }
    }
}
