//! Networks: the NetworkAttachmentDefinition model, the pod annotations that select networks,
//! and the [`NetworkSource`] seam through which the engine looks pods and networks up.
pub mod annotation;
pub mod local;
pub mod nad;
pub mod source;

pub use annotation::{
    Bandwidth, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelectionElement,
    PortMapping, parse_default_network, parse_networks,
};
pub use local::LocalFiles;
pub use nad::{NetworkAttachmentDefinition, RESOURCE_NAME_ANNOTATION};
pub use source::{NetworkSource, NoSource, PodInfo, PodKey, SourceError};

/// Checks a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters), the rule
/// for NAD names and namespaces.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let end_ok = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(inner_ok)
        && end_ok(b.first())
        && end_ok(b.last())
}

#[cfg(test)]
mod tests {
    use super::is_dns1123_label;

    #[test]
    fn dns1123() {
        for ok in ["a", "macvlan-conf", "n1", "0abc"] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Abc", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
