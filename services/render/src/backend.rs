//! What the worker needs from whatever draws the pictures: the real ComfyUI server, or the
//! clearly labelled simulated GPU for machines without one.

use async_trait::async_trait;
use bytes::Bytes;
use events::render::{RenderMode, RenderParams};
use tokio_util::sync::CancellationToken;

/// One image the job needs, fetched from the artifact store by the worker.
#[derive(Debug, Clone)]
pub struct InputImage {
    /// The parameter it fills: `init_image`, `mask_image`, `control_image`, `face_image`.
    pub param: String,
    pub sha256: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Used to name uploads and outputs (a filename prefix), never trusted as a path.
    pub job_id: String,
    pub mode: RenderMode,
    pub params: RenderParams,
    pub inputs: Vec<InputImage>,
}

#[derive(Debug, Clone)]
pub struct OutputImage {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone)]
pub struct RenderOutput {
    pub images: Vec<OutputImage>,
    /// SHA-256 (hex) of the exact workflow JSON that ran.
    pub workflow_hash: String,
    /// The backend's own id for the run (ComfyUI's prompt_id), for logs.
    pub backend_ref: Option<String>,
}

/// Free and total VRAM as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    pub vram_total_mib: u64,
    pub vram_free_mib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend refused the request (ComfyUI's 400 with `node_errors`): running it again
    /// will not help.
    #[error("rejected: {message}")]
    Rejected {
        message: String,
        details: serde_json::Value,
    },
    /// It ran and failed (ComfyUI's `execution_error`), e.g. a missing model.
    #[error("execution failed in {node_type}: {message}")]
    Execution { node_type: String, message: String },
    /// Interrupted on request (a cancel).
    #[error("interrupted")]
    Interrupted,
    /// The backend is not there or went away mid-job (connection refused, socket closed,
    /// server died): worth retrying.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

impl BackendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackendError::Unavailable(_))
    }
}

/// Called with (value, max) as the backend reports progress; `(0, _)` first, when the device
/// begins the job (until then it may wait in the backend's own queue).
pub type ProgressFn<'a> = &'a (dyn Fn(u32, u32) + Send + Sync);

#[async_trait]
pub trait Backend: Send + Sync {
    /// `"comfyui"` or `"simulated"`; recorded in events and shown wherever a job shows.
    fn name(&self) -> &'static str;

    /// Runs one job to the end. When `cancel` fires, the backend stops the run (ComfyUI:
    /// `/interrupt` for a running prompt, `/queue` delete for a pending one) and returns
    /// [`BackendError::Interrupted`].
    async fn run(
        &self,
        request: &RenderRequest,
        progress: ProgressFn<'_>,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, BackendError>;

    /// Whether the backend answers, and its VRAM.
    async fn health(&self) -> Result<DeviceInfo, BackendError>;
}
