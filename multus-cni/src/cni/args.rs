//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`, with the Kubernetes keys kubelet sets.
use thiserror::Error;

/// Keys this plugin understands; any other key needs `IgnoreUnknown` (as in libcni).
const KNOWN: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// `CNI_ARGS` that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgsError {
    /// A pair without `=`, or with an empty key.
    #[error("CNI_ARGS: malformed pair {pair:?} (expected KEY=VALUE)")]
    Malformed {
        /// The offending pair.
        pair: String,
    },
    /// A key this plugin does not know, without `IgnoreUnknown`.
    #[error("CNI_ARGS: unknown key {key:?} (set IgnoreUnknown=1 to allow it)")]
    Unknown {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("CNI_ARGS: key {key:?} given more than once")]
    Duplicate {
        /// The key.
        key: String,
    },
}

/// Parsed `CNI_ARGS`: every pair in order, plus the Kubernetes ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// All pairs, in the order given.
    pub pairs: Vec<(String, String)>,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub infra_container_id: Option<String>,
    /// `IgnoreUnknown` was set to a true value.
    pub ignore_unknown: bool,
}

impl CniArgs {
    /// Parses the value of `CNI_ARGS`; an empty string gives no pairs.
    pub fn parse(raw: &str) -> Result<Self, ArgsError> {
        let mut out = Self::default();
        for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(ArgsError::Malformed {
                    pair: pair.to_owned(),
                });
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(ArgsError::Malformed {
                    pair: pair.to_owned(),
                });
            }
            if out.pairs.iter().any(|(k, _)| k == key) {
                return Err(ArgsError::Duplicate {
                    key: key.to_owned(),
                });
            }
            let value = value.trim().to_owned();
            let non_empty = || Some(value.clone()).filter(|v| !v.is_empty());
            match key {
                "K8S_POD_NAMESPACE" => out.pod_namespace = non_empty(),
                "K8S_POD_NAME" => out.pod_name = non_empty(),
                "K8S_POD_UID" => out.pod_uid = non_empty(),
                "K8S_POD_INFRA_CONTAINER_ID" => out.infra_container_id = non_empty(),
                "IgnoreUnknown" => {
                    out.ignore_unknown =
                        matches!(value.to_ascii_lowercase().as_str(), "1" | "true");
                }
                _ => {}
            }
            out.pairs.push((key.to_owned(), value));
        }
        if !out.ignore_unknown
            && let Some((key, _)) = out.pairs.iter().find(|(k, _)| !KNOWN.contains(&k.as_str()))
        {
            return Err(ArgsError::Unknown { key: key.clone() });
        }
        Ok(out)
    }

    /// The pod as `namespace/name`, when both keys are present.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.pod_namespace.as_deref()?, self.pod_name.as_deref()?))
    }

    /// The `CNI_ARGS` string for a delegate: the runtime's pairs, with `IgnoreUnknown=1` first
    /// (the reference plugins reject the Kubernetes keys without it).
    pub fn for_delegate(&self) -> String {
        let mut parts = vec!["IgnoreUnknown=1".to_owned()];
        parts.extend(
            self.pairs
                .iter()
                .filter(|(k, _)| k != "IgnoreUnknown")
                .map(|(k, v)| format!("{k}={v}")),
        );
        parts.join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(a.pod(), Some(("ns1", "web-0")));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(a.infra_container_id.as_deref(), Some("abc"));
        assert!(a.ignore_unknown);
        assert_eq!(
            a.for_delegate(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn empty_and_whitespace() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse(" K8S_POD_NAME = p ; ").unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("p"));
        assert_eq!(a.pod(), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            CniArgs::parse("K8S_POD_NAME"),
            Err(ArgsError::Malformed { .. })
        ));
        assert!(matches!(
            CniArgs::parse("=x"),
            Err(ArgsError::Malformed { .. })
        ));
        assert_eq!(
            CniArgs::parse("FOO=bar"),
            Err(ArgsError::Unknown { key: "FOO".into() })
        );
        assert!(CniArgs::parse("FOO=bar;IgnoreUnknown=true").is_ok());
        assert!(matches!(
            CniArgs::parse("K8S_POD_NAME=a;K8S_POD_NAME=b"),
            Err(ArgsError::Duplicate { .. })
        ));
    }
}
