//! An ADD's side of the enforcer: its new interfaces are registered and their policies
//! compiled before they are attached (and installed with the programs), then the
//! registrations become the attachments' ([`Enforcer::commit`]) or go ([`Enforcer::abort`]).
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use multus_cni::network::SourceError;

use super::{
    Enforcer, Keys, Peers, SYNC_POLL,
    state::{Registered, Slot},
};
use crate::{
    dataplane::{AttachmentRecord, DataplaneError, MacAddr, Policy},
    enforce::interface,
    policy::{
        CompileError, CompiledPolicy, LocalAttachment, ObjectKey, PodView, compile_attachment,
    },
};

/// One interface an ADD made, to register and compile for.
#[derive(Clone, Debug)]
pub struct NewAttachment<'a> {
    /// The runtime's container id.
    pub container: &'a str,
    /// The pod's namespace, name and UID.
    pub pod: (&'a str, &'a str, Option<&'a str>),
    /// The network (`<namespace>/<nad>`).
    pub network: ObjectKey,
    /// The pod's network namespace.
    pub netns: &'a Path,
    /// The interface.
    pub ifname: &'a str,
    /// Its addresses from the CNI result.
    pub ips: Vec<IpAddr>,
    /// Its MAC from the CNI result.
    pub mac: Option<MacAddr>,
}

