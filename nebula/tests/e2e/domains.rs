//! Domains end to end: a real Caddy (its admin API on a loopback port, plain HTTP on another)
//! serves an app of the Deploy Center and an upstream by host name; their DNS records kept at
//! the Cloudflare fake through 429s, 500s and a create race (81057); a change Caddy refuses (its
//! port taken) is recorded in Caddy's words while the site Caddy served before keeps serving,
//! and applied once the port is free; a route lost from Caddy is put back; a removed domain is
//! gone from Caddy and from DNS; the Domains room shows it all.

use crate::common::{self, call};
use crate::containers::{NODE, Stack, control, node_agent};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::caddy::Caddy;
use testkit::cloudflare::FakeCloudflare;
use testkit::docker::TEST_IMAGE;
use testkit::{DEFAULT_WAIT, wait_until};

/// What Caddy answers for `host` on its server's port.
async fn through_caddy(port: u16, host: &str, path: &str) -> (u16, String) {
    match common::http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .send()
        .await
    {
        Ok(response) => (
            response.status().as_u16(),
            response.text().await.unwrap_or_default().trim().to_owned(),
        ),
        Err(_) => (0, String::new()),
    }
}

async fn domain(base: &str, host: &str) -> Option<Value> {
    common::get_json(&common::http(), format!("{base}/api/domains")).await["domains"]
        .as_array()?
        .iter()
        .find(|d| d["host"] == host)
        .cloned()
}

async fn settled(base: &str, host: &str, route: &str, dns: Option<&str>) -> Value {
    wait_until(
        &format!("{host}: route {route}, dns {dns:?}"),
        DEFAULT_WAIT,
        || async {
            let found = domain(base, host).await?;
            let dns_ok = match dns {
                None => true,
                Some(state) => found["dns_record"]["state"] == state,
            };
            (found["route"]["state"] == route && dns_ok).then_some(found)
        },
    )
    .await
}

