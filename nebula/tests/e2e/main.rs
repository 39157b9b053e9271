//! The `nebula` binary end to end, against real NATS, Postgres and Redis: one test binary with a
//! module per area, so the whole stack is linked once.

mod common;

mod access;
mod agent;
mod ai_dev;
mod ai_dev_remote;
mod approvals;
mod chat;
mod chat_flood;
mod cli;
mod container_create;
mod container_follow;
mod containers;
mod dashboard;
mod dashboard_access;
mod deploy_git;
mod deploy_ssh;
mod deploys;
mod discord;
mod domains;
mod gateway;
mod hosts;
mod market;
mod nats_auth;
mod posting;
mod projector_crash;
mod render;
mod services;
mod setup_wizard;
mod shares;
mod supervisor;
mod sweeps;
mod vault;
mod video;
mod video_more;
