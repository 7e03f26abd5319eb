//! The CNI engine: parses a runtime's request, resolves the networks a pod asks for, runs the
//! delegate plugins, rolls back on failure and caches what DEL needs.
//!
//! Entry points: [`engine::Engine`] (both front ends), [`network::NetworkSource`] (where pods
//! and NADs come from), [`engine::Hooks`] and [`engine::DeviceProvider`] (the embedder's seams),
//! and [`cli::run`] (the thin-mode binary).
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")
)]

pub mod cli;
pub mod cni;
pub mod config;
pub mod delegate;
pub mod engine;
pub mod error;
pub mod network;

pub use config::NetConf;
pub use engine::{AddOutput, Attachment, Engine, Hooks, NetworkStatus};
pub use error::{Error, Result};
pub use network::NetworkSource;
