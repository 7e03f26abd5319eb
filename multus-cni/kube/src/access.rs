//! Every Kubernetes API request the code makes, listed per code path and per identity: the one
//! list that the ClusterRoles in `deploy/10-rbac.yaml` are checked against, both ways (every
//! request is allowed by a rule, every verb a rule grants is used by some code path).
//!
//! A code path that starts making a new request adds it here; the manifest test then says which
//! rule is missing. A rule nothing uses any more fails the same test.

/// What RBAC checks of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// The resource, `resource/subresource` for a subresource.
    pub resource: &'static str,
    /// The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
}

impl Access {
    /// A request on a core-group resource.
    pub const fn core(resource: &'static str, verb: &'static str) -> Self {
        Self {
            group: "",
            resource,
            verb,
        }
    }

    /// A request on a NetworkAttachmentDefinition.
    pub const fn nad(verb: &'static str) -> Self {
        Self {
            group: NAD_GROUP,
            resource: NAD_RESOURCE,
            verb,
        }
    }

    /// What a watch cache of `resource` in `group` requests: `list`, then `watch`.
    pub const fn list_watch(group: &'static str, resource: &'static str) -> [Self; 2] {
        [
            Self {
                group,
                resource,
                verb: "list",
            },
            Self {
                group,
                resource,
                verb: "watch",
            },
        ]
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

/// The API group of the NPWG CRDs.
pub const NAD_GROUP: &str = "k8s.cni.cncf.io";
/// The plural resource name of NetworkAttachmentDefinitions.
pub const NAD_RESOURCE: &str = "network-attachment-definitions";

/// A function (or task) and the requests it makes.
#[derive(Debug, Clone, Copy)]
pub struct CodePath {
    /// The function, as `module::Type::method` or a short description of a task.
    pub name: &'static str,
    /// Every request it can make.
    pub requests: &'static [Access],
}

/// [`crate::KubeApi::get_pod`].
pub const GET_POD: CodePath = CodePath {
    name: "multus_kube::KubeApi::get_pod",
    requests: &[Access::core("pods", "get")],
};

/// [`crate::KubeApi::get_nad`].
pub const GET_NAD: CodePath = CodePath {
    name: "multus_kube::KubeApi::get_nad",
    requests: &[Access::nad("get")],
};

/// [`crate::KubeApi::set_network_status`]: read the pod, replace its status.
pub const SET_NETWORK_STATUS: CodePath = CodePath {
    name: "multus_kube::KubeApi::set_network_status",
    requests: &[
        Access::core("pods", "get"),
        Access::core("pods/status", "update"),
    ],
};

/// [`crate::KubeApi::post_event`].
pub const POST_EVENT: CodePath = CodePath {
    name: "multus_kube::KubeApi::post_event",
    requests: &[Access::core("events", "create")],
};

/// Every code path of the blocking facade, [`crate::KubeApi`].
pub const FACADE: [CodePath; 4] = [GET_POD, GET_NAD, SET_NETWORK_STATUS, POST_EVENT];

/// An identity in the cluster: a ServiceAccount, the ClusterRole bound to it, and the code paths
/// that run under it.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The ServiceAccount's namespace.
    pub namespace: &'static str,
    /// The ServiceAccount's name.
    pub service_account: &'static str,
    /// The ClusterRole bound to it.
    pub cluster_role: &'static str,
    /// What runs as it.
    pub code_paths: &'static [CodePath],
}

impl Identity {
    /// Every request of every code path, sorted, without duplicates.
    pub fn requests(&self) -> Vec<Access> {
        let mut out: Vec<Access> = self
            .code_paths
            .iter()
            .flat_map(|p| p.requests.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The code paths that make `access`.
    pub fn paths_making(&self, access: &Access) -> Vec<&'static str> {
        self.code_paths
            .iter()
            .filter(|p| p.requests.contains(access))
            .map(|p| p.name)
            .collect()
    }
}

/// The thin `multus-cni` binary (and the shim, which makes no request): the engine's Kubernetes
/// side (`multus_cni::kube`) reads the pod and its NADs, writes network-status and posts Events.
pub const CNI_BINARY: Identity = Identity {
    namespace: "kube-system",
    service_account: "multus-rs",
    cluster_role: "multus-rs",
    code_paths: &FACADE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_and_distinct() {
        let requests = CNI_BINARY.requests();
        assert_eq!(
            requests,
            vec![
                Access::core("events", "create"),
                Access::core("pods", "get"),
                Access::core("pods/status", "update"),
                Access::nad("get"),
            ]
        );
        assert_eq!(
            CNI_BINARY.paths_making(&Access::core("pods", "get")),
            [
                "multus_kube::KubeApi::get_pod",
                "multus_kube::KubeApi::set_network_status"
            ]
        );
        assert_eq!(
            Access::nad("get").to_string(),
            "get network-attachment-definitions (k8s.cni.cncf.io)"
        );
    }
}
