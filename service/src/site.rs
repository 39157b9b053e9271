//! What the parts of one installation share, set once at the top of the configuration.

use std::path::PathBuf;

use events::NodeId;

/// Not `Debug`: the database URL may carry a password.
#[derive(Clone)]
pub struct Site {
    /// This machine's node id (`agent.node_id`, else the host name).
    pub node_id: NodeId,
    /// Postgres, for the read models (the gateway and the projector).
    pub database_url: String,
    /// Redis, for chat limits and the gateway's health check.
    pub redis_url: String,
    /// Local state: the admin token, the vault key, refreshed platform tokens.
    pub state_dir: PathBuf,
    /// The artifact store (render outputs and inputs), shared by the gateway and render
    /// workers on this host.
    pub artifacts_dir: PathBuf,
    /// Where the gateway's `/share/<token>.png` links are reachable from outside.
    pub public_url: String,
    /// Most render jobs queued at once, enforced by every submitter (REST and chat).
    pub render_queue_cap: usize,
    /// The secrets vault's key file (`NEBULA_VAULT_KEY` wins over it).
    pub vault_key_file: PathBuf,
}
