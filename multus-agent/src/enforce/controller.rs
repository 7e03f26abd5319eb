//! The [`Enforcer`]: the compiler's snapshot kept current from [`Change`]s, the node's
//! attachments registered in it, and each attachment's compiled policy installed in the
//! dataplane, recompiling only what a change affects and skipping updates that change nothing.
//!
//! Rules that keep enforcement safe:
//! - An invalid NAD annotation or MultiNetworkPolicy never replaces the last valid version of
//!   the object: every attachment, new ones included, keeps enforcing that. The problem is
//!   logged, counted and reported (an Event) once per distinct problem. An object that was
//!   never valid stays in the snapshot as invalid: attachments it may apply to keep the policy
//!   they have, and a new attachment it may apply to fails its ADD (the error names it).
//! - Nothing is recompiled before every kind has been listed once (a partial snapshot would
//!   compile policies that allow too much); then every attachment is recompiled, so what
//!   changed while the agent was down is caught up.
//! - An ADD compiles its attachments' policies before they are attached (they are installed
//!   with the programs); a change that affects them while they are being attached is applied
//!   right after.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{
    change::{Change, Kind, MnpObject, NadObject},
    interface,
    report::{Problem, ProblemReporter},
};
use multus_cni::network::SourceError;

use crate::{
    attachments::Attachments,
    dataplane::{AttachmentRecord, DataplaneError, MacAddr, Policy},
    metrics::AgentMetrics,
    policy::{
        AttachmentKey, CompileError, CompiledPolicy, LocalAttachment, NadEntry, ObjectKey,
        PodNetwork, PodView, PolicySource, Snapshot, compile_attachment,
    },
};

/// After a change, further changes are waited for this long before recompiling (bursts are
/// handled as one).
const SETTLE: Duration = Duration::from_millis(20);
/// A burst is cut after this long: updates never wait longer for quiet.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(200);
/// At most this many changes per batch (bounds the memory a burst takes).
const MAX_BATCH: usize = 2048;
/// ADD waits in steps of this long for the first listing of every kind.
const SYNC_POLL: Duration = Duration::from_millis(20);

/// Where peer pods' addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peers {
    /// Their network-status annotations (Kubernetes mode). Pods with no secondary interface
    /// are kept only while they have an attachment on this node, so memory follows the
    /// cluster's multi-homed pods.
    NetworkStatus,
    /// This node's own attachments (standalone mode: no network-status is written anywhere),
    /// added to the pods the local files describe.
    LocalAttachments,
}

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

/// Where a registered attachment is: being attached by an ADD, or attached under an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Pending(u64),
    Attached(u32),
}

