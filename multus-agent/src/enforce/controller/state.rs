//! The node's attachments as the enforcer registers them: by attachment id once attached,
//! by a ticket while an ADD attaches them; each is a local attachment of the snapshot. In
//! standalone mode a pod's view in the snapshot is made of its file and these registrations.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use tracing::{debug, info, warn};

use super::{Enforcer, Keys, Peers};
use crate::{
    changes::Kind,
    dataplane::AttachmentRecord,
    enforce::interface,
    policy::{
        CompiledPolicy, LocalAttachment, ObjectKey, PodNetwork, PodView, PolicySource, Snapshot,
    },
};

/// Where a registered attachment is: being attached by an ADD, or attached under an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Slot {
    Pending(u64),
    Attached(u32),
}

#[derive(Clone, Debug)]
pub(super) struct Registered {
    pub(super) local: LocalAttachment,
    pub(super) container: String,
    /// The addresses network-status lists (peers see these in standalone mode).
    pub(super) status_ips: Vec<IpAddr>,
    /// What is in force (`Some(None)`: no policy); `None` when unknown (set by hand).
    pub(super) installed: Option<Option<CompiledPolicy>>,
    /// Pending only: a change affected it after its policy was compiled.
    pub(super) stale: bool,
    /// The last compile problem logged, so it is logged once.
    pub(super) last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) listed: bool,
    pub(super) relisting: Option<BTreeSet<String>>,
    pub(super) known: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) snapshot: Snapshot,
    pub(super) listings: BTreeMap<Kind, Listing>,
    pub(super) registered: BTreeMap<Slot, Registered>,
    pub(super) next_ticket: u64,
    /// Problems reported, by object: reported again only when the message changes.
    pub(super) problems: BTreeMap<(Kind, ObjectKey), String>,
    /// Standalone: the pods as the files give them (the snapshot adds their attachments).
    pub(super) pod_files: BTreeMap<ObjectKey, PodView>,
    pub(super) synced: bool,
}

impl State {
    pub(super) fn has_local(&self, pod: &ObjectKey) -> bool {
        self.registered.values().any(|r| &r.local.pod == pod)
    }
}

impl Enforcer {
    /// Registers the attachments the dataplane already has (at start: pinned by a previous
    /// agent) with the policy they enforce. Attachments without an owning pod and network are
    /// not the agent's to police. Nothing is recompiled before the first sync.
    pub fn adopt(&self, records: &[AttachmentRecord]) {
        let mut st = self.lock();
        for r in records {
            let Some(network) = ObjectKey::parse(&r.owner.network) else {
                continue;
            };
            if r.owner.pod.is_empty() {
                continue;
            }
            let addrs = match interface::read(&r.netns, &r.ifname) {
                Ok(a) => a,
                Err(e) => {
                    warn!(
                        id = r.id,
                        "not re-registering an attachment for policy: {e}"
                    );
                    continue;
                }
            };
            let spoof_mac = r
                .policy
                .as_ref()
                .and_then(|p| p.anti_spoof.as_ref())
                .map(|a| a.mac);
            let Some(mac) = addrs.mac.or(spoof_mac) else {
                warn!(id = r.id, ifname = %r.ifname, "not re-registering: the interface has no MAC");
                continue;
            };
            let installed = match (&r.policy, &r.policy_source) {
                (None, _) => Some(None),
                (Some(policy), Some(source)) => source.parse::<PolicySource>().ok().map(|source| {
                    Some(CompiledPolicy {
                        policy: policy.clone(),
                        source,
                    })
                }),
                // Set by hand: replaced by the compiled one at the first sync.
                (Some(_), None) => None,
            };
            let status_ips = addrs
                .ips
                .iter()
                .copied()
                .filter(|ip| !link_local(*ip))
                .collect();
            let local = LocalAttachment {
                pod: ObjectKey::new(&r.owner.namespace, &r.owner.pod),
                interface: r.ifname.clone(),
                network,
                ips: addrs.ips,
                mac,
            };
            let reg = Registered {
                local,
                container: r.owner.container_id.clone(),
                status_ips,
                installed,
                stale: false,
                last_error: None,
            };
            self.register(&mut st, Slot::Attached(r.id), reg);
        }
        info!(
            attachments = st.registered.len(),
            "attachments registered for policy"
        );
    }

