//! The ComfyUI supervisor of a render worker, against the test kit's fake ComfyUI: restarts
//! after a death or a hang, gives up on one that never comes up, each state recorded through
//! the control plane's relay; the process sees only the environment it is allowed, and
//! stopping it stops everything it started.

use crate::common;

use std::process::Command;
use std::time::Duration;

use bus::Bus;
use natsauth::Identity;
use serde_json::Value;
use testkit::{NatsServer, wait_until};

/// The states a supervisor recorded for `node`, in order, with their pid and restart count.
async fn comfy_states(bus: &Bus, node: &str) -> Vec<(String, Option<u32>, u32)> {
    let subject = events::subjects::event("comfyui", node);
    let mut out = Vec::new();
    for message in bus.read_subject(&subject).await.unwrap() {
        for envelope in message.decode_commit().unwrap() {
            let events::render::ComfyEvent::StateChanged(changed) =
                envelope.decode::<events::render::ComfyEvent>().unwrap();
            let state = serde_json::to_value(changed.state).unwrap();
            out.push((
                state.as_str().unwrap().to_owned(),
                changed.pid,
                changed.restarts,
            ));
        }
    }
    out
}

fn supervise(port: u16, env: &[(&str, &str)]) -> render::supervisor::SupervisorConfig {
    render::supervisor::SupervisorConfig {
        command: vec![
            testkit::comfyui::fake_comfyui_bin().display().to_string(),
            "--listen".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        health_interval_secs: 0.1,
        health_timeout_secs: 0.5,
        unresponsive_after: 3,
        startup_grace_secs: 15.0,
        backoff_initial_secs: 0.2,
        backoff_max_secs: 1.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_supervisor_restarts_a_comfyui_that_died_or_hung() {
    let nats = NatsServer::start_with_nodes(&["gpu-sup", "gpu-hang", "gpu-broken"]);
    let bus = common::bus(&nats).await;
    let client = common::http();
    let cancel = tokio_util::sync::CancellationToken::new();
    // The control plane's relay decides the supervisor's state changes.
    tokio::spawn(bus::remote::serve::<domain::render::ComfyInstance>(
        bus.clone(),
        domain::render::comfy_node_may,
        cancel.clone(),
    ));

    // Dies: SIGKILLed while healthy.
    let port = testkit::free_port();
    let supervisor = render::supervisor::supervisor(
        common::bus_as(&nats, &Identity::Worker("gpu-sup".parse().unwrap())).await,
        "gpu-sup",
        &format!("http://127.0.0.1:{port}"),
        &supervise(port, &[]),
        Some(24 * 1024),
    )
    .unwrap();
    let task = tokio::spawn(std::sync::Arc::new(supervisor).run(cancel.clone()));
    let pid = wait_until("ComfyUI to be healthy", Duration::from_secs(30), || async {
        comfy_states(&bus, "gpu-sup")
            .await
            .into_iter()
            .find(|(state, _, _)| state == "healthy")
            .and_then(|(_, pid, _)| pid)
    })
    .await;
    let stats: Value = client
        .get(format!("http://127.0.0.1:{port}/system_stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let argv = stats["system"]["argv"].to_string();
    assert!(
        argv.contains("--highvram"),
        "24 GiB means --highvram: {argv}"
    );
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let states = wait_until(
        "a restarted, healthy ComfyUI",
        Duration::from_secs(30),
        || async {
            let states = comfy_states(&bus, "gpu-sup").await;
            states
                .iter()
                .any(|(state, _, restarts)| state == "healthy" && *restarts == 1)
                .then_some(states)
        },
    )
    .await;
    let names: Vec<&str> = states.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["starting", "healthy", "down", "starting", "healthy"],
        "{states:?}"
    );
    assert_ne!(states[3].1, Some(pid), "a new process");

    // Hangs: stops answering a second after it starts; it is killed and started again.
    let port = testkit::free_port();
    let supervisor = render::supervisor::supervisor(
        common::bus_as(&nats, &Identity::Worker("gpu-hang".parse().unwrap())).await,
        "gpu-hang",
        &format!("http://127.0.0.1:{port}"),
        &supervise(port, &[("FAKE_COMFY_HANG_AFTER_SECS", "1")]),
        Some(4 * 1024),
    )
    .unwrap();
    let hung = tokio::spawn(std::sync::Arc::new(supervisor).run(cancel.clone()));
    let states = wait_until(
        "a hung ComfyUI to be replaced",
        Duration::from_secs(30),
        || async {
            let states = comfy_states(&bus, "gpu-hang").await;
            (states.iter().filter(|(s, _, _)| s == "starting").count() >= 2).then_some(states)
        },
    )
    .await;
    let names: Vec<&str> = states.iter().map(|(s, _, _)| s.as_str()).take(5).collect();
    assert_eq!(
        names,
        ["starting", "healthy", "unresponsive", "down", "starting"],
        "{states:?}"
    );

    // Never comes up (exits at once): restarted twice, then given up on and left down.
    let mut config = supervise(testkit::free_port(), &[]);
    config.command = vec!["sh".into(), "-c".into(), "exit 3".into()];
    config.give_up_after = 2;
    let supervisor = render::supervisor::supervisor(
        common::bus_as(&nats, &Identity::Worker("gpu-broken".parse().unwrap())).await,
        "gpu-broken",
        "http://127.0.0.1:9",
        &config,
        None,
    )
    .unwrap();
    let broken = tokio::spawn(std::sync::Arc::new(supervisor).run(cancel.clone()));
    let states = wait_until(
        "a broken ComfyUI given up on",
        Duration::from_secs(30),
        || async {
            let states = comfy_states(&bus, "gpu-broken").await;
            states
                .iter()
                .any(|(state, _, _)| state == "gave_up")
                .then_some(states)
        },
    )
    .await;
    let names: Vec<&str> = states.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "starting", "down", "starting", "down", "starting", "down", "gave_up"
        ],
        "{states:?}"
    );
    assert_eq!(states.last().unwrap().2, 2, "two restarts before giving up");

    cancel.cancel();
    task.await.unwrap().unwrap();
    hung.await.unwrap().unwrap();
    broken.await.unwrap().unwrap();
    let last = comfy_states(&bus, "gpu-sup").await;
    assert_eq!(last.last().unwrap().0, "stopped");
}

/// Whether anything accepts connections on `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn comfyui_sees_only_its_allowed_environment_and_stops_with_all_it_started() {
    let nats = NatsServer::start_with_nodes(&["gpu-env"]);
    let bus = common::bus(&nats).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bus::remote::serve::<domain::render::ComfyInstance>(
        bus.clone(),
        domain::render::comfy_node_may,
        cancel.clone(),
    ));
    // A wrapper script, as ComfyUI installs often have: it writes down its environment and
    // starts ComfyUI in the background, so ComfyUI is the supervisor's grandchild.
    let port = testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("env");
    let mut config = supervise(port, &[("COMFY_MARK", "set-by-config")]);
    let fake = config.command.join(" ");
    config.command = vec![
        "sh".into(),
        "-c".into(),
        format!("env > '{}'; {fake} \"$@\" & wait", dump.display()),
        "comfy-wrapper".into(),
    ];
    // cargo sets CARGO_PKG_NAME for the test: passed through by name; CARGO_MANIFEST_DIR,
    // DATABASE_URL and NATS_NKEY_FILE (set by xtask) are not on the list.
    config.pass_env = vec!["CARGO_PKG_NAME".into()];
    config.stop_grace_secs = 0.5;
    let supervisor = render::supervisor::supervisor(
        common::bus_as(&nats, &Identity::Worker("gpu-env".parse().unwrap())).await,
        "gpu-env",
        &format!("http://127.0.0.1:{port}"),
        &config,
        Some(8 * 1024),
    )
    .unwrap();
    let task = tokio::spawn(std::sync::Arc::new(supervisor).run(cancel.clone()));
    wait_until("ComfyUI to be healthy", Duration::from_secs(30), || async {
        comfy_states(&bus, "gpu-env")
            .await
            .iter()
            .any(|(state, _, _)| state == "healthy")
            .then_some(())
    })
    .await;

    let env = std::fs::read_to_string(&dump).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert!(env.contains("COMFY_MARK=set-by-config"), "{env}");
    assert!(env.contains("CARGO_PKG_NAME=nebula"), "{env}");
    assert!(names.contains(&"PATH"), "{env}");
    let shell_own = ["PWD", "OLDPWD", "SHLVL", "_"];
    for name in &names {
        assert!(
            render::supervisor::INHERITED_ENV.contains(name)
                || shell_own.contains(name)
                || ["COMFY_MARK", "CARGO_PKG_NAME"].contains(name),
            "ComfyUI saw {name} of the worker's environment"
        );
    }
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(!names.contains(&"CARGO_MANIFEST_DIR"), "{env}");

    // Stopped: the wrapper and the ComfyUI it started are gone, the port free again.
    assert!(listening(port));
    cancel.cancel();
    task.await.unwrap().unwrap();
    // The whole group was sent SIGKILL; the wrapper's child exits (and frees the port) a moment
    // after its leader was reaped.
    wait_until(
        "ComfyUI (the wrapper's child) to be gone and the port free",
        Duration::from_secs(10),
        || async { (!listening(port)).then_some(()) },
    )
    .await;
    let states = comfy_states(&bus, "gpu-env").await;
    assert_eq!(states.last().unwrap().0, "stopped", "{states:?}");
}