#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn domains_are_served_by_caddy_with_their_dns_at_cloudflare(pool: PgPool) {
    let caddy = Caddy::start();
    let cloudflare = FakeCloudflare::start("cf-t0ken", &["example.test"]).await;
    let serve_port = testkit::free_port();
    let (admin, api) = (caddy.admin.clone(), cloudflare.api.clone());
    let Stack {
        nats,
        state: _state,
        config,
        running,
        base,
    } = control(&pool, move |config| {
        config.domains.caddy_admin = admin;
        config.domains.listen = vec![format!("127.0.0.1:{serve_port}")];
        config.domains.tls = "off".to_owned();
        config.domains.cloudflare_api = api;
        config.domains.reconcile_secs = 1.0;
        config.deploy.health_interval_secs = 0.2;
    })
    .await;
    let _agent = node_agent(&config, &nats, testkit::docker::host()).await;
    let _cleanup = common::RemoveAppContainers(&["shop"]);
    let (status, _) = call(
        Method::PUT,
        format!("{base}/api/secrets/cloudflare-token"),
        common::TOKEN,
        &json!({"value": "cf-t0ken"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // An app to serve.
    let app_port = testkit::free_port();
    let app = json!({
        "name": "shop",
        "containers": [{ "name": "web", "spec": { "image": TEST_IMAGE, "network": "host",
            "command": ["sh", "-c", format!("echo shop > /index.html && exec httpd -f -p 127.0.0.1:{app_port} -h /")] } }],
        "health": { "http": format!("http://127.0.0.1:{app_port}/index.html"), "timeout_secs": 10 },
        "nodes": [NODE],
    });
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps"),
        common::TOKEN,
        &app,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/apps/shop/deploy?wait=30"),
        common::TOKEN,
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");

    // Bad asks are refused with their reasons.
    let bad = [
        json!({"host": "Shop.example.test", "app": "shop", "port": app_port}),
        json!({"host": "shop.example.test", "app": "nope", "port": app_port}),
        json!({"host": "shop.example.test", "upstream": "x:1", "app": "shop", "port": 1}),
        json!({"host": "shop.example.test", "app": "shop", "port": app_port, "dns": {"zone": "other.test", "content": "203.0.113.10"}}),
    ];
    for body in bad {
        let (status, answer) = call(
            Method::POST,
            format!("{base}/api/domains"),
            common::TOKEN,
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
    }

    // Caddy already serves a site of the owner's; Nebula's port is taken by another program.
    let own_port = testkit::free_port();
    let seeded = common::http()
        .post(format!("{}/load", caddy.admin))
        .header("origin", &caddy.admin)
        .json(&json!({
            "admin": { "listen": caddy.admin.trim_start_matches("http://") },
            "apps": { "http": { "servers": { "mine": {
                "listen": [format!("127.0.0.1:{own_port}")],
                "automatic_https": { "disable": true },
                "routes": [{ "handle": [{ "handler": "static_response", "body": "my own site" }] }],
            } } } },
        }))
        .send()
        .await
        .unwrap();
    assert!(
        seeded.status().is_success(),
        "{}",
        seeded.text().await.unwrap()
    );
    let squatter = std::net::TcpListener::bind(("127.0.0.1", serve_port)).unwrap();

    // The app's domain, its DNS record created through a 429 and a 500; its route refused by
    // Caddy (the port), which keeps serving what it served.
    cloudflare.fail_next(&[429, 500]);
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/domains"),
        common::TOKEN,
        &json!({"host": "shop.example.test", "app": "shop", "port": app_port,
                "dns": {"zone": "example.test", "content": "203.0.113.10", "proxied": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let shop = settled(&base, "shop.example.test", "failed", Some("applied")).await;
    let error = shop["route"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("caddy answered") && error.contains("address already in use"),
        "{shop}"
    );
    assert!(
        shop["dns_record"]["detail"]
            .as_str()
            .unwrap()
            .contains("(created)"),
        "{shop}"
    );
    assert_eq!(
        through_caddy(own_port, "anything.test", "/").await,
        (200, "my own site".to_owned())
    );
    // The port freed: the next look at Caddy puts the route in.
    drop(squatter);
    settled(&base, "shop.example.test", "applied", Some("applied")).await;
    assert_eq!(
        through_caddy(serve_port, "shop.example.test", "/index.html").await,
        (200, "shop".to_owned())
    );
    assert_eq!(
        cloudflare.records("example.test")["shop.example.test"],
        ("A".to_owned(), "203.0.113.10".to_owned(), true)
    );

    // An upstream's domain whose record someone creates at the same moment: patched, not doubled.
    let api_port = common::serve_fixed("api here".to_owned(), "text/plain");
    cloudflare.race_next_create("A", "api.example.test", "198.51.100.1");
    let (status, _) = call(
        Method::POST,
        format!("{base}/api/domains"),
        common::TOKEN,
        &json!({"host": "api.example.test", "upstream": format!("127.0.0.1:{api_port}"),
                "dns": {"zone": "example.test", "content": "203.0.113.11"}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let api_domain = settled(&base, "api.example.test", "applied", Some("applied")).await;
    assert!(
        api_domain["dns_record"]["detail"]
            .as_str()
            .unwrap()
            .contains("(updated)"),
        "{api_domain}"
    );
    assert_eq!(
        cloudflare.records("example.test")["api.example.test"].1,
        "203.0.113.11"
    );
    assert_eq!(
        through_caddy(serve_port, "api.example.test", "/").await,
        (200, "api here".to_owned())
    );

    // A route lost from Caddy is put back.
    let lost = common::http()
        .delete(format!("{}/id/nebula-domain-api_example_test", caddy.admin))
        .header("origin", &caddy.admin)
        .send()
        .await
        .unwrap();
    assert!(lost.status().is_success());
    wait_until("the lost route back", DEFAULT_WAIT, || async {
        (through_caddy(serve_port, "api.example.test", "/").await.1 == "api here").then_some(())
    })
    .await;

    // The Domains room.
    {
        use testkit::webdriver::Browser;
        let browser = Browser::start().await;
        crate::dashboard_access::sign_in(
            &browser,
            &format!("{base}/#token={}", common::TOKEN),
            "admin · admin",
        )
        .await;
        crate::dashboard::open_room(&browser, "domains").await;
        let shown = wait_until("the domains in the room", DEFAULT_WAIT, || async {
            let shown = browser
                .eval(
                    "const rows = Array.from(document.querySelectorAll('#domains tr[data-host]'));
                     if (rows.length < 2) return null;
                     return rows.map((r) => r.dataset.host + ':' + r.dataset.route + ':' + r.dataset.dns);",
                )
                .await;
            shown.is_array().then_some(shown)
        })
        .await;
        assert_eq!(
            shown,
            json!([
                "api.example.test:applied:applied",
                "shop.example.test:applied:applied"
            ])
        );
        let png = browser.screenshot_png().await;
        let _ = std::fs::write(std::env::temp_dir().join("nebula-domains.png"), &png);
    }

    // Removed: gone from Caddy and from DNS.
    let (status, _) = call(
        Method::DELETE,
        format!("{base}/api/domains/shop.example.test"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_until("the removed domain gone", DEFAULT_WAIT, || async {
        let gone = through_caddy(serve_port, "shop.example.test", "/index.html")
            .await
            .1
            != "shop"
            && !cloudflare
                .records("example.test")
                .contains_key("shop.example.test");
        gone.then_some(())
    })
    .await;
    assert!(domain(&base, "shop.example.test").await.is_none());
    let (status, _) = call(
        Method::DELETE,
        format!("{base}/api/domains/shop.example.test"),
        common::TOKEN,
        &json!(null),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(cloudflare.seen().iter().any(|r| r == "DELETE /dns_records"));
    assert_eq!(
        through_caddy(own_port, "anything.test", "/").await.1,
        "my own site"
    );
    running.shutdown().await;
}

/// With `tls = "internal"` Caddy issues the domain's certificate from its own CA (and leaves
/// the machine's trust store alone); the domains part reads back what Caddy presents for the
/// host and records it — issuer, expiry, names.
#[sqlx::test(migrator = "projections::MIGRATOR")]
async fn a_domain_over_tls_has_its_certificate_read_back_from_caddy(pool: PgPool) {
    let trust_store = || {
        std::fs::read_dir("/usr/local/share/ca-certificates")
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let trusted_before = trust_store();
    let caddy = Caddy::start();
    let serve_port = testkit::free_port();
    let admin = caddy.admin.clone();
    let Stack {
        nats: _nats,
        state: _state,
        config: _,
        running,
        base,
    } = control(&pool, move |config| {
        config.domains.caddy_admin = admin;
        config.domains.listen = vec![format!("127.0.0.1:{serve_port}")];
        config.domains.tls = "internal".to_owned();
        config.domains.reconcile_secs = 1.0;
    })
    .await;
    let upstream = common::serve_fixed("secure\n".to_owned(), "text/plain");
    let (status, answer) = call(
        Method::POST,
        format!("{base}/api/domains"),
        common::TOKEN,
        &json!({"host": "secure.example.test", "upstream": format!("127.0.0.1:{upstream}")}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let found = wait_until("the certificate valid", DEFAULT_WAIT, || async {
        let found = domain(&base, "secure.example.test").await?;
        (found["certificate"]["state"] == "valid").then_some(found)
    })
    .await;
    let certificate = &found["certificate"];
    assert!(
        certificate["issuer"]
            .as_str()
            .unwrap()
            .contains("Caddy Local Authority"),
        "{found}"
    );
    assert_eq!(certificate["names"], json!(["secure.example.test"]));
    let not_after: chrono::DateTime<chrono::Utc> =
        certificate["not_after"].as_str().unwrap().parse().unwrap();
    assert!(not_after > chrono::Utc::now(), "{found}");
    assert_eq!(
        trust_store(),
        trusted_before,
        "Caddy touched the machine's trust store"
    );
    running.shutdown().await;
}
