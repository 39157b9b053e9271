//! Hosts over SSH end to end against a real OpenSSH server (Debian's sshd, one per test on a
//! loopback port): the registry, the host key pinned on first contact and a changed one refused
//! until an admin accepts it, metrics read every interval, commands run once with their output
//! and exit status recorded, operators held to the allowlist, and each way of failing told
//! apart (wrong key, unreachable, silent host, a command that never ends).

use crate::common::{self, TOKEN, call, create_token};

use nebula::{Part, Parts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::ssh::Sshd;
use testkit::{DEFAULT_WAIT, NatsServer, wait_until};

const CONTROL: Parts = Parts::of(&[Part::Gateway, Part::Projector, Part::Dispatcher]);

struct Stack {
    _nats: NatsServer,
    _state: tempfile::TempDir,
    config: nebula::Config,
    running: nebula::Running,
    base: String,
}

async fn control(pool: &PgPool) -> Stack {
    let nats = NatsServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = common::config(&nats, pool, state.path());
    config.hosts.metrics_interval_secs = 0.5;
    config.hosts.connect_timeout_secs = 2.0;
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    Stack {
        _nats: nats,
        _state: state,
        config,
        running,
        base,
    }
}

async fn put_secret(base: &str, name: &str, value: &str) {
    let (status, answer) = call(
        Method::PUT,
        format!("{base}/api/secrets/{name}"),
        TOKEN,
        &json!({ "value": value }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

async fn add_host(base: &str, name: &str, sshd: &Sshd, secret: &str, allowlist: &[&str]) {
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/hosts"),
        TOKEN,
        &json!({
            "name": name, "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key_secret": secret, "allowlist": allowlist,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Runs `command` on `host` as `token`; the finished execution.
async fn exec(base: &str, token: &str, host: &str, command: &str, timeout_secs: u32) -> Value {
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/hosts/{host}/exec"),
        token,
        &json!({ "command": command, "timeout_secs": timeout_secs }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["exec_id"].as_str().unwrap().to_owned();
    wait_until("the execution to finish", DEFAULT_WAIT, || async {
        let (status, view) = call(
            Method::GET,
            format!("{base}/api/host-execs/{id}?wait=5"),
            TOKEN,
            &Value::Null,
        )
        .await;
        (status == StatusCode::OK).then_some(view)
    })
    .await
}

fn output(view: &Value, stream: &str) -> String {
    view["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|chunk| chunk["stream"] == stream)
        .map(|chunk| chunk["text"].as_str().unwrap())
        .collect()
}

async fn host(base: &str, name: &str) -> Option<Value> {
    let list = common::get_json(&common::http(), format!("{base}/api/hosts")).await;
    list["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_host_is_pinned_read_and_commanded_once_with_its_output(pool: PgPool) {
    let stack = control(&pool).await;
    let base = &stack.base;
    let sshd = Sshd::start();
    put_secret(base, "ssh-nas", &sshd.client_key).await;
    add_host(base, "nas", &sshd, "ssh-nas", &["echo *", "uptime"]).await;

    // First contact pins the key, and the metrics come in.
    let nas = wait_until("metrics read over SSH", DEFAULT_WAIT, || async {
        host(base, "nas")
            .await
            .filter(|h| h["sample"]["metrics"].is_object())
    })
    .await;
    assert_eq!(nas["host_key"]["fingerprint"], sshd.host_fingerprint);
    assert_eq!(nas["host_key"]["algorithm"], "ssh-ed25519");
    let metrics = &nas["sample"]["metrics"];
    assert!(
        metrics["memory_total_bytes"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    assert!(metrics["uptime_secs"].as_u64().unwrap() > 0, "{metrics}");
    assert!(
        metrics["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["mount"] == "/"),
        "{metrics}"
    );
    assert!(nas.get("key").is_none() && !nas.to_string().contains("PRIVATE KEY"));

    // An admin runs anything: output in order per stream, the exit status, who asked.
    let view = exec(base, TOKEN, "nas", "echo hello; echo oops >&2; exit 3", 10).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["exit_status"], 3);
    assert_eq!(output(&view, "stdout"), "hello\n");
    assert_eq!(output(&view, "stderr"), "oops\n");
    assert_eq!(view["requested_by"]["id"], "admin");
    // Output past the cap is counted, not kept.
    let big = exec(
        base,
        TOKEN,
        "nas",
        "head -c 200000 /dev/zero | tr '\\0' x",
        10,
    )
    .await;
    assert_eq!(big["exit_status"], 0, "{big}");
    assert_eq!(big["output_bytes"], 200000);
    assert_eq!(big["truncated"], true);
    assert_eq!(output(&big, "stdout").len(), 64 * 1024);

    // Operators run what the allowlist names, plainly.
    let operator = create_token(base, "ops", "operator").await;
    let view = exec(base, &operator, "nas", "echo from an operator", 10).await;
    assert_eq!(output(&view, "stdout"), "from an operator\n");
    for refused in ["cat /etc/shadow", "echo x; id", "echo $(id)"] {
        let (status, answer) = call(
            Method::POST,
            format!("{base}/api/hosts/nas/exec"),
            &operator,
            &json!({ "command": refused }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}: {answer}");
    }
    // Only admins change the registry; unknown hosts are named; bad bodies are explained.
    let (status, _) = call(
        Method::DELETE,
        format!("{base}/api/hosts/nas"),
        &operator,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refusals = [
        (
            "/api/hosts/nope/exec",
            json!({ "command": "uptime" }),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "/api/hosts",
            json!({ "name": "x", "address": "1.2.3.4", "user": "u", "key_secret": "missing" }),
            StatusCode::BAD_REQUEST,
            "missing",
        ),
        (
            "/api/hosts",
            json!({ "name": "Bad Name", "address": "h", "user": "u", "key_secret": "ssh-nas" }),
            StatusCode::BAD_REQUEST,
            "Bad Name",
        ),
    ];
    for (path, body, expected, named) in refusals {
        let (status, answer) = call(Method::POST, format!("{base}{path}"), TOKEN, &body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{path}: {answer}");
    }

    // Removed, it is gone from the list and refuses commands.
    let (status, _) = call(
        Method::DELETE,
        format!("{base}/api/hosts/nas"),
        TOKEN,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(host(base, "nas").await.is_none());
    common::assert_no_permission_violations(&stack.running);
    drop(stack.config);
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn each_way_of_failing_is_its_own_recorded_error(pool: PgPool) {
    let stack = control(&pool).await;
    let base = &stack.base;
    let mut sshd = Sshd::start();
    put_secret(base, "good", &sshd.client_key).await;
    put_secret(base, "stranger", &sshd.stranger_key).await;
    add_host(base, "good", &sshd, "good", &[]).await;
    add_host(base, "wrong-key", &sshd, "stranger", &[]).await;

    let view = exec(base, TOKEN, "wrong-key", "true", 10).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["reason"], "auth_failed", "{view}");

    // A command that never ends is killed at its timeout (the remote process is gone too).
    let view = exec(base, TOKEN, "good", "sleep 3031", 1).await;
    assert_eq!(view["reason"], "command_timeout", "{view}");
    wait_until("the remote sleep killed", DEFAULT_WAIT, || async {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "sleep 3031"])
            .output()
            .unwrap();
        (!out.status.success()).then_some(())
    })
    .await;

    // A host that listens but never speaks SSH.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/hosts"),
        TOKEN,
        &json!({ "name": "silent", "address": "127.0.0.1", "port": silent_port,
                 "user": "u", "key_secret": "good" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let view = exec(base, TOKEN, "silent", "true", 10).await;
    assert_eq!(view["reason"], "connect_timeout", "{view}");

    // A reinstalled host: its new key is refused and recorded until an admin accepts it.
    let old = sshd.host_fingerprint.clone();
    let first = exec(base, TOKEN, "good", "echo before", 10).await;
    assert_eq!(first["exit_status"], 0, "{first}");
    sshd.change_host_key();
    let view = exec(base, TOKEN, "good", "echo after", 10).await;
    assert_eq!(view["reason"], "host_key_mismatch", "{view}");
    let good = host(base, "good").await.unwrap();
    assert_eq!(good["host_key"]["fingerprint"], old);
    assert_eq!(good["key_mismatch"]["fingerprint"], sshd.host_fingerprint);
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/hosts/good/accept-key"),
        TOKEN,
        &json!({ "fingerprint": "SHA256:not-what-it-showed" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/hosts/good/accept-key"),
        TOKEN,
        &json!({ "fingerprint": sshd.host_fingerprint }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let view = exec(base, TOKEN, "good", "echo after", 10).await;
    assert_eq!(output(&view, "stdout"), "after\n", "{view}");

    // Down: refused connections.
    sshd.stop();
    let view = exec(base, TOKEN, "good", "true", 10).await;
    assert_eq!(view["reason"], "unreachable", "{view}");
    // The metrics say so too, and come back with the host.
    wait_until(
        "the metrics to report it unreachable",
        DEFAULT_WAIT,
        || async {
            host(base, "good")
                .await
                .filter(|h| h["sample"]["error"]["reason"] == "unreachable")
        },
    )
    .await;
    sshd.resume();
    wait_until("the metrics back", DEFAULT_WAIT, || async {
        host(base, "good")
            .await
            .filter(|h| h["sample"]["metrics"].is_object())
    })
    .await;
    // The log holds every refusal and the pins, with who did them.
    let bus = common::bus(&stack._nats).await;
    let types: Vec<String> = common::envelopes(&bus, "host", "good")
        .await
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(
        types,
        [
            "host.registered",
            "host.key_pinned",
            "host.key_mismatch",
            "host.key_pinned"
        ]
    );
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_command_cut_off_by_a_restart_is_not_run_again(pool: PgPool) {
    let stack = control(&pool).await;
    let sshd = Sshd::start();
    put_secret(&stack.base, "key", &sshd.client_key).await;
    add_host(&stack.base, "box", &sshd, "key", &[]).await;
    let marker = stack._state.path().join("runs");
    let command = format!("echo run >> {}; sleep 3032", marker.display());
    let (status, answer) = call(
        Method::POST,
        format!("{}/api/hosts/box/exec", stack.base),
        TOKEN,
        &json!({ "command": command, "timeout_secs": 30 }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = answer["exec_id"].as_str().unwrap().to_owned();
    wait_until("the command to start", DEFAULT_WAIT, || async {
        marker.exists().then_some(())
    })
    .await;
    let Stack {
        _nats: nats,
        _state: state,
        config,
        running,
        ..
    } = stack;
    running.shutdown().await;
    let running = nebula::start(&config, CONTROL).await.unwrap();
    let base = format!("http://{}", running.gateway_addr.unwrap());
    let view = wait_until("the execution to be closed", DEFAULT_WAIT, || async {
        let (status, view) = call(
            Method::GET,
            format!("{base}/api/host-execs/{id}?wait=5"),
            TOKEN,
            &Value::Null,
        )
        .await;
        (status == StatusCode::OK).then_some(view)
    })
    .await;
    assert_eq!(view["reason"], "interrupted", "{view}");
    // A later command has run to its end: the restarted executor has been through everything
    // pending, and the cut-off one did not run again.
    let later = exec(&base, TOKEN, "box", "true", 10).await;
    assert_eq!(later["exit_status"], 0, "{later}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 3032"])
        .status();
    drop((nats, state));
}

/// `nebula hosts …` as a user runs it (the real binary, the control plane's credentials).
async fn cli(nats: &NatsServer, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("hosts")
        .chain(args.iter().copied())
        .collect();
    common::nebula_cli(nats, &args).await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_cli_adds_lists_and_runs_commands_on_hosts(pool: PgPool) {
    let stack = control(&pool).await;
    let sshd = Sshd::start();
    put_secret(&stack.base, "cli-key", &sshd.client_key).await;
    let port = sshd.port.to_string();
    let add = cli(
        &stack._nats,
        &[
            "add",
            "lab",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            &sshd.user,
            "--key-secret",
            "cli-key",
            "--allow",
            "uptime",
        ],
    )
    .await;
    assert!(add.status.success(), "{add:?}");

    let run = cli(
        &stack._nats,
        &["exec", "lab", "echo hi; echo err >&2; exit 4"],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi\n", "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("err\n") && stderr.contains("exited 4"),
        "{stderr}"
    );

    let ls = cli(&stack._nats, &["ls"]).await;
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listed.contains("lab") && listed.contains(&sshd.host_fingerprint),
        "{listed}"
    );
    // Recorded under the CLI user's name.
    let bus = common::bus(&stack._nats).await;
    let registered = common::envelopes(&bus, "host", "lab").await;
    assert_eq!(
        registered[0].actor,
        events::Actor::User("cli:alice".to_owned())
    );
    let missing = cli(&stack._nats, &["exec", "nope", "true"]).await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no host nope"));
}

/// The Hosts room in headless Chromium: an admin adds a host with the form, sees its metrics
/// and pinned key, and runs a command whose output streams into the runner.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn the_hosts_room_adds_a_host_shows_its_metrics_and_runs_a_command(pool: PgPool) {
    use testkit::webdriver::Browser;
    let stack = control(&pool).await;
    let base = &stack.base;
    let mut sshd = Sshd::start();
    put_secret(base, "ssh-ui", &sshd.client_key).await;

    let browser = Browser::start().await;
    crate::dashboard_access::sign_in(&browser, &format!("{base}/#token={TOKEN}"), "admin · admin")
        .await;
    crate::dashboard::open_room(&browser, "hosts").await;
    browser
        .eval(&format!(
            "const set = (id, v) => {{ document.getElementById(id).value = v; }};
             set('host-name', 'ui-box'); set('host-address', '127.0.0.1'); set('host-port', '{}');
             set('host-user', '{}'); set('host-key-secret', 'ssh-ui'); set('host-allowlist', 'uptime');
             document.getElementById('host-add').click(); return null;",
            sshd.port, sshd.user
        ))
        .await;
    let row = "document.querySelector('#hosts tr[data-host=\"ui-box\"]')";
    let shown = wait_until("the host's metrics and key", DEFAULT_WAIT, || async {
        let shown = browser
            .eval(&format!(
                "const r = {row}; if (!r || !r.querySelector('.host-load')) return null;
                 return {{ load: r.querySelector('.host-load').textContent,
                          key: r.querySelector('.host-key').textContent }};"
            ))
            .await;
        (shown.is_object()
            && shown["key"]
                .as_str()
                .unwrap_or_default()
                .starts_with("SHA256:"))
        .then_some(shown)
    })
    .await;
    assert_eq!(shown["key"], sshd.host_fingerprint);

    browser
        .eval(
            "document.getElementById('host-run-host').value = 'ui-box';
             document.getElementById('host-run-command').value = 'echo from-the-ui; echo warn >&2';
             document.getElementById('host-run').click(); return null;",
        )
        .await;
    let ran = wait_until("the output in the runner", DEFAULT_WAIT, || async {
        let ran = browser
            .eval(
                "const out = document.getElementById('host-run-output');
                 return { out: out.textContent, status: document.getElementById('host-run-status').textContent,
                          stderr: Array.from(out.querySelectorAll('.out-stderr')).map((s) => s.textContent).join('') };",
            )
            .await;
        ran["status"]
            .as_str()
            .unwrap_or_default()
            .starts_with("exit 0")
            .then_some(ran)
    })
    .await;
    assert_eq!(ran["out"], "from-the-ui\nwarn\n", "{ran}");
    assert_eq!(ran["stderr"], "warn\n");
    let listed = browser
        .eval("return document.querySelector('#host-execs li[data-exec-id]').textContent;")
        .await;
    assert!(
        listed
            .as_str()
            .unwrap()
            .contains("ui-box$ echo from-the-ui")
            && listed.as_str().unwrap().contains("by admin"),
        "{listed}"
    );
    // Reinstalled: the new key is shown refused, and the admin accepts it from the row.
    sshd.change_host_key();
    let refused = wait_until("the new key shown refused", DEFAULT_WAIT, || async {
        let text = browser
            .eval(&format!(
                "const r = {row}; const k = r && r.querySelector('.host-key-refused');
                 return k ? r.querySelector('.host-key').textContent : null;"
            ))
            .await;
        text.as_str().map(str::to_owned)
    })
    .await;
    assert!(refused.contains(&sshd.host_fingerprint), "{refused}");
    let png = browser.screenshot_png().await;
    let _ = std::fs::write(std::env::temp_dir().join("nebula-hosts.png"), &png);
    browser
        .eval(&format!(
            "{row}.querySelector('button[data-action=accept]').click(); return null;"
        ))
        .await;
    wait_until("the new key pinned", DEFAULT_WAIT, || async {
        let text = browser
            .eval(&format!(
                "const r = {row}; return r && !r.querySelector('.host-key-refused')
                   ? r.querySelector('.host-key').textContent : null;"
            ))
            .await;
        (text.as_str()? == sshd.host_fingerprint).then_some(())
    })
    .await;
}
