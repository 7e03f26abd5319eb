//! The compiler's view of the cluster: pods, namespaces, NADs and MultiNetworkPolicies, plus
//! the attachments on this node. Policy objects are read and checked once, when they change;
//! each change answers which local attachments it affects (see [`super::index`]), so the
//! caller recompiles only those.
use std::collections::{BTreeMap, BTreeSet};

use multus_kube::crd::v1beta2::MultiNetworkPolicy;

use super::{
    annotation::NadPolicy,
    error::ObjectError,
    inputs::{
        AttachmentKey, LocalAttachment, NAD_POLICY_ANNOTATION, NadView, NamespaceView, ObjectKey,
        PodView,
    },
    mnp::MnpEntry,
};

/// A NAD with its policy document read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NadEntry {
    /// The NAD as given.
    pub view: NadView,
    /// Its policy: `None` without the annotation.
    pub policy: Option<Result<NadPolicy, ObjectError>>,
}

impl NadEntry {
    /// Reads the NAD's policy annotation, if any.
    pub fn parse(view: NadView) -> Self {
        let policy = view.annotations.get(NAD_POLICY_ANNOTATION).map(|text| {
            NadPolicy::parse(text, view.config.as_deref()).map_err(|field| {
                ObjectError::NadAnnotation {
                    nad: view.key.clone(),
                    field,
                }
            })
        });
        Self { view, policy }
    }

    /// The problem with its annotation, if any.
    pub fn error(&self) -> Option<&ObjectError> {
        self.policy.as_ref().and_then(|p| p.as_ref().err())
    }
}

/// What a change did: the local attachments to recompile, and the changed object's own problem
/// (for an Event on it) when it is an invalid NAD annotation or MultiNetworkPolicy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Attachments whose policy may have changed.
    pub affected: BTreeSet<AttachmentKey>,
    /// The changed object's problem.
    pub invalid: Option<ObjectError>,
}

