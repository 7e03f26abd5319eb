//! Changes to the policy compiler's inputs, as the watches and the local directory deliver them
//! to the [`crate::enforce::Enforcer`]: one object added, replaced or removed, or the start and
//! end of a full listing (after which objects of that kind not listed are gone); and the
//! [`PodLookup`] an ADD falls back on for a pod no change delivered yet.
use std::fmt;

use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{api::DynamicObject, runtime::watcher};
use multus_cni::network::SourceError;
use multus_kube::crd::{self, v1beta1, v1beta2};

use crate::policy::{MnpEntry, NadView, NamespaceView, ObjectKey, PodView};

/// A pod's labels and ports, for an ADD whose pod the snapshot does not hold yet.
pub trait PodLookup: Send + Sync {
    /// The pod `namespace/name` (with `uid`, when given); `None` when it does not exist.
    fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<PodView>, SourceError>;
}

/// The kinds of objects policy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Pods (labels, container ports, network-status).
    Pod,
    /// Namespaces (labels).
    Namespace,
    /// NetworkAttachmentDefinitions (policy annotation, CNI config).
    Nad,
    /// MultiNetworkPolicies.
    Mnp,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::Pod, Self::Namespace, Self::Nad, Self::Mnp];

    /// A short lower-case name (metric labels, logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Namespace => "namespace",
            Self::Nad => "nad",
            Self::Mnp => "mnp",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A NAD with what an Event about it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NadObject {
    /// The compiler's view.
    pub view: NadView,
    /// Its UID (Events name it), when known.
    pub uid: Option<String>,
    /// Its resourceVersion, when known.
    pub resource_version: Option<String>,
}

/// A MultiNetworkPolicy, read, with what an Event about it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnpObject {
    /// The compiler's view.
    pub entry: MnpEntry,
    /// Its UID, when known.
    pub uid: Option<String>,
    /// Its resourceVersion, when known.
    pub resource_version: Option<String>,
    /// The API version it was read as.
    pub api_version: String,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod added or replaced (`Some`), or gone (`None`; finished pods count as gone).
    Pod(ObjectKey, Option<PodView>),
    /// A namespace added or replaced, or gone.
    Namespace(String, Option<NamespaceView>),
    /// A NAD added or replaced, or gone.
    Nad(ObjectKey, Option<NadObject>),
    /// A MultiNetworkPolicy added or replaced, or gone.
    Mnp(ObjectKey, Option<MnpObject>),
    /// A full listing of the kind starts: the objects delivered until [`Change::Listed`] are
    /// all there are.
    Relist(Kind),
    /// The listing is complete.
    Listed(Kind),
}

impl Change {
    /// The kind and `namespace/name` (or name) of the object changed.
    pub fn object(&self) -> Option<(Kind, String)> {
        match self {
            Self::Pod(k, _) => Some((Kind::Pod, k.to_string())),
            Self::Namespace(n, _) => Some((Kind::Namespace, n.clone())),
            Self::Nad(k, _) => Some((Kind::Nad, k.to_string())),
            Self::Mnp(k, _) => Some((Kind::Mnp, k.to_string())),
            Self::Relist(_) | Self::Listed(_) => None,
        }
    }
}

