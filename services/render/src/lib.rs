//! The Creative Studio's moving parts: render backends (ComfyUI, simulated), the artifact store,
//! the dispatcher that places queued jobs on nodes, the worker that runs them, and the ComfyUI
//! supervisor.

pub mod backend;
pub mod comfyui;
pub mod dispatcher;
pub mod simulated;
pub mod supervisor;
pub mod worker;
pub mod workflows;

pub use artifacts::{self, ArtifactStore};
pub use backend::{Backend, BackendError, DeviceInfo, InputImage, RenderOutput, RenderRequest};
pub use dispatcher::{Dispatcher, DispatcherConfig, WorkItem};
pub use worker::{Worker, WorkerConfig};
