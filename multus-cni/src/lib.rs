//! The CNI engine: parses a runtime's request, resolves the networks a pod asks for, runs the
//! delegate plugins, rolls back on failure and caches what DEL needs.
//!
//! Entry points: [`front::serve`] (how every front end turns an invocation into a reply),
//! [`engine::Engine`] (what it runs), [`network::NetworkSource`] (where pods and NADs come
//! from), [`engine::Hooks`] and [`engine::DeviceProvider`] (the embedder's seams),
//! [`engine::Publisher`] (how ADD's outcome is published), [`cli::run`] (the thin-mode binary),
//! [`thick`] (the contract between the shim and the agent), and, with the `kube` feature, [`kube`]: the Kubernetes source, network-status, Events and
//! device IDs.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")
)]

pub mod build_info;
pub mod cli;
pub mod cni;
pub mod config;
pub mod delegate;
pub mod engine;
pub mod error;
pub mod files;
pub mod front;
#[cfg(feature = "kube")]
pub mod kube;
pub mod network;
pub mod thick;

pub use config::NetConf;
pub use engine::{AddOutput, Attachment, Engine, Hooks, NetworkStatus};
pub use error::{Error, Result};
pub use network::NetworkSource;
