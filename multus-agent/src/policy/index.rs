//! Which local attachments a change affects. The answer may include attachments whose policy
//! turns out unchanged (the caller compares), but never misses one whose policy changes:
//! - a pod: the attachments of the pod itself (its labels pick the policies, its named ports
//!   resolve ingress rules), and those under a MultiNetworkPolicy that can pick the pod (old
//!   or new version) as a peer on one of the policy's networks;
//! - a namespace: attachments under a policy with a namespace selector that matches its old
//!   or new labels;
//! - a NAD: the attachments to its network;
//! - a MultiNetworkPolicy: the attachments its old or new version may apply to.
use std::collections::{BTreeMap, BTreeSet};

use super::{
    inputs::{AttachmentKey, LocalAttachment, NamespaceView, PodView},
    mnp::{MnpEntry, MnpPeer, MnpRule, PortSpec},
    snapshot::Snapshot,
};

impl Snapshot {
    /// The MultiNetworkPolicies that apply (or, being invalid, may apply) to `local`.
    pub fn applying<'a>(
        &'a self,
        local: &'a LocalAttachment,
    ) -> impl Iterator<Item = &'a MnpEntry> + 'a {
        let pod = self.pods.get(&local.pod);
        self.mnps_in(&local.pod.namespace)
            .filter(move |m| may_apply(m, local, pod))
    }

    pub(super) fn affected_by_pod(
        &self,
        old: Option<&PodView>,
        new: Option<&PodView>,
    ) -> BTreeSet<AttachmentKey> {
        let changed: Vec<&PodView> = old.into_iter().chain(new).collect();
        let Some(first) = changed.first() else {
            return BTreeSet::new();
        };
        if old == new {
            return BTreeSet::new();
        }
        self.select_locals(|local| {
            local.pod == first.key
                || self
                    .applying(local)
                    .any(|m| changed.iter().any(|p| self.may_pick_peer(m, p)))
        })
    }

    pub(super) fn affected_by_namespace(
        &self,
        old: Option<&NamespaceView>,
        new: Option<&NamespaceView>,
    ) -> BTreeSet<AttachmentKey> {
        let Some(name) = old.or(new).map(|n| n.name.as_str()) else {
            return BTreeSet::new();
        };
        let none = BTreeMap::new();
        let old_labels = old.map_or(&none, |n| &n.labels);
        let new_labels = new.map_or(&none, |n| &n.labels);
        if old_labels == new_labels {
            return BTreeSet::new();
        }
        self.select_locals(|local| {
            self.applying(local).any(|m| {
                rules_of(m).any(|(rule, _)| {
                    rule.peers.iter().flatten().any(|peer| match peer {
                        MnpPeer::Pods {
                            namespaces: Some(sel),
                            ..
                        } => {
                            sel.matches_namespace(name, old_labels)
                                || sel.matches_namespace(name, new_labels)
                        }
                        _ => false,
                    })
                })
            })
        })
    }

    pub(super) fn affected_by_mnp(
        &self,
        old: Option<&MnpEntry>,
        new: Option<&MnpEntry>,
    ) -> BTreeSet<AttachmentKey> {
        self.select_locals(|local| {
            let pod = self.pods.get(&local.pod);
            old.into_iter().chain(new).any(|m| may_apply(m, local, pod))
        })
    }

    fn select_locals(&self, pick: impl Fn(&LocalAttachment) -> bool) -> BTreeSet<AttachmentKey> {
        self.locals
            .iter()
            .filter(|(_, l)| pick(l))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether policy `m` can pick `pod` as a peer: the pod is on one of its networks and a
    /// peer selects it, or an egress rule resolves a named port against pods it cannot tell
    /// apart by label (every pod, or pods inside an ipBlock).
    fn may_pick_peer(&self, m: &MnpEntry, pod: &PodView) -> bool {
        let Some(networks) = &m.networks else {
            return false;
        };
        if !pod.networks.iter().any(|n| networks.contains(&n.network)) {
            return false;
        }
        rules_of(m).any(|(rule, egress)| {
            let named = egress
                && rule
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.port, PortSpec::Named(_)));
            match &rule.peers {
                None => named,
                Some(peers) => peers.iter().any(|peer| match peer {
                    MnpPeer::Block(_) => named,
                    MnpPeer::Pods { pods, namespaces } => {
                        pods.matches(&pod.labels)
                            && match namespaces {
                                None => pod.key.namespace == m.key.namespace,
                                Some(sel) => sel.matches_namespace(
                                    &pod.key.namespace,
                                    self.namespace_labels(&pod.key.namespace),
                                ),
                            }
                    }
                }),
            }
        })
    }
}

/// Whether `m` applies or may apply to `local`, whose pod is `pod` (unknown: any pod).
fn may_apply(m: &MnpEntry, local: &LocalAttachment, pod: Option<&PodView>) -> bool {
    match pod {
        Some(pod) => m.may_apply(&local.network, pod),
        None => {
            m.key.namespace == local.pod.namespace
                && m.networks
                    .as_ref()
                    .is_none_or(|n| n.contains(&local.network))
        }
    }
}

/// The rules of a valid policy with their direction (`true`: egress).
fn rules_of(m: &MnpEntry) -> impl Iterator<Item = (&MnpRule, bool)> {
    let rules = m.rules.as_ref().ok();
    let ingress = rules.and_then(|r| r.ingress.as_ref()).into_iter().flatten();
    let egress = rules.and_then(|r| r.egress.as_ref()).into_iter().flatten();
    ingress.map(|r| (r, false)).chain(egress.map(|r| (r, true)))
}
