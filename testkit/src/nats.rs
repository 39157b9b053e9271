use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natsauth::{Accounts, Identity};
use tempfile::TempDir;

/// A nats-server ≥ 2.10 with JetStream, private to one test: own port, own store, the default
/// 1 MiB max_payload, and the authorization `nebula nats config` generates, so clients must
/// sign in as one of the roles ([`NatsServer::seed`]) and every test runs under the
/// permissions production has. Killed on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: TempDir,
    child: Option<Child>,
    config: PathBuf,
    credentials: Arc<Credentials>,
}

/// The roles' seeds (mode 0600) in a folder of their own, shared by a cluster's servers.
struct Credentials {
    _dir: Option<TempDir>,
    accounts: Accounts,
}

impl Credentials {
    fn generate(nodes: &[&str]) -> Arc<Credentials> {
        let dir = tempfile::Builder::new()
            .prefix("nebula-nats-auth-")
            .tempdir()
            .expect("failed to create temp dir");
        let nodes: Vec<events::NodeId> = nodes
            .iter()
            .map(|node| node.parse().expect("a valid node id"))
            .collect();
        let accounts = Accounts::write(dir.path(), &nodes).expect("failed to write credentials");
        Arc::new(Credentials {
            _dir: Some(dir),
            accounts,
        })
    }
}

impl NatsServer {
    /// Starts a fresh server with users for the control plane, the chat bots and the Stream
    /// Bot. The binary is `$NATS_SERVER_BIN`, else `.nebula/bin/nats-server` (what
    /// `cargo xtask` installs).
    pub fn start() -> NatsServer {
        Self::start_configured("", &[])
    }

    /// Starts a fresh server that also has an agent and a render worker user for each of
    /// `nodes`.
    pub fn start_with_nodes(nodes: &[&str]) -> NatsServer {
        Self::start_configured("", nodes)
    }

    /// Starts a fresh server with extra settings inside its `jetstream { … }` block (for
    /// example `sync_interval: always`).
    pub fn start_with(jetstream_settings: &str) -> NatsServer {
        Self::start_configured(jetstream_settings, &[])
    }

    /// Starts a server the way `cargo xtask up` runs the stack's: its users in
    /// `<state_dir>/nats-auth/authorization.conf` (included, so a reload reads that file again:
    /// what the first-run wizard's join writes), its pid in `<state_dir>/nats.pid`.
    pub fn start_for_site(state_dir: &Path) -> NatsServer {
        let port = crate::free_port();
        let auth = state_dir.join("nats-auth");
        let accounts = Accounts::write(&auth, &[]).expect("failed to write credentials");
        let store = temp_store();
        let config = state_dir.join("nats.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\npid_file: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n}}\n\
             include \"nats-auth/{}\"\n",
            state_dir.join("nats.pid").display(),
            store.path().join("js").display(),
            natsauth::AUTHORIZATION_FILE
        );
        std::fs::write(&config, text).expect("failed to write nats.conf");
        let mut server = NatsServer {
            binary: Self::binary(),
            port,
            store,
            child: None,
            config,
            credentials: Arc::new(Credentials {
                _dir: None,
                accounts,
            }),
        };
        server.spawn();
        server
    }

    fn start_configured(jetstream_settings: &str, nodes: &[&str]) -> NatsServer {
        let port = crate::free_port();
        let credentials = Credentials::generate(nodes);
        Self::spawn_with(Self::binary(), temp_store(), port, credentials, |store| {
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  {jetstream_settings}\n}}\n",
                store.join("js").display()
            )
        })
    }

    /// The seed file `identity` signs in with (`bus::NatsAuth::nkey`, `NATS_NKEY_FILE`).
    ///
    /// # Panics
    /// When the server has no such user (a node not named at start).
    pub fn seed(&self, identity: &Identity) -> PathBuf {
        self.credentials
            .accounts
            .seed_file(identity)
            .unwrap_or_else(|| panic!("this nats-server has no user {}", identity.user()))
            .to_path_buf()
    }

    /// The control plane's seed file: the role that may do everything.
    pub fn control_seed(&self) -> PathBuf {
        self.seed(&Identity::Control)
    }

    /// The control plane's seed itself, for a raw `async_nats` client
    /// (`ConnectOptions::with_nkey`).
    pub fn control_nkey(&self) -> String {
        let path = self.control_seed();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
            .trim()
            .to_owned()
    }

    /// The folder of every role's seed (and the `authorization.conf` the server's own
    /// configuration has inline).
    pub fn credentials_dir(&self) -> &Path {
        &self.credentials.accounts.dir
    }

    fn binary() -> PathBuf {
        let binary = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join(".nebula/bin/nats-server"));
        assert!(
            binary.exists(),
            "nats-server not found at {} — run the tests with `cargo xtask test`, which installs it",
            binary.display()
        );
        binary
    }

    fn spawn_with(
        binary: PathBuf,
        store: TempDir,
        port: u16,
        credentials: Arc<Credentials>,
        text: impl FnOnce(&Path) -> String,
    ) -> NatsServer {
        let config = store.path().join("nats.conf");
        // inline: nats-server resolves an include relative to the including file, never absolute
        let text = format!(
            "{}{}",
            text(store.path()),
            credentials.accounts.authorization()
        );
        std::fs::write(&config, text).expect("failed to write nats.conf");
        let mut server = NatsServer {
            binary,
            port,
            store,
            child: None,
            config,
            credentials,
        };
        server.spawn();
        server
    }

    /// Where the server keeps its JetStream files.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server and leaves it down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`NatsServer::kill`].
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::File::create(self.store.path().join("server.log"))
            .expect("failed to create log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {}: {err}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.store.path().join("server.log"))
                    .unwrap_or_default();
                panic!(
                    "nats-server did not listen on {} in 10s; its log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn temp_store() -> TempDir {
    tempfile::Builder::new()
        .prefix("nebula-nats-")
        .tempdir()
        .expect("failed to create temp dir")
}

/// A JetStream cluster of `size` servers on loopback, routed to each other, for tests of
/// replicated streams and of losing a node.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let credentials = Credentials::generate(&[]);
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| (crate::free_port(), crate::free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route))| {
                let routes = routes.join(", ");
                let credentials = credentials.clone();
                NatsServer::spawn_with(NatsServer::binary(), temp_store(), *client, credentials, |store| {
                    format!(
                        "server_name: n{i}\nlisten: 127.0.0.1:{client}\n\
                         jetstream {{\n  store_dir: \"{}\"\n}}\n\
                         cluster {{\n  name: nebula-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
                        store.join("js").display()
                    )
                })
            })
            .collect();
        NatsCluster { servers }
    }

    /// The control plane's seed file (every server has the same users).
    pub fn control_seed(&self) -> PathBuf {
        self.servers[0].control_seed()
    }

    /// Every server, comma-separated, as `NATS_URL` takes a cluster's seeds.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
