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
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::report::{Problem, ProblemReporter};
use crate::{
    attachments::Attachments,
    changes::{Change, Kind, MnpObject, NadObject, PodLookup},
    dataplane::DataplaneError,
    metrics::AgentMetrics,
    policy::{
        AttachmentKey, CompileError, CompiledPolicy, NadEntry, ObjectKey, PodView,
        compile_attachment,
    },
};

mod add;
mod state;

pub use self::add::{NewAttachment, PrepareError, Prepared};
use self::state::{Registered, Slot, State, refresh_local_pod};

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

/// The API version of NADs (Events name it).
const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