    pub(super) fn register(&self, st: &mut State, slot: Slot, reg: Registered) -> Keys {
        let pod = reg.local.pod.clone();
        st.snapshot.add_local(reg.local.clone());
        if let Some(old) = st.registered.insert(slot, reg) {
            // An id reused before its old owner was pruned.
            debug!(?slot, attachment = %old.local.key(), "registration replaced");
        }
        match self.peers {
            Peers::LocalAttachments => refresh_local_pod(st, &pod),
            Peers::NetworkStatus => Keys::new(),
        }
    }

    pub(super) fn unregister(&self, st: &mut State, slot: Slot) -> Keys {
        let Some(reg) = st.registered.remove(&slot) else {
            return Keys::new();
        };
        let key = reg.local.key();
        match st.registered.values().find(|r| r.local.key() == key) {
            // Another sandbox of the pod (an ADD before the old one's DEL) keeps the key.
            Some(other) => {
                let other = other.local.clone();
                st.snapshot.add_local(other);
            }
            None => {
                st.snapshot.remove_local(&key);
            }
        }
        let pod = &reg.local.pod;
        match self.peers {
            Peers::LocalAttachments => refresh_local_pod(st, pod),
            Peers::NetworkStatus => {
                let unused = !st.has_local(pod)
                    && st.snapshot.pod(pod).is_some_and(|v| v.networks.is_empty());
                if unused {
                    st.snapshot.remove_pod(pod).affected
                } else {
                    Keys::new()
                }
            }
        }
    }

    /// Forgets the attachments of `containers` (DEL).
    pub fn forget_containers(&self, containers: &BTreeSet<&str>) {
        let mut st = self.lock();
        let slots: Vec<Slot> = st
            .registered
            .iter()
            .filter(|(slot, r)| {
                matches!(slot, Slot::Attached(_)) && containers.contains(r.container.as_str())
            })
            .map(|(slot, _)| *slot)
            .collect();
        let mut affected = Keys::new();
        for slot in slots {
            affected.extend(self.unregister(&mut st, slot));
        }
        self.recompile(&mut st, &affected);
    }
}

/// Standalone: a pod's view is its file's (if any) plus its attachments on this node.
pub(super) fn local_pod_view(st: &State, pod: &ObjectKey) -> Option<PodView> {
    let mut nets: Vec<PodNetwork> = st
        .registered
        .values()
        .filter(|r| &r.local.pod == pod)
        .map(|r| PodNetwork {
            network: r.local.network.clone(),
            interface: r.local.interface.clone(),
            ips: r.status_ips.clone(),
        })
        .collect();
    let file = st.pod_files.get(pod);
    if file.is_none() && nets.is_empty() {
        return None;
    }
    let mut view = file.cloned().unwrap_or_else(|| PodView {
        key: pod.clone(),
        ..PodView::default()
    });
    view.networks
        .retain(|n| !nets.iter().any(|m| m.interface == n.interface));
    view.networks.append(&mut nets);
    view.networks.sort_by(|a, b| {
        (&a.interface, &a.network, &a.ips).cmp(&(&b.interface, &b.network, &b.ips))
    });
    view.networks.dedup();
    Some(view)
}

pub(super) fn refresh_local_pod(st: &mut State, pod: &ObjectKey) -> Keys {
    match local_pod_view(st, pod) {
        Some(view) => st.snapshot.upsert_pod(view).affected,
        None => st.snapshot.remove_pod(pod).affected,
    }
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}
