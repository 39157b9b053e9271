//! The fake ComfyUI against what the captures of ComfyUI 0.3.64 show: frames and their order,
//! who receives them, the 400 bodies, execution errors, interrupts, history, files, and death.

mod common;
mod execution;
mod files;
mod frames;
mod server;
mod validation;
