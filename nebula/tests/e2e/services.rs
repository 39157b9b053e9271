//! Services a node's agent supervises, end to end: a process it runs (checked over HTTP,
//! restarted when killed), one that keeps crashing (given up on after its restarts), and a
//! container on the real Docker engine (started when found stopped), a systemd unit (through a
//! stand-in `systemctl`: this machine kind runs no systemd); every change recorded, the live
//! state asked of the agent, and the Services room in Chromium.

use crate::common;

use natsauth::Identity;
use nebula::{Part, Parts};
use serde_json::Value;
use sqlx::PgPool;
use supervise::ServiceConfig;
use testkit::docker::TestContainer;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const NODE: &str = "svc-1";
const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);

/// A stand-in for `systemctl` (`is-active`, `start`, `stop` of a unit) keeping each unit's
/// state in `<dir>/<unit>.state` and every start and stop in `<dir>/calls`.
fn fake_systemctl(dir: &std::path::Path) -> String {
    let path = dir.join("systemctl");
    let dir = dir.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh
f=\"{dir}/$2.state\"
case \"$1\" in
             is-active) s=$(cat \"$f\" 2>/dev/null || echo inactive); echo \"$s\"; [ \"$s\" = active ];;
             start|stop) echo \"$1 $2\" >> \"{dir}/calls\"; if [ \"$1\" = start ]; then echo active; else echo inactive; fi > \"$f\";;
             *) echo \"unknown verb $1\" >&2; exit 1;;
esac
"
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", &path.display().to_string()])
        .status()
        .unwrap();
    path.display().to_string()
}

fn service(raw: &str) -> ServiceConfig {
    toml::from_str(raw).expect("a service's configuration")
}

async fn services(base: &str) -> Value {
    common::get_json(&common::http(), format!("{base}/api/nodes/{NODE}/services")).await
}