#[derive(Clone, Debug)]
struct Registered {
    local: LocalAttachment,
    container: String,
    /// The addresses network-status lists (peers see these in standalone mode).
    status_ips: Vec<IpAddr>,
    /// What is in force (`Some(None)`: no policy); `None` when unknown (set by hand).
    installed: Option<Option<CompiledPolicy>>,
    /// Pending only: a change affected it after its policy was compiled.
    stale: bool,
    /// The last compile problem logged, so it is logged once.
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Listing {
    listed: bool,
    relisting: Option<BTreeSet<String>>,
    known: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Snapshot,
    listings: BTreeMap<Kind, Listing>,
    registered: BTreeMap<Slot, Registered>,
    next_ticket: u64,
    /// Problems reported, by object: reported again only when the message changes.
    problems: BTreeMap<(Kind, ObjectKey), String>,
    /// Standalone: the pods as the files give them (the snapshot adds their attachments).
    pod_files: BTreeMap<ObjectKey, PodView>,
    synced: bool,
}

impl State {
    fn has_local(&self, pod: &ObjectKey) -> bool {
        self.registered.values().any(|r| &r.local.pod == pod)
    }
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
}

/// Keeps every attachment's policy current.
pub struct Enforcer {
    state: Mutex<State>,
    attachments: Arc<Attachments>,
    metrics: AgentMetrics,
    peers: Peers,
    reporter: Option<Arc<dyn ProblemReporter>>,
    pods: Option<Arc<dyn PodLookup>>,
    synced: watch::Sender<bool>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

type Keys = BTreeSet<AttachmentKey>;

impl Enforcer {
    /// An enforcer over `attachments`. It is synced once every kind has been listed (a
    /// [`Change::Listed`] of each). `reporter` gets invalid objects (besides the log and the
    /// metric); `pods` finds an ADD's pod the snapshot does not hold yet.
    pub fn new(
        attachments: Arc<Attachments>,
        metrics: AgentMetrics,
        peers: Peers,
        reporter: Option<Arc<dyn ProblemReporter>>,
        pods: Option<Arc<dyn PodLookup>>,
    ) -> Self {
        Self {
            state: Mutex::default(),
            attachments,
            metrics,
            peers,
            reporter,
            pods,
            synced: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `true` once every kind has been listed.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

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

    /// Applies changes as they come, a burst at a time, until the sender is gone.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Change>) {
        while let Some(first) = rx.recv().await {
            let started = Instant::now();
            let deadline = started + MAX_BATCH_WAIT;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                if let Ok(change) = rx.try_recv() {
                    batch.push(change);
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match tokio::time::timeout(SETTLE.min(left), rx.recv()).await {
                    Ok(Some(change)) => batch.push(change),
                    Ok(None) | Err(_) => break,
                }
            }
            let me = Arc::clone(&self);
            if let Err(e) = tokio::task::spawn_blocking(move || me.apply(batch, started)).await {
                self.metrics.error("policy");
                warn!("applying policy changes failed: {e}");
            }
        }
    }

    /// Applies a batch of changes and installs the policies that changed. `started`: when the
    /// first change was seen.
    pub fn apply(&self, batch: Vec<Change>, started: Instant) {
        self.prune();
        let mut st = self.lock();
        let mut affected = Keys::new();
        for change in batch {
            affected.extend(self.apply_one(&mut st, change));
        }
        let first_sync = !st.synced;
        if first_sync {
            let all_listed = Kind::ALL
                .iter()
                .all(|k| st.listings.get(k).is_some_and(|l| l.listed));
            if !all_listed {
                return;
            }
            st.synced = true;
            affected = st.registered.values().map(|r| r.local.key()).collect();
        }
        let count = affected.len();
        self.recompile(&mut st, &affected);
        drop(st);
        if first_sync {
            info!(
                attachments = count,
                "policy inputs synced; every attachment compiled"
            );
            self.synced.send_replace(true);
        }
        if count > 0 {
            self.metrics.policy_synced_in(started.elapsed());
        }
    }

    fn apply_one(&self, st: &mut State, change: Change) -> Keys {
        if let Some((kind, name)) = change.object() {
            let present = matches!(
                &change,
                Change::Pod(_, Some(_))
                    | Change::Namespace(_, Some(_))
                    | Change::Nad(_, Some(_))
                    | Change::Mnp(_, Some(_))
            );
            let listing = st.listings.entry(kind).or_default();
            if present {
                if let Some(seen) = &mut listing.relisting {
                    seen.insert(name.clone());
                }
                listing.known.insert(name);
            } else {
                listing.known.remove(&name);
            }
        }
        match change {
            Change::Pod(key, view) => self.pod_changed(st, &key, view),
            Change::Namespace(_, Some(view)) => st.snapshot.upsert_namespace(view).affected,
            Change::Namespace(name, None) => st.snapshot.remove_namespace(&name).affected,
            Change::Nad(key, Some(obj)) => self.nad_changed(st, &key, obj),
            Change::Nad(key, None) => {
                st.problems.remove(&(Kind::Nad, key.clone()));
                st.snapshot.remove_nad(&key).affected
            }
            Change::Mnp(key, Some(obj)) => self.mnp_changed(st, &key, obj),
            Change::Mnp(key, None) => {
                st.problems.remove(&(Kind::Mnp, key.clone()));
                st.snapshot.remove_mnp(&key).affected
            }
            Change::Relist(kind) => {
                st.listings.entry(kind).or_default().relisting = Some(BTreeSet::new());
                Keys::new()
            }
            Change::Listed(kind) => {
                let listing = st.listings.entry(kind).or_default();
                listing.listed = true;
                let gone: Vec<String> = match listing.relisting.take() {
                    Some(seen) => listing.known.difference(&seen).cloned().collect(),
                    None => Vec::new(),
                };
                let mut affected = Keys::new();
                for name in gone {
                    if let Some(change) = removal(kind, name) {
                        affected.extend(self.apply_one(st, change));
                    }
                }
                affected
            }
        }
    }

    fn pod_changed(&self, st: &mut State, key: &ObjectKey, view: Option<PodView>) -> Keys {
        match self.peers {
            Peers::LocalAttachments => {
                match view {
                    Some(view) => st.pod_files.insert(key.clone(), view),
                    None => st.pod_files.remove(key),
                };
                refresh_local_pod(st, key)
            }
            Peers::NetworkStatus => match view {
                Some(view) if !view.networks.is_empty() || st.has_local(key) => {
                    st.snapshot.upsert_pod(view).affected
                }
                _ if st.snapshot.pod(key).is_some() => st.snapshot.remove_pod(key).affected,
                _ => Keys::new(),
            },
        }
    }

    fn nad_changed(&self, st: &mut State, key: &ObjectKey, obj: NadObject) -> Keys {
        let entry = NadEntry::parse(obj.view);
        let problem = entry.error().map(|error| Problem {
            kind: Kind::Nad,
            key: key.clone(),
            uid: obj.uid,
            resource_version: obj.resource_version,
            api_version: NAD_API_VERSION.to_owned(),
            message: error.to_string(),
        });
        let previous_valid = st.snapshot.nad(key).is_some_and(|o| o.error().is_none());
        if self.keep_previous(st, Kind::Nad, key, problem, previous_valid) {
            return Keys::new();
        }
        st.snapshot.upsert_nad_entry(entry).affected
    }

    fn mnp_changed(&self, st: &mut State, key: &ObjectKey, obj: MnpObject) -> Keys {
        let problem = obj.entry.error().map(|error| Problem {
            kind: Kind::Mnp,
            key: key.clone(),
            uid: obj.uid,
            resource_version: obj.resource_version,
            api_version: obj.api_version,
            message: error.to_string(),
        });
        let previous_valid = st.snapshot.mnp(key).is_some_and(|o| o.error().is_none());
        if self.keep_previous(st, Kind::Mnp, key, problem, previous_valid) {
            return Keys::new();
        }
        st.snapshot.upsert_mnp_entry(obj.entry).affected
    }

    /// Reports the new version's problem (or forgets the object's last one) and tells whether
    /// the snapshot keeps the previous version: the new one is invalid and the previous one
    /// valid, so it stays in force.
    fn keep_previous(
        &self,
        st: &mut State,
        kind: Kind,
        key: &ObjectKey,
        problem: Option<Problem>,
        previous_valid: bool,
    ) -> bool {
        match problem {
            Some(problem) => {
                self.report(st, problem);
                previous_valid
            }
            None => {
                st.problems.remove(&(kind, key.clone()));
                false
            }
        }
    }

    /// Logs, counts and reports a problem, once per distinct message of an object.
    fn report(&self, st: &mut State, problem: Problem) {
        let slot = (problem.kind, problem.key.clone());
        if st.problems.get(&slot) == Some(&problem.message) {
            return;
        }
        st.problems.insert(slot, problem.message.clone());
        self.metrics.policy_error(problem.kind.name());
        warn!(
            object = %problem.key,
            kind = problem.kind_name(),
            resource_version = problem.resource_version.as_deref().unwrap_or("-"),
            "invalid policy; the last valid version stays in force: {}",
            problem.message
        );
        if let Some(reporter) = &self.reporter {
            reporter.report(problem);
        }
    }

    fn register(&self, st: &mut State, slot: Slot, reg: Registered) -> Keys {
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

    fn unregister(&self, st: &mut State, slot: Slot) -> Keys {
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

    fn recompile(&self, st: &mut State, keys: &Keys) {
        if keys.is_empty() {
            return;
        }
        let slots: Vec<Slot> = st
            .registered
            .iter()
            .filter(|(_, r)| keys.contains(&r.local.key()))
            .map(|(slot, _)| *slot)
            .collect();
        let mut gone = Vec::new();
        for slot in slots {
            if !self.recompile_slot(st, slot) {
                gone.push(slot);
            }
        }
        let mut affected = Keys::new();
        for slot in gone {
            affected.extend(self.unregister(st, slot));
        }
        self.recompile(st, &affected);
    }

    /// Recompiles one registration and installs the result when it changed. Returns `false`
    /// when the attachment turned out to be gone.
    fn recompile_slot(&self, st: &mut State, slot: Slot) -> bool {
        let State {
            snapshot,
            registered,
            ..
        } = st;
        let Some(reg) = registered.get_mut(&slot) else {
            return true;
        };
        match compile_attachment(snapshot, &reg.local) {
            Ok(new) => {
                reg.last_error = None;
                if reg.installed.as_ref() == Some(&new) {
                    return true;
                }
                match slot {
                    Slot::Pending(_) => {
                        reg.stale = true;
                        true
                    }
                    Slot::Attached(id) => self.install(id, reg, new),
                }
            }
            Err(CompileError::UnknownPod { attachment }) => {
                // The pod was deleted; its DEL is on the way.
                debug!(%attachment, "pod not in the snapshot; policy left as it is");
                true
            }
            Err(e) => {
                reg.stale = true;
                let message = e.to_string();
                if reg.last_error.as_ref() != Some(&message) {
                    self.metrics.policy_error("compile");
                    warn!("keeping the policy in force: {message}");
                    reg.last_error = Some(message);
                }
                true
            }
        }
    }

    /// Installs `new` on attachment `id`. Returns `false` when the attachment is gone.
    fn install(&self, id: u32, reg: &mut Registered, new: Option<CompiledPolicy>) -> bool {
        let operation = if new.is_some() { "set" } else { "clear" };
        let source = new.as_ref().map(|c| c.source.to_string());
        let policy = new.as_ref().map(|c| &c.policy);
        match self.attachments.set_policy(id, policy, source.as_deref()) {
            Ok(()) => {
                self.metrics.policy_update(operation, true);
                info!(
                    id,
                    attachment = %reg.local.key(),
                    source = source.as_deref().unwrap_or("-"),
                    "policy {operation}"
                );
                reg.installed = Some(new);
                true
            }
            Err(DataplaneError::UnknownAttachment(_)) => false,
            Err(e) => {
                self.metrics.policy_update(operation, false);
                self.metrics.policy_error("install");
                warn!(id, attachment = %reg.local.key(), "installing the policy failed; the previous one stays: {e}");
                true
            }
        }
    }

    /// Forgets registrations whose attachment was detached behind the enforcer's back (DEL
    /// fallback, GC, reconcile) or whose id now belongs to another container.
    pub fn prune(&self) {
        let owners = self.attachments.owners();
        let mut st = self.lock();
        let gone: Vec<Slot> = st
            .registered
            .iter()
            .filter(|(slot, r)| match slot {
                Slot::Attached(id) => owners.get(id) != Some(&r.container),
                Slot::Pending(_) => false,
            })
            .map(|(slot, _)| *slot)
            .collect();
        let mut affected = Keys::new();
        for slot in gone {
            affected.extend(self.unregister(&mut st, slot));
        }
        self.recompile(&mut st, &affected);
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
            if let Some(Some(compiled)) = &reg.installed {
                let source = compiled.source.to_string();
                if let Err(e) = self.attachments.set_policy_source(record.id, Some(&source)) {
                    warn!(id = record.id, "recording the policy's source: {e}");
                }
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

/// The API version of NADs (Events name it).
const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";

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

/// The removal of an object a listing no longer has.
fn removal(kind: Kind, name: String) -> Option<Change> {
    Some(match kind {
        Kind::Namespace => Change::Namespace(name, None),
        Kind::Pod => Change::Pod(ObjectKey::parse(&name)?, None),
        Kind::Nad => Change::Nad(ObjectKey::parse(&name)?, None),
        Kind::Mnp => Change::Mnp(ObjectKey::parse(&name)?, None),
    })
}

/// Standalone: a pod's view is its file's (if any) plus its attachments on this node.
fn local_pod_view(st: &State, pod: &ObjectKey) -> Option<PodView> {
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

fn refresh_local_pod(st: &mut State, pod: &ObjectKey) -> Keys {
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
