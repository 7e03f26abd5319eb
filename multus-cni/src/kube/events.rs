//! Which Kubernetes Events an ADD produces: a Warning on the pod when its request cannot be
//! served (an invalid annotation, a missing or refused network), and, like Multus, a Normal
//! `AddedInterface` per attached interface.
use multus_kube::EventType;

use crate::{engine::AddOutput, error::Error};

/// The networks annotation (or the default-network annotation, or a request in it) is invalid.
pub const INVALID_NETWORKS_ANNOTATION: &str = "InvalidNetworksAnnotation";
/// A network the pod asks for does not exist (Multus's reason).
pub const NO_NETWORK_FOUND: &str = "NoNetworkFound";
/// A network exists but cannot be used: refused by namespaceIsolation, or a broken config.
pub const INVALID_NETWORK: &str = "InvalidNetwork";
/// DEL of the pod's networks failed `retryDeleteAttempts` times and was given up: something
/// may have leaked (this project's reason).
pub const FAILED_NETWORK_TEARDOWN: &str = "FailedNetworkTeardown";
/// An interface was attached (Multus's reason).
pub const ADDED_INTERFACE: &str = "AddedInterface";
/// The pod asked for `ips`, `mac`, ... on a network none of whose plugins declares the
/// capability: the request was dropped (this project's reason; Multus drops it silently).
pub const MISSING_CAPABILITY: &str = "MissingCapability";

/// The API server's limit on an Event message is generous; keep ours readable and bounded.
const MAX_MESSAGE: usize = 1024;

/// An Event to post on the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// Normal or Warning.
    pub event_type: EventType,
    /// The machine-readable reason.
    pub reason: &'static str,
    /// What happened, for humans.
    pub message: String,
}

impl PodEvent {
    /// An Event with its message bounded.
    pub fn new(event_type: EventType, reason: &'static str, message: String) -> Self {
        Self {
            event_type,
            reason,
            message: bounded(message),
        }
    }
}

/// The Warning for a failed ADD whose cause is the pod's request or the networks it names;
/// `None` for failures an Event would not help with (API down, plugin errors: kubelet reports
/// the CNI error itself).
pub fn for_add_error(error: &Error) -> Option<PodEvent> {
    let reason = match error {
        Error::Annotation { .. } | Error::Capability { .. } => INVALID_NETWORKS_ANNOTATION,
        Error::NetworkNotFound { .. } => NO_NETWORK_FOUND,
        Error::Network { .. } | Error::MasterNotFound { .. } => INVALID_NETWORK,
        _ => return None,
    };
    Some(PodEvent::new(EventType::Warning, reason, error.to_string()))
}

/// One `MissingCapability` Warning per request of the pod that no plugin could take.
pub fn warnings(output: &AddOutput) -> Vec<PodEvent> {
    output
        .warnings
        .iter()
        .map(|w| PodEvent::new(EventType::Warning, MISSING_CAPABILITY, w.clone()))
        .collect()
}

/// One `AddedInterface` per attachment, worded like Multus: `Add net1 [192.0.2.10/24] from
/// ns/nad`.
pub fn added_interfaces(output: &AddOutput) -> Vec<PodEvent> {
    output
        .attachments
        .iter()
        .map(|a| {
            let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
            PodEvent::new(
                EventType::Normal,
                ADDED_INTERFACE,
                format!("Add {} [{}] from {}", a.ifname, ips.join(" "), a.network),
            )
        })
        .collect()
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        engine::Attachment,
        network::{NETWORKS_ANNOTATION, SourceError},
    };

    #[test]
    fn warnings_for_the_pods_own_mistakes_only() {
        let annotation = Error::Annotation {
            annotation: NETWORKS_ANNOTATION,
            reason: "\"Bad_Name\" is not a valid network name".into(),
        };
        let event = for_add_error(&annotation).unwrap();
        assert_eq!(event.event_type, EventType::Warning);
        assert_eq!(event.reason, INVALID_NETWORKS_ANNOTATION);
        assert!(event.message.contains("Bad_Name"), "{}", event.message);
        let missing = Error::NetworkNotFound {
            network: "ns/gone".into(),
            reason: "NetworkAttachmentDefinition not found".into(),
        };
        assert_eq!(for_add_error(&missing).unwrap().reason, NO_NETWORK_FOUND);
        let refused = Error::network("other/n", "namespaceIsolation: ...");
        assert_eq!(for_add_error(&refused).unwrap().reason, INVALID_NETWORK);
        let down = Error::Source(SourceError::Unavailable {
            what: "pod ns/p".into(),
            reason: "refused".into(),
        });
        assert!(for_add_error(&down).is_none());
    }

    #[test]
    fn added_interface_like_multus_and_messages_bounded() {
        let output = AddOutput {
            result: serde_json::Value::Null,
            cni_result: crate::cni::CniResult::default(),
            network_status: Vec::new(),
            attachments: vec![Attachment {
                container_id: "c".into(),
                netns: None,
                ifname: "net1".into(),
                network: "ns/mv".into(),
                cluster: false,
                ips: vec![
                    "192.0.2.10/24".parse().unwrap(),
                    "2001:db8::a/64".parse().unwrap(),
                ],
                mac: None,
                pod: None,
            }],
            warnings: vec!["network ns/mv: the pod asks for mac ...".into()],
        };
        assert_eq!(warnings(&output)[0].reason, MISSING_CAPABILITY);
        assert_eq!(warnings(&output)[0].event_type, EventType::Warning);
        let events = added_interfaces(&output);
        assert_eq!(events[0].reason, ADDED_INTERFACE);
        assert_eq!(
            events[0].message,
            "Add net1 [192.0.2.10/24 2001:db8::a/64] from ns/mv"
        );
        let long = bounded("é".repeat(800));
        assert!(
            long.len() <= MAX_MESSAGE && long.ends_with("..."),
            "{}",
            long.len()
        );
    }
}
