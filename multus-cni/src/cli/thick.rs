//! The thick-mode wire protocol between the `multus-cni` shim and `multus-agent`.
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
use std::path::{Path, PathBuf};

use crate::{
    cni::ErrorReply,
    engine::{Reply, stdin_version},
};

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
/// Default bpffs directory of the agent's dataplane pins.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/multus";
/// Default directory of the agent's dataplane records (tmpfs).
pub const DEFAULT_DATAPLANE_STATE_DIR: &str = "/run/multus/dataplane";

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

/// An error reply (exit status 1) in the spec version of `config` (the runtime's stdin), or the
/// newest version when the configuration does not say.
pub fn error_reply(config: &[u8], code: u32, msg: impl Into<String>) -> Reply {
    Reply {
        stdout: ErrorReply::new(&stdin_version(config), code, msg).to_json(),
        exit_code: 1,
    }
}

/// Where a shim configuration lives in its JSON: `"type": "multus-shim"` at the top level.
pub fn is_shim_config(config: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .is_some_and(|v| v.get("type").and_then(serde_json::Value::as_str) == Some(SHIM_TYPE))
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

    #[test]
    fn shim_detection_and_error_version() {
        assert!(is_shim_config(
            br#"{"type":"multus-shim","cniVersion":"0.3.1"}"#
        ));
        assert!(!is_shim_config(br#"{"type":"multus"}"#));
        assert!(!is_shim_config(b"not json"));
        let r = error_reply(br#"{"cniVersion":"0.3.1"}"#, 11, "later");
        assert_eq!(r.exit_code, 1);
        assert_eq!(
            r.stdout,
            r#"{"cniVersion":"0.3.1","code":11,"msg":"later"}"#
        );
    }
}
