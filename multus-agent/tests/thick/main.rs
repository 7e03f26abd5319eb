//! End-to-end root tests of thick mode: the real `multus-agent` and the real `multus-cni` shim,
//! Debian's plugins as delegates, real eBPF programs, in namespaces the tests create.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod chroot;
mod faults;
mod front;
mod kube;
mod kube_node;
mod listeners;
mod logfile;
mod observe;
mod standalone;
mod support;
mod uninstall;
