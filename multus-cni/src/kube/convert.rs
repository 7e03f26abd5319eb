//! The one place where multus-kube's types become the engine's: pods, NADs, API errors and the
//! network-status annotation text. The thin binary uses these; the agent's watch caches can too.
use k8s_openapi::api::core::v1::Pod;
use multus_kube::{ErrorKind, NadInfo, crd};

use crate::{
    engine::NetworkStatus,
    network::{NetworkAttachmentDefinition, PodInfo, SourceError},
};

/// A pod read through the API facade, as the engine sees it.
pub fn pod_info(pod: &multus_kube::PodInfo) -> PodInfo {
    PodInfo {
        uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
        annotations: pod.annotations.clone(),
    }
}

/// A typed pod object (from a watch cache), as the engine sees it.
pub fn pod_object(pod: &Pod) -> PodInfo {
    PodInfo {
        uid: pod.metadata.uid.clone().filter(|u| !u.is_empty()),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
    }
}

/// A NAD read through the API facade, as the engine sees it (no `spec.config`: empty, so the
/// engine looks for a file in confDir).
pub fn nad_info(nad: &NadInfo) -> NetworkAttachmentDefinition {
    NetworkAttachmentDefinition {
        namespace: nad.namespace.clone(),
        name: nad.name.clone(),
        annotations: nad.annotations.clone(),
        config: nad.config.clone().unwrap_or_default(),
    }
}

/// A typed NAD object (from a watch cache), as the engine sees it. `namespace` is used when the
/// object does not carry one.
pub fn nad_object(
    nad: &crd::NetworkAttachmentDefinition,
    namespace: &str,
) -> NetworkAttachmentDefinition {
    NetworkAttachmentDefinition {
        namespace: nad
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned()),
        name: nad.metadata.name.clone().unwrap_or_default(),
        annotations: nad.metadata.annotations.clone().unwrap_or_default(),
        config: nad.spec.config.clone().unwrap_or_default(),
    }
}

/// An API failure looking up `what` (e.g. `pod ns/name`), as a source error: unreachable or
/// overloaded servers are "try again later" (code 11); refused credentials or permissions say
/// what to fix (code 7). Not-found is not an error: callers answer `None` for it.
pub fn source_error(what: String, error: &multus_kube::Error) -> SourceError {
    match error.kind() {
        ErrorKind::Unavailable => SourceError::Unavailable {
            what,
            reason: error.to_string(),
        },
        ErrorKind::Forbidden => SourceError::Invalid {
            what,
            reason: format!(
                "{error}; multus's account lacks an RBAC permission: bind it to the ClusterRole \
                 in deploy/10-rbac.yaml"
            ),
        },
        ErrorKind::Unauthorized => SourceError::Invalid {
            what,
            reason: format!(
                "{error}; check the token of the kubeconfig (or service account) multus uses"
            ),
        },
        ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Other => SourceError::Invalid {
            what,
            reason: error.to_string(),
        },
    }
}

/// The network-status annotation's value, in the text Multus writes (see
/// [`crate::engine::status::annotation_text`]).
pub fn network_status_json(status: &[NetworkStatus]) -> String {
    crate::engine::status::annotation_text(status)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::network::RESOURCE_NAME_ANNOTATION;

    #[test]
    fn pods_and_nads() {
        let pod = multus_kube::PodInfo {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
            annotations: BTreeMap::from([("a".into(), "b".into())]),
            labels: BTreeMap::new(),
            node_name: None,
            container_ports: Vec::new(),
        };
        let got = pod_info(&pod);
        assert_eq!(got.uid.as_deref(), Some("u1"));
        assert_eq!(got.annotations["a"], "b");
        let typed: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "uid": "u2", "annotations": {"x": "y"}}}),
        )
        .unwrap();
        assert_eq!(pod_object(&typed).uid.as_deref(), Some("u2"));

        let info = NadInfo {
            namespace: "ns".into(),
            name: "n".into(),
            uid: "nu".into(),
            config: None,
            annotations: BTreeMap::from([(RESOURCE_NAME_ANNOTATION.into(), "r/x".into())]),
        };
        let nad = nad_info(&info);
        assert_eq!(nad.key(), "ns/n");
        assert_eq!(nad.config, "");
        assert_eq!(nad.resource_name(), Some("r/x"));
        let typed: crd::NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "n"}, "spec": {"config": "{\"type\":\"bridge\"}"}
        }))
        .unwrap();
        let nad = nad_object(&typed, "other");
        assert_eq!(nad.key(), "other/n");
        assert_eq!(nad.config, r#"{"type":"bridge"}"#);
    }

    #[test]
    fn errors_map_to_codes_and_say_what_to_fix() {
        let api = |kind, message: &str| multus_kube::Error::Api {
            op: "get pod",
            object: "ns/p".into(),
            kind,
            message: message.into(),
        };
        let e = source_error("pod ns/p".into(), &api(ErrorKind::Unavailable, "refused"));
        assert_eq!(e.code(), 11);
        let e = source_error("pod ns/p".into(), &api(ErrorKind::Forbidden, "forbidden"));
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("RBAC"), "{e}");
        let e = source_error("pod ns/p".into(), &api(ErrorKind::Unauthorized, "no"));
        assert!(e.to_string().contains("token"), "{e}");
    }
}