/// Why an ADD's attachments cannot get their policy.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The snapshot has not been listed yet.
    #[error(
        "policy inputs are not synced yet (pods, namespaces, NADs, MultiNetworkPolicies): try again later"
    )]
    NotSynced,
    /// An interface's addresses could not be read.
    #[error("reading the addresses of {ifname}: {source}")]
    Interface {
        /// The interface.
        ifname: String,
        /// Why.
        #[source]
        source: DataplaneError,
    },
    /// The pod could not be read (its labels select its policies).
    #[error("reading pod {pod} for its policy: {source}")]
    Pod {
        /// The pod.
        pod: ObjectKey,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// An interface without a MAC address (anti-spoofing needs one).
    #[error("{ifname} has no MAC address")]
    NoMac {
        /// The interface.
        ifname: String,
    },
    /// A policy object that applies is invalid (and was never valid).
    #[error("{0}")]
    Compile(#[from] CompileError),
}

/// One attachment of an ADD, registered and compiled, waiting to be attached.
#[derive(Debug)]
struct PreparedEntry {
    ticket: u64,
    netns: PathBuf,
    ifname: String,
    compiled: Option<CompiledPolicy>,
}

/// An ADD's attachments, registered and compiled, waiting to be attached: hand it to
/// [`Enforcer::commit`] with the attachment records, or to [`Enforcer::abort`].
#[derive(Debug)]
#[must_use = "commit or abort it"]
pub struct Prepared {
    entries: Vec<Option<PreparedEntry>>,
}

impl Prepared {
    /// The policy to attach target `i` with (`None`: count only).
    pub fn policy(&self, i: usize) -> Option<&Policy> {
        self.entries
            .get(i)?
            .as_ref()?
            .compiled
            .as_ref()
            .map(|c| &c.policy)
    }

    /// Where target `i`'s policy comes from, when it has one.
    pub fn policy_source(&self, i: usize) -> Option<String> {
        let compiled = self.entries.get(i)?.as_ref()?.compiled.as_ref()?;
        Some(compiled.source.to_string())
    }
}

impl Enforcer {
    fn wait_synced(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let synced = self.synced.subscribe();
        loop {
            if *synced.borrow() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(SYNC_POLL);
        }
    }

    /// Registers an ADD's attachments (`None`: an interface that gets no policy) and compiles
    /// their policies, waiting up to `wait` for the first sync. Blocking (reads the
    /// interfaces, may read a pod from the API).
    pub fn prepare(
        &self,
        new: &[Option<NewAttachment<'_>>],
        wait: Duration,
    ) -> Result<Prepared, PrepareError> {
        if new.iter().all(Option::is_none) {
            return Ok(Prepared {
                entries: new.iter().map(|_| None).collect(),
            });
        }
        if !self.wait_synced(wait) {
            return Err(PrepareError::NotSynced);
        }
        let mut regs = Vec::with_capacity(new.len());
        for n in new {
            regs.push(n.as_ref().map(read_attachment).transpose()?);
        }
        let views = self.look_up_pods(&regs, new)?;
        let mut st = self.lock();
        let mut affected = Keys::new();
        for view in views {
            if st.snapshot.pod(&view.key).is_none() {
                affected.extend(st.snapshot.upsert_pod(view).affected);
            }
        }
        let mut entries = Vec::with_capacity(regs.len());
        let mut tickets = Vec::new();
        for (reg, n) in regs.into_iter().zip(new) {
            let (Some(reg), Some(n)) = (reg, n) else {
                entries.push(None);
                continue;
            };
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            tickets.push(ticket);
            affected.extend(self.register(&mut st, Slot::Pending(ticket), reg));
            entries.push(Some(PreparedEntry {
                ticket,
                netns: n.netns.to_owned(),
                ifname: n.ifname.to_owned(),
                compiled: None,
            }));
        }
        for entry in entries.iter_mut().flatten() {
            let slot = Slot::Pending(entry.ticket);
            let Some(reg) = st.registered.get(&slot) else {
                continue;
            };
            match compile_attachment(&st.snapshot, &reg.local) {
                Ok(compiled) => {
                    entry.compiled.clone_from(&compiled);
                    if let Some(reg) = st.registered.get_mut(&slot) {
                        reg.installed = Some(compiled);
                    }
                }
                Err(e) => {
                    for ticket in tickets {
                        affected.extend(self.unregister(&mut st, Slot::Pending(ticket)));
                    }
                    self.recompile(&mut st, &affected);
                    return Err(e.into());
                }
            }
        }
        // Peers of the new pod (standalone: its addresses are known only from here on).
        for entry in entries.iter().flatten() {
            if let Some(reg) = st.registered.get(&Slot::Pending(entry.ticket)) {
                affected.remove(&reg.local.key());
            }
        }
        self.recompile(&mut st, &affected);
        Ok(Prepared { entries })
    }

    /// Pods of `regs` the snapshot lacks, looked up (Kubernetes mode) without the lock held;
    /// a pod that does not exist gets an empty view (no labels, no ports).
    fn look_up_pods(
        &self,
        regs: &[Option<Registered>],
        new: &[Option<NewAttachment<'_>>],
    ) -> Result<Vec<PodView>, PrepareError> {
        if self.peers != Peers::NetworkStatus {
            return Ok(Vec::new());
        }
        let missing: BTreeMap<ObjectKey, Option<&str>> = {
            let st = self.lock();
            regs.iter()
                .zip(new)
                .filter_map(|(r, n)| Some((r.as_ref()?.local.pod.clone(), n.as_ref()?.pod.2)))
                .filter(|(p, _)| st.snapshot.pod(p).is_none())
                .collect()
        };
        let mut views = Vec::with_capacity(missing.len());
        for (key, uid) in missing {
            let found = match &self.pods {
                Some(lookup) => lookup
                    .pod(&key.namespace, &key.name, uid)
                    .map_err(|source| PrepareError::Pod {
                        pod: key.clone(),
                        source,
                    })?,
                None => None,
            };
            views.push(found.unwrap_or_else(|| PodView {
                key: key.clone(),
                ..PodView::default()
            }));
        }
        Ok(views)
    }

    /// The ADD attached its interfaces (`records`): the registrations are now those
    /// attachments'. A change that arrived meanwhile is applied now.
    pub fn commit(&self, prepared: Prepared, records: &[AttachmentRecord]) {
        let mut st = self.lock();
        let mut affected = Keys::new();
        for entry in prepared.entries.into_iter().flatten() {
            let Some(reg) = st.registered.remove(&Slot::Pending(entry.ticket)) else {
                continue;
            };
            let record = records
                .iter()
                .find(|r| r.netns == entry.netns && r.ifname == entry.ifname);
            let Some(record) = record else {
                // Not attached after all: forget it.
                st.registered.insert(Slot::Pending(entry.ticket), reg);
                affected.extend(self.unregister(&mut st, Slot::Pending(entry.ticket)));
                continue;
            };
            let slot = Slot::Attached(record.id);
            if st.registered.contains_key(&slot) {
                affected.extend(self.unregister(&mut st, slot));
            }
            let stale = reg.stale;
            st.registered.insert(
                slot,
                Registered {
                    stale: false,
                    ..reg
                },
            );
            if stale && !self.recompile_slot(&mut st, slot) {
                affected.extend(self.unregister(&mut st, slot));
            }
        }
        self.recompile(&mut st, &affected);
    }

    /// The ADD failed: its registrations go.
    pub fn abort(&self, prepared: Prepared) {
        let mut st = self.lock();
        let mut affected = Keys::new();
        for entry in prepared.entries.into_iter().flatten() {
            affected.extend(self.unregister(&mut st, Slot::Pending(entry.ticket)));
        }
        self.recompile(&mut st, &affected);
    }
}

/// A new attachment's registration: its addresses and MAC as the interface has them (the
/// IPv6 link-local address included), plus the CNI result's.
fn read_attachment(n: &NewAttachment<'_>) -> Result<Registered, PrepareError> {
    let addrs = interface::read(n.netns, n.ifname).map_err(|source| PrepareError::Interface {
        ifname: n.ifname.to_owned(),
        source,
    })?;
    let mut ips = n.ips.clone();
    ips.extend(addrs.ips);
    ips.sort();
    ips.dedup();
    let Some(mac) = addrs.mac.or(n.mac) else {
        return Err(PrepareError::NoMac {
            ifname: n.ifname.to_owned(),
        });
    };
    let (namespace, name, _) = n.pod;
    Ok(Registered {
        local: LocalAttachment {
            pod: ObjectKey::new(namespace, name),
            interface: n.ifname.to_owned(),
            network: n.network.clone(),
            ips,
            mac,
        },
        container: n.container.to_owned(),
        status_ips: n.ips.clone(),
        installed: None,
        stale: false,
        last_error: None,
    })
}