async fn state_of(base: &str, name: &str, wanted: &str) -> Value {
    wait_until(&format!("{name} {wanted}"), DEFAULT_WAIT, || async {
        services(base).await["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name && s["state"] == wanted)
            .cloned()
    })
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_agent_supervises_restarts_and_gives_up_on_services(pool: PgPool) {
    let nats = NatsServer::start_with_nodes(&[NODE]);
    let state = tempfile::tempdir().unwrap();
    let config = common::config(&nats, &pool, state.path());
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());

    let port = testkit::free_port();
    let parked = TestContainer::run("nebula-svc", &[], &["sleep", "3600"]);
    testkit::docker::docker(&["stop", "-t", "0", &parked.name]);
    let mut node = config.clone();
    node.agent.node_id = Some(NODE.into());
    node.agent.docker_host = testkit::docker::host();
    let units = tempfile::tempdir().unwrap();
    node.agent.systemctl = fake_systemctl(units.path());
    node.agent.services = vec![
        service(&format!(
            "name = \"web\"\ncommand = [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\n\
             [health]\nhttp = \"http://127.0.0.1:{port}/\"\ninterval_secs = 0.2\n\
             [restart]\nbackoff_initial_secs = 0.1\n"
        )),
        service(
            "name = \"crasher\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n\
             [health]\ninterval_secs = 0.1\n\
             [restart]\nbackoff_initial_secs = 0.05\nbackoff_max_secs = 0.1\ngive_up_after = 2\n",
        ),
        service(&format!(
            "name = \"parked\"\ncontainer = \"{}\"\n[health]\ninterval_secs = 0.2\n",
            parked.name
        )),
        service(
            "name = \"backup\"\nsystemd_unit = \"backup.service\"\n[health]\ninterval_secs = 0.2\n\
             [restart]\nbackoff_initial_secs = 0.1\n",
        ),
    ];
    common::sign_in_as(&mut node, &nats, &Identity::Agent(NODE.parse().unwrap()));
    let agent = nebula::start(&node, Parts::AGENT).await.unwrap();

    let web = state_of(&base, "web", "healthy").await;
    assert_eq!(web["kind"], "command");
    let pid = web["pid"].as_u64().unwrap();
    // The container found stopped is started.
    state_of(&base, "parked", "healthy").await;
    assert_eq!(parked.state().as_deref(), Some("running"));
    // The unit found inactive is started; when it fails it is restarted.
    let backup = state_of(&base, "backup", "healthy").await;
    assert_eq!(backup["kind"], "systemd");
    std::fs::write(units.path().join("backup.service.state"), "failed\n").unwrap();
    wait_until("backup restarted", DEFAULT_WAIT, || async {
        services(&base).await["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "backup" && s["state"] == "healthy" && s["restarts"] == 1)
            .map(|_| ())
    })
    .await;
    let calls = std::fs::read_to_string(units.path().join("calls")).unwrap();
    assert_eq!(calls, "start backup.service\nstart backup.service\n");
    // The crashing one is given up on after its restarts, and says why.
    let crasher = state_of(&base, "crasher", "gave_up").await;
    assert_eq!(crasher["restarts"], 2);
    assert!(
        crasher["reason"]
            .as_str()
            .unwrap()
            .contains("without becoming healthy")
    );

    // Killed from outside: recorded down, restarted, healthy again under a new pid.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let web = wait_until("web restarted", DEFAULT_WAIT, || async {
        services(&base).await["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "web" && s["state"] == "healthy" && s["restarts"] == 1)
            .cloned()
    })
    .await;
    assert_ne!(web["pid"].as_u64().unwrap(), pid);
    let history = services(&base).await["history"].clone();
    let down = history
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "web" && c["state"] == "down")
        .expect("the kill on the log")
        .clone();
    assert!(
        down["reason"].as_str().unwrap().contains("signal: 9"),
        "{down}"
    );
    // The agent's own endpoint tells the same.
    let own = common::get_open_json(
        &common::http(),
        format!("http://{}/services", agent.agent_addr.unwrap()),
    )
    .await;
    let names: Vec<&str> = own["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agent", "backup", "crasher", "parked", "web"]);

    // The ComfyUI this node's render worker supervises is one of its services too.
    let bus = common::bus(&nats).await;
    let comfy = bus::store::commands::<domain::render::ComfyInstance>(bus.clone(), ());
    bus::store::execute(
        &comfy,
        NODE,
        domain::render::RecordComfyState(events::render::ComfyStateChanged {
            state: events::render::ComfyState::Unresponsive,
            pid: Some(4242),
            restarts: 3,
            vram_mode: "--highvram".into(),
            reason: "stopped answering /system_stats".into(),
        }),
        bus::store::CommandMeta::new(events::Actor::Node(NODE.into())),
        3,
    )
    .await
    .unwrap();
    let comfyui = state_of(&base, "comfyui", "unhealthy").await;
    assert_eq!(comfyui["restarts"], 3);
    assert!(
        comfyui["reason"].as_str().unwrap().contains("--highvram"),
        "{comfyui}"
    );

    // The Services room shows them, with the history.
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={}", common::TOKEN),
            "admin · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "services").await;
        let shown = wait_until("the services listed", DEFAULT_WAIT, || async {
            let shown = browser
                .eval(
                    "const rows = Array.from(document.querySelectorAll('#services tr[data-service]'));
                     if (rows.length < 4) return null;
                     return { rows: rows.map((r) => r.dataset.service + ':' + r.dataset.state),
                              history: document.querySelectorAll('#service-history li[data-state]').length };",
                )
                .await;
            shown.is_object().then_some(shown)
        })
        .await;
        let rows: Vec<String> = serde_json::from_value(shown["rows"].clone()).unwrap();
        assert!(rows.contains(&"crasher:gave_up".to_owned()), "{rows:?}");
        assert!(rows.contains(&"comfyui:unhealthy".to_owned()), "{rows:?}");
        assert!(rows.contains(&"web:healthy".to_owned()), "{rows:?}");
        assert!(shown["history"].as_u64().unwrap() >= 5, "{shown}");
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-services.png"), &png);
    }

    // Stopping the agent stops the process it runs, and says so.
    agent.shutdown().await;
    let alive = std::process::Command::new("pgrep")
        .args(["-f", &format!("http.server {port}")])
        .status()
        .unwrap();
    assert!(
        !alive.success(),
        "the supervised process outlived the agent"
    );
    let last = common::envelopes(&bus, "node_services", NODE).await;
    assert!(
        last.iter().any(|e| e.data["service"] == "backup"
            && e.data["state"] == "down"
            && e.data["reason"] == "unit backup.service is failed"),
        "the failed unit on the log"
    );
    assert!(
        last.iter()
            .any(|e| e.data["service"] == "web" && e.data["state"] == "stopped"),
        "no stop recorded"
    );
    running.shutdown().await;
}
