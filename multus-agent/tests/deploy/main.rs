//! What a node and a cluster are given: `multus-agent install` against temporary host
//! directories and against the test API server, and the manifests in deploy/.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod install;
mod install_kube;
mod install_support;
mod manifests;
