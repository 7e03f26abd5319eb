//! The Kubernetes API requests of the agent in Kubernetes mode, per code path: what the
//! `multus-agent` ClusterRole in `deploy/10-rbac.yaml` must grant, and all it may grant (the
//! manifest test checks both ways). See [`multus_kube::access`] for the thin binary's.
use multus_kube::access::{self, Access, CodePath, Identity};

/// The pod watch cache of [`crate::source::kube`]: this node's pods (field selector
/// `spec.nodeName`), listed then watched.
pub const WATCH_PODS: CodePath = CodePath {
    name: "multus_agent::source::kube pod cache",
    requests: &Access::list_watch("", "pods"),
};

/// The NetworkAttachmentDefinition watch cache of [`crate::source::kube`].
pub const WATCH_NADS: CodePath = CodePath {
    name: "multus_agent::source::kube NAD cache",
    requests: &Access::list_watch(access::NAD_GROUP, access::NAD_RESOURCE),
};

/// The namespace watch cache of [`crate::source::kube`] (labels, for namespace selectors).
pub const WATCH_NAMESPACES: CodePath = CodePath {
    name: "multus_agent::source::kube namespace cache",
    requests: &Access::list_watch("", "namespaces"),
};

/// The pod watch of [`crate::enforce::kube`]: pods of every namespace, whose labels, ports and
/// network-status make them policy peers.
pub const WATCH_ALL_PODS: CodePath = CodePath {
    name: "multus_agent::enforce::kube pod watch",
    requests: &Access::list_watch("", "pods"),
};

/// The MultiNetworkPolicy watch of [`crate::enforce::kube`].
pub const WATCH_MNPS: CodePath = CodePath {
    name: "multus_agent::enforce::kube MultiNetworkPolicy watch",
    requests: &Access::list_watch(access::NAD_GROUP, "multi-networkpolicies"),
};

/// The agent's identity: the watches, the live reads of a pod or NAD its caches do not have
/// yet, the network-status writes, the pod Events of ADD, and the Events about invalid
/// policies.
pub const AGENT: Identity = Identity {
    namespace: "kube-system",
    service_account: "multus-agent",
    cluster_role: "multus-agent",
    code_paths: &[
        WATCH_PODS,
        WATCH_NADS,
        WATCH_NAMESPACES,
        access::GET_POD,
        access::GET_NAD,
        access::SET_NETWORK_STATUS,
        WATCH_ALL_PODS,
        WATCH_MNPS,
        // The pod Events of ADD (multus_cni::kube::KubePublisher) and InvalidPolicy Warnings
        // (crate::enforce::report).
        access::POST_EVENT,
    ],
};
