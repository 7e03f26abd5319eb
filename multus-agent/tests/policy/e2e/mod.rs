//! End-to-end policy tests: the real agent and shim, Debian's plugins, real eBPF programs and
//! real traffic between test namespaces, with NADs, pods and MultiNetworkPolicies in a real
//! API server (and, for standalone mode, in local files).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod fixture;
mod mnp;
mod nad;
mod standalone;
