//! Where `cargo xtask` caches what is expensive to build (the test kube-apiserver), shared with
//! the fixtures that use it.
use std::path::{Path, PathBuf};

/// The variable `cargo xtask test` passes the kube-apiserver binary's path in.
pub const APISERVER_VAR: &str = "MULTUS_KUBE_APISERVER";
/// The Kubernetes version of the test API server (Debian bookworm's `kubernetes` source).
pub const APISERVER_VERSION: &str = "v1.20.2";

/// `$XDG_CACHE_HOME/multus-rs`, or `~/.cache/multus-rs`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"))
        .join("multus-rs")
}

/// Where the built kube-apiserver is cached.
pub fn cached_apiserver() -> PathBuf {
    cache_dir()
        .join(format!("kube-apiserver-{APISERVER_VERSION}"))
        .join("kube-apiserver")
}

/// The kube-apiserver the tests start: `$MULTUS_KUBE_APISERVER`, else the cached one.
pub fn apiserver_binary() -> PathBuf {
    std::env::var_os(APISERVER_VAR).map_or_else(cached_apiserver, PathBuf::from)
}
