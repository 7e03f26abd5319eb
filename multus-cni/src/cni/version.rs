//! The CNI spec versions this plugin speaks, and the VERSION reply.
use std::fmt;

use serde_json::{Value, json};

/// A CNI spec version this plugin accepts in configurations and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.1.0: results with `ip4`/`ip6` objects (as libcni, still read and written).
    V0_1_0,
    /// 0.2.0: the same result shape as 0.1.0.
    V0_2_0,
    /// 0.3.0: the first version with the interfaces/ips/routes result.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: adds CHECK and prevResult on DEL.
    V0_4_0,
    /// 1.0.0: drops the `version` field of IP configs.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC and more route/interface fields.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [Self; 7] = [
        Self::V0_1_0,
        Self::V0_2_0,
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    /// The newest supported version.
    pub const LATEST: Self = Self::V1_1_0;

    /// Parses `"0.3.1"` and friends; `None` for anything unsupported.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1_0 => "0.1.0",
            Self::V0_2_0 => "0.2.0",
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// 0.1.0 and 0.2.0: results carry `ip4`/`ip6` objects instead of interfaces and ips.
    pub fn is_legacy(self) -> bool {
        self < Self::V0_3_0
    }

    /// CHECK exists from 0.4.0 on, and so does prevResult on DEL.
    pub fn has_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results before 1.0.0 carry `"version": "4"|"6"` in every IP config.
    pub fn has_ip_version_field(self) -> bool {
        self < Self::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reply to VERSION.
pub fn version_reply() -> Value {
    json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(CniVersion::parse("0.2.0"), Some(CniVersion::V0_2_0));
        assert!(CniVersion::V0_2_0.is_legacy() && !CniVersion::V0_3_0.is_legacy());
        assert_eq!(CniVersion::parse("0.5.0"), None);
        assert_eq!(CniVersion::parse("1.2.0"), None);
        assert_eq!(CniVersion::parse(""), None);
        assert!(CniVersion::V0_4_0.has_check());
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V1_1_0.has_status_and_gc());
        assert!(!CniVersion::V1_0_0.has_status_and_gc());
    }

    #[test]
    fn version_reply_lists_all() {
        let reply = version_reply();
        assert_eq!(reply["cniVersion"], "1.1.0");
        assert_eq!(
            reply["supportedVersions"],
            json!([
                "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
            ])
        );
    }
}