/// Everything the compiler reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(super) pods: BTreeMap<ObjectKey, PodView>,
    /// network → pods with an interface on it (ordered by namespace, so one namespace's pods
    /// are a range).
    pub(super) pods_by_network: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// namespace → how many pods it has (namespaces of pods, known or not).
    pub(super) pod_namespaces: BTreeMap<String, usize>,
    pub(super) namespaces: BTreeMap<String, NamespaceView>,
    pub(super) nads: BTreeMap<ObjectKey, NadEntry>,
    pub(super) mnps: BTreeMap<ObjectKey, MnpEntry>,
    pub(super) locals: BTreeMap<AttachmentKey, LocalAttachment>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A pod.
    pub fn pod(&self, key: &ObjectKey) -> Option<&PodView> {
        self.pods.get(key)
    }

    /// Every pod with an interface on `network`.
    pub fn pods_on<'a>(&'a self, network: &ObjectKey) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods_by_network
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// The pods of `namespace` with an interface on `network`.
    pub fn pods_on_in<'a>(
        &'a self,
        network: &ObjectKey,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a PodView> + 'a {
        let start = ObjectKey::new(namespace, "");
        self.pods_by_network
            .get(network)
            .into_iter()
            .flat_map(move |set| set.range(start.clone()..))
            .take_while(move |k| k.namespace == namespace)
            .filter_map(|k| self.pods.get(k))
    }

    /// Every namespace that has pods (whether the namespace itself is known or not).
    pub fn pod_namespaces(&self) -> impl Iterator<Item = &str> {
        self.pod_namespaces.keys().map(String::as_str)
    }

    /// A namespace's labels (none for a namespace not in the snapshot).
    pub fn namespace_labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.namespaces.get(name).map_or(&NO_LABELS, |n| &n.labels)
    }

    /// A NAD.
    pub fn nad(&self, key: &ObjectKey) -> Option<&NadEntry> {
        self.nads.get(key)
    }

    /// A MultiNetworkPolicy.
    pub fn mnp(&self, key: &ObjectKey) -> Option<&MnpEntry> {
        self.mnps.get(key)
    }

    /// The MultiNetworkPolicies of a namespace.
    pub fn mnps_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a MnpEntry> + 'a {
        let start = ObjectKey::new(namespace, "");
        let namespace = namespace.to_owned();
        self.mnps
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, m)| m)
    }

    /// A local attachment.
    pub fn local(&self, key: &AttachmentKey) -> Option<&LocalAttachment> {
        self.locals.get(key)
    }

    /// Every local attachment.
    pub fn locals(&self) -> impl Iterator<Item = &LocalAttachment> {
        self.locals.values()
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: PodView) -> Update {
        let old = self.remove_pod_entry(&pod.key);
        for net in &pod.networks {
            self.pods_by_network
                .entry(net.network.clone())
                .or_default()
                .insert(pod.key.clone());
        }
        let affected = self.affected_by_pod(old.as_ref(), Some(&pod));
        *self
            .pod_namespaces
            .entry(pod.key.namespace.clone())
            .or_default() += 1;
        self.pods.insert(pod.key.clone(), pod);
        Update {
            affected,
            invalid: None,
        }
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Update {
        let old = self.remove_pod_entry(key);
        Update {
            affected: self.affected_by_pod(old.as_ref(), None),
            invalid: None,
        }
    }

    fn remove_pod_entry(&mut self, key: &ObjectKey) -> Option<PodView> {
        let old = self.pods.remove(key)?;
        if let Some(count) = self.pod_namespaces.get_mut(&key.namespace) {
            *count -= 1;
            if *count == 0 {
                self.pod_namespaces.remove(&key.namespace);
            }
        }
        for net in &old.networks {
            if let Some(set) = self.pods_by_network.get_mut(&net.network) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_network.remove(&net.network);
                }
            }
        }
        Some(old)
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, namespace: NamespaceView) -> Update {
        let name = namespace.name.clone();
        let old = self.namespaces.insert(name.clone(), namespace);
        Update {
            affected: self.affected_by_namespace(old.as_ref(), self.namespaces.get(&name)),
            invalid: None,
        }
    }

    /// Removes a namespace.
    pub fn remove_namespace(&mut self, name: &str) -> Update {
        let old = self.namespaces.remove(name);
        Update {
            affected: self.affected_by_namespace(old.as_ref(), None),
            invalid: None,
        }
    }

    /// Adds or replaces a NAD (and reads its policy annotation).
    pub fn upsert_nad(&mut self, nad: NadView) -> Update {
        self.upsert_nad_entry(NadEntry::parse(nad))
    }

    /// Adds or replaces an already read NAD.
    pub fn upsert_nad_entry(&mut self, entry: NadEntry) -> Update {
        let invalid = entry.error().cloned();
        let key = entry.view.key.clone();
        let changed = self.nads.get(&key) != Some(&entry);
        self.nads.insert(key.clone(), entry);
        Update {
            affected: if changed {
                self.on_network(&key)
            } else {
                BTreeSet::new()
            },
            invalid,
        }
    }

    /// Removes a NAD.
    pub fn remove_nad(&mut self, key: &ObjectKey) -> Update {
        let affected = match self.nads.remove(key) {
            Some(_) => self.on_network(key),
            None => BTreeSet::new(),
        };
        Update {
            affected,
            invalid: None,
        }
    }

    /// Adds or replaces a MultiNetworkPolicy (and checks it).
    pub fn upsert_mnp(&mut self, policy: &MultiNetworkPolicy) -> Update {
        self.upsert_mnp_entry(MnpEntry::parse(policy))
    }

    /// Adds or replaces an already read MultiNetworkPolicy (e.g. from a `v1beta1` object).
    pub fn upsert_mnp_entry(&mut self, entry: MnpEntry) -> Update {
        let invalid = entry.error().cloned();
        let key = entry.key.clone();
        let old = self.mnps.insert(key.clone(), entry);
        let new = self.mnps.get(&key);
        let affected = if old.as_ref() == new {
            BTreeSet::new()
        } else {
            self.affected_by_mnp(old.as_ref(), new)
        };
        Update { affected, invalid }
    }

    /// Removes a MultiNetworkPolicy.
    pub fn remove_mnp(&mut self, key: &ObjectKey) -> Update {
        let old = self.mnps.remove(key);
        Update {
            affected: self.affected_by_mnp(old.as_ref(), None),
            invalid: None,
        }
    }

    /// Adds or replaces a local attachment; compile it next.
    pub fn add_local(&mut self, attachment: LocalAttachment) -> AttachmentKey {
        let key = attachment.key();
        self.locals.insert(key.clone(), attachment);
        key
    }

    /// Forgets a local attachment.
    pub fn remove_local(&mut self, key: &AttachmentKey) -> Option<LocalAttachment> {
        self.locals.remove(key)
    }

    fn on_network(&self, network: &ObjectKey) -> BTreeSet<AttachmentKey> {
        self.locals
            .iter()
            .filter(|(_, l)| &l.network == network)
            .map(|(k, _)| k.clone())
            .collect()
    }
}
