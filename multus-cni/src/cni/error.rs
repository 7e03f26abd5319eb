//! The spec's error reply (`{"cniVersion","code","msg","details"}`) and its well-known codes.
use serde::{Deserialize, Serialize};

/// Error codes from the CNI spec; 100 and up are plugin-specific.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A delegate failed without a parseable CNI error.
    pub const PLUGIN_FAILED: u32 = 100;
}

/// The error object a plugin prints on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The spec version of the reply.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The error code.
    pub code: u32,
    /// A short message.
    #[serde(default)]
    pub msg: String,
    /// Longer details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorReply {
    /// An error reply in `cni_version`.
    pub fn new(cni_version: &str, code: u32, msg: impl Into<String>) -> Self {
        Self {
            cni_version: cni_version.to_owned(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The reply as compact JSON.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and an integer cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"internal error\"}}", self.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = ErrorReply::new("1.0.0", code::INVALID_CONFIG, "bad \"thing\"");
        let s = e.to_json();
        assert_eq!(
            s,
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad \"thing\""}"#
        );
        let back: ErrorReply = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }
}
