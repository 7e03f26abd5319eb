//! The multus node agent: serves the CNI engine over a unix socket, owns the eBPF dataplane and
//! exports per-interface metrics.
//!
//! [`run::run`] is the agent (`multus-agent run`); [`status`] is the operator's view
//! (`multus-agent status`).
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")
)]
pub mod access;
pub mod attachments;
pub mod changes;
pub mod cni;
pub mod config;
pub mod dataplane;
pub mod enforce;
pub mod explain;
pub mod hooks;
pub mod install;
pub mod kube_api;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod publish;
pub mod reconcile;
pub mod run;
pub mod scrape;
pub mod server;
pub mod source;
pub mod status;
pub mod sweep;
pub mod uninstall;
