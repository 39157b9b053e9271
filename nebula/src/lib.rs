//! The `nebula` binary's library: configuration, composition of the services, and the CLI's
//! commands. `main.rs` only parses arguments and calls into here.

mod access;
pub mod cli;
pub mod config;
mod containers;
mod hosts;
pub mod nats;
mod stack;
mod tools;
mod video_cli;

pub use config::Config;
pub use stack::{Part, Parts, Running, start};
