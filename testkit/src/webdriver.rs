//! Just enough WebDriver to drive Debian's headless Chromium through chromedriver.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// A chromedriver process and one headless Chromium session. Both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    /// chromedriver's and Chromium's temporary files (profiles, shared memory): removed with
    /// the browser, so test runs leave nothing in /tmp.
    _scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver (`$CHROMEDRIVER` or `chromedriver` on PATH) and a headless session.
    pub async fn start() -> Browser {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = crate::free_port();
        let scratch = tempfile::tempdir().expect("a temporary folder for the browser");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {chromedriver} (install chromium-driver; `cargo xtask test` does): {err}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        crate::wait_until(
            "chromedriver to come up",
            Duration::from_secs(20),
            || async {
                http.get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,900",
        ];
        let chromium = std::env::var("CHROMIUM_BIN").ok();
        let mut options = json!({ "args": std::mem::take(&mut args) });
        if let Some(binary) = chromium {
            options["binary"] = json!(binary);
        }
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options } } }))
            .send()
            .await
            .expect("failed to create webdriver session")
            .json()
            .await
            .expect("webdriver answered with invalid json");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {response}"))
            .to_owned();
        Browser {
            _scratch: scratch,
            driver,
            base,
            session,
            http,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{}", self.base, self.session, path);
        let mut request = self.http.request(method, url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response: Value = request
            .send()
            .await
            .expect("webdriver request failed")
            .json()
            .await
            .expect("webdriver answered with invalid json");
        if let Some(error) = response["value"].get("error") {
            panic!(
                "webdriver error on {path}: {error} {}",
                response["value"]["message"]
            );
        }
        response["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Runs `script` (a function body that calls `done(value)` when it has its answer, e.g.
    /// after a promise settles) in the page.
    pub async fn eval_async(&self, script: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1];\n{script}");
        self.command(
            reqwest::Method::POST,
            "execute/async",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot_png(&self) -> Vec<u8> {
        let value = self
            .command(reqwest::Method::GET, "screenshot", Value::Null)
            .await;
        base64_decode(value.as_str().unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium; killing chromedriver alone
        // would leave the browser running. Plain blocking HTTP: Drop cannot await.
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                // The answer comes once the browser is closed; its first bytes are enough.
                let mut response = [0u8; 512];
                let _ = stream.read(&mut response);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 decoding (keeps the test kit free of another crate).
fn base64_decode(input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in input.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