fn key_of(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Whether a pod has finished: its addresses may already belong to another pod.
fn finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// A pod: its labels, named ports and network-status, or gone once it finished.
pub fn pod(pod: &Pod) -> Change {
    let key = key_of(&pod.metadata);
    if finished(pod) {
        return Change::Pod(key, None);
    }
    let view = PodView::from_pod_info(&multus_kube::PodInfo::from_pod(pod));
    Change::Pod(key, Some(view))
}

/// A pod gone.
pub fn pod_gone(pod: &Pod) -> Change {
    Change::Pod(key_of(&pod.metadata), None)
}

/// A namespace and its labels.
pub fn namespace(ns: &Namespace) -> Change {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let view = NamespaceView {
        name: name.clone(),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    };
    Change::Namespace(name, Some(view))
}

/// A namespace gone.
pub fn namespace_gone(ns: &Namespace) -> Change {
    Change::Namespace(ns.metadata.name.clone().unwrap_or_default(), None)
}

fn nad_from_meta(meta: &ObjectMeta, config: Option<String>) -> Change {
    let key = key_of(meta);
    let view = NadView {
        key: key.clone(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        config,
    };
    Change::Nad(
        key,
        Some(NadObject {
            view,
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
    )
}

/// A NAD read untyped (as the agent's NAD cache holds it). A `spec.config` that is not a
/// string counts as no config (the engine reports it when a pod uses the network).
pub fn nad_dynamic(nad: &DynamicObject) -> Change {
    let config = nad
        .data
        .get("spec")
        .and_then(|s| s.get("config"))
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    nad_from_meta(&nad.metadata, config)
}

/// A NAD read typed.
pub fn nad_typed(nad: &crd::NetworkAttachmentDefinition) -> Change {
    nad_from_meta(&nad.metadata, nad.spec.config.clone())
}

/// A NAD gone.
pub fn nad_gone(meta: &ObjectMeta) -> Change {
    Change::Nad(key_of(meta), None)
}

fn mnp_change(entry: MnpEntry, meta: &ObjectMeta, api_version: &str) -> Change {
    Change::Mnp(
        entry.key.clone(),
        Some(MnpObject {
            entry,
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            api_version: api_version.to_owned(),
        }),
    )
}

/// A `v1beta2` MultiNetworkPolicy, read and checked.
pub fn mnp(policy: &v1beta2::MultiNetworkPolicy) -> Change {
    mnp_change(
        MnpEntry::parse(policy),
        &policy.metadata,
        "k8s.cni.cncf.io/v1beta2",
    )
}

/// A `v1beta1` MultiNetworkPolicy (local files; the API server serves every object as
/// `v1beta2` to the watch).
pub fn mnp_v1beta1(policy: &v1beta1::MultiNetworkPolicy) -> Change {
    mnp_change(
        MnpEntry::parse_v1beta1(policy),
        &policy.metadata,
        "k8s.cni.cncf.io/v1beta1",
    )
}

/// A MultiNetworkPolicy gone.
pub fn mnp_gone(policy: &v1beta2::MultiNetworkPolicy) -> Change {
    Change::Mnp(key_of(&policy.metadata), None)
}

/// How one kind's watch events become changes.
#[derive(Clone, Copy, Debug)]
pub struct Translate<K> {
    /// The kind.
    pub kind: Kind,
    /// An object added or replaced.
    pub upsert: fn(&K) -> Change,
    /// An object deleted.
    pub remove: fn(&K) -> Change,
}

impl<K> Translate<K> {
    /// The change a watch event makes.
    pub fn event(&self, event: &watcher::Event<K>) -> Change {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (self.upsert)(o),
            watcher::Event::Delete(o) => (self.remove)(o),
            watcher::Event::Init => Change::Relist(self.kind),
            watcher::Event::InitDone => Change::Listed(self.kind),
        }
    }
}

/// Pods.
pub const PODS: Translate<Pod> = Translate {
    kind: Kind::Pod,
    upsert: pod,
    remove: pod_gone,
};

/// Namespaces.
pub const NAMESPACES: Translate<Namespace> = Translate {
    kind: Kind::Namespace,
    upsert: namespace,
    remove: namespace_gone,
};

/// NADs, read untyped.
pub const NADS: Translate<DynamicObject> = Translate {
    kind: Kind::Nad,
    upsert: nad_dynamic,
    remove: |nad| nad_gone(&nad.metadata),
};

/// MultiNetworkPolicies.
pub const MNPS: Translate<v1beta2::MultiNetworkPolicy> = Translate {
    kind: Kind::Mnp,
    upsert: mnp,
    remove: mnp_gone,
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finished_pods_are_gone_and_running_ones_keep_what_policy_reads() {
        let mut value = json!({
            "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"},
                         "annotations": {"k8s.v1.cni.cncf.io/network-status":
                             "[{\"name\":\"prod/blue\",\"interface\":\"net1\",\"ips\":[\"192.0.2.5\"]}]"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"phase": "Running"}
        });
        let running: Pod = serde_json::from_value(value.clone()).unwrap();
        let Change::Pod(key, Some(view)) = PODS.event(&watcher::Event::Apply(running)) else {
            panic!("not an upsert");
        };
        assert_eq!(key, ObjectKey::new("prod", "web"));
        assert_eq!(view.labels["app"], "web");
        assert_eq!(view.ports[0].port, 80);
        assert_eq!(view.networks[0].ips[0].to_string(), "192.0.2.5");
        value["status"]["phase"] = json!("Succeeded");
        let done: Pod = serde_json::from_value(value).unwrap();
        assert_eq!(
            PODS.event(&watcher::Event::InitApply(done)),
            Change::Pod(key, None)
        );
        assert_eq!(PODS.event(&watcher::Event::Init), Change::Relist(Kind::Pod));
        assert_eq!(
            PODS.event(&watcher::Event::InitDone),
            Change::Listed(Kind::Pod)
        );
    }

    #[test]
    fn nads_read_untyped_keep_their_config_and_uid() {
        let nad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "blue", "namespace": "prod", "uid": "u1",
                         "annotations": {"multus-rs.io/policy": "isolate: true"}},
            "spec": {"config": "{\"type\":\"macvlan\"}"}
        }))
        .unwrap();
        let Change::Nad(key, Some(obj)) = NADS.event(&watcher::Event::Apply(nad.clone())) else {
            panic!("not an upsert");
        };
        assert_eq!(key, ObjectKey::new("prod", "blue"));
        assert_eq!(obj.uid.as_deref(), Some("u1"));
        assert_eq!(obj.view.config.as_deref(), Some("{\"type\":\"macvlan\"}"));
        assert_eq!(
            NADS.event(&watcher::Event::Delete(nad)),
            Change::Nad(key, None)
        );
    }
}
