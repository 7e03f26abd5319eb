//! The thick-mode contract between the `multus-cni` shim and `multus-agent`, in one place: the
//! socket protocol (here), where the dataplane pins and records ([`layout`]) and what a record
//! says about its owner ([`record`]). The shim's DEL fallback, the agent and `multus-agent
//! status` all read them from here; nothing in this module needs eBPF.
//!
//! # The socket protocol
//!
//! HTTP/1.1 over a unix socket (`<socketDir>/multus.sock`, root only), one request per
//! connection:
//!
//! ```text
//! POST /cni HTTP/1.1
//! CNI_COMMAND: ADD              one header per CNI_* variable the runtime set
//! CNI_CONTAINERID: ...
//! Content-Length: N
//!
//! <the exact bytes of the runtime's stdin>
//! ```
//!
//! The answer carries what the CNI binary prints on stdout as its body, byte for byte, and the
//! exit status in the `CNI-Exit-Code` header. An answer without that header did not come from
//! the CNI handler (a proxy, a wrong socket) and is treated as a transport failure. So the whole
//! exchange can be replayed with `curl --unix-socket`.
pub mod layout;
pub mod record;

use std::path::{Path, PathBuf};

pub use layout::{DEFAULT_BPFFS_DIR, DEFAULT_DATAPLANE_STATE_DIR, PinLayout};
pub use record::{AttachmentOwner, RecordIdentity};

/// Default directory of the agent's socket (Multus's `daemonSocketDir`/`socketDir`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/multus";
/// File name of the socket inside the socket directory.
pub const SOCKET_NAME: &str = "multus.sock";
/// The request path of CNI invocations.
pub const CNI_ENDPOINT: &str = "/cni";
/// The response header holding the CNI binary's exit status.
pub const EXIT_CODE_HEADER: &str = "CNI-Exit-Code";
/// The `type` of a shim configuration (Multus's thick-plugin type).
pub const SHIM_TYPE: &str = crate::config::SHIM_TYPE;
/// The environment variables forwarded to the agent, each as a header of the same name.
pub const ENV_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// The socket inside `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// Whether a header value can carry `value` unchanged: visible ASCII, spaces and tabs, no line
/// breaks or other control characters.
pub fn is_header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safety() {
        assert!(is_header_safe(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"
        ));
        assert!(is_header_safe("/var/run/netns/cni-1234"));
        assert!(!is_header_safe("a\r\nInjected: yes"));
        assert!(!is_header_safe("caf\u{e9}"));
    }
}
