//! A `nebula gateway` (or `nebula up`) process for the figures that go through HTTP (P3, P7,
//! P8), and a minimal
//! keep-alive HTTP/1.1 client for the load (a library client costs more CPU than the gateway
//! itself on 2 cores).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Env, release_binary};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The bootstrap admin token the process is started with.
pub const BOOTSTRAP_TOKEN: &str = "bench-token-0123456789abcdef";

/// A gateway on its own port and state directory, killed when dropped.
pub struct GatewayProcess {
    pub port: u16,
    child: Child,
    _state: tempfile::TempDir,
}

impl GatewayProcess {
    pub async fn start(env: &Env) -> Result<GatewayProcess> {
        Self::start_with(env, "gateway", &[]).await
    }

    /// `nebula <command>` (a process whose parts include the gateway) with `extra` environment.
    pub async fn start_with(
        env: &Env,
        command: &str,
        extra: &[(&str, String)],
    ) -> Result<GatewayProcess> {
        const VAULT_KEY: &str = "6e6562756c612d62656e63682d7661756c742d6b65792d6e6f742d7365637265";
        let binary = release_binary("nebula");
        if !binary.exists() {
            bail!(
                "{} is missing: run through `cargo xtask bench`, which builds it",
                binary.display()
            );
        }
        let port = testkit::free_port();
        let state = tempfile::tempdir()?;
        let child = Command::new(&binary)
            .arg(command)
            .env("NATS_URL", env.nats.url())
            .env("NATS_NKEY_FILE", env.nats.control_seed())
            .env("DATABASE_URL", &env.database_url)
            .env("NEBULA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("NEBULA_ADMIN_TOKEN", BOOTSTRAP_TOKEN)
            .env("NEBULA_STATE_DIR", state.path())
            // Every gateway of one run opens the same vault (its bucket outlives each process).
            .env("NEBULA_VAULT_KEY", VAULT_KEY)
            .env("RUST_LOG", "warn")
            // `extra` last: it may replace any of the above (another DATABASE_URL).
            .envs(extra.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("failed to start the gateway")?;
        let gateway = GatewayProcess {
            port,
            child,
            _state: state,
        };
        gateway.healthy().await?;
        Ok(gateway)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            if let Ok(mut http) = Http::connect(self.port).await
                && let Ok((200, _)) = http.request("GET", "/health", None, None).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the gateway did not become healthy in 20 s");
            }
        }
    }

    /// One request as the bootstrap admin: its status and JSON answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        let mut http = Http::connect(self.port).await?;
        let (status, answer) = http
            .request(method, path, Some(BOOTSTRAP_TOKEN), body)
            .await?;
        Ok((
            status,
            serde_json::from_slice(&answer).unwrap_or(Value::Null),
        ))
    }

    /// A named token with `role`, issued through `POST /api/tokens`.
    pub async fn issue_token(&self, name: &str, role: &str) -> Result<String> {
        let mut http = Http::connect(self.port).await?;
        let body = json!({ "name": name, "role": role }).to_string();
        let (status, answer) = http
            .request("POST", "/api/tokens", Some(BOOTSTRAP_TOKEN), Some(&body))
            .await?;
        if status != 201 {
            bail!(
                "token {name} not issued: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let answer: Value = serde_json::from_slice(&answer)?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    /// Requests per second of `GET path` with `token`, from `connections` keep-alive
    /// connections of `requests` each; every answer must be 200.
    pub async fn reads(
        &self,
        path: &str,
        token: &str,
        connections: usize,
        requests: usize,
    ) -> Result<f64> {
        let mut clients = Vec::new();
        for _ in 0..connections {
            clients.push(Http::connect(self.port).await?);
        }
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut http| {
                let (path, token) = (path.to_owned(), token.to_owned());
                tokio::spawn(async move {
                    for _ in 0..requests {
                        let (status, _) = http.request("GET", &path, Some(&token), None).await?;
                        if status != 200 {
                            bail!("GET {path} answered {status}");
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok((connections * requests) as f64 / started.elapsed().as_secs_f64())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Http {
    stream: BufReader<TcpStream>,
    port: u16,
}

impl Http {
    async fn connect(port: u16) -> Result<Http> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(stream),
            port,
        })
    }

    /// Status and body of one request.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let body = body.unwrap_or_default();
        let kind = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}{kind}Content-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP answer: {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        Ok((status, answer))
    }
}
