//! The agent's view of the dataplane: the loaded [`Dataplane`] behind a lock, plus an index of
//! the attachment records in memory (the records on disk are read once, at start), so scrapes
//! and DEL lookups never list the record directory.
//!
//! Attach and detach take the write lock; scrapes and status reads share the read lock.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Instant,
};

use tracing::{info, warn};

use crate::{
    dataplane::{
        AttachMode, AttachRequest, AttachmentRecord, Dataplane, DataplaneError, InterfaceCounters,
        Policy,
    },
    metrics::AgentMetrics,
};

struct State {
    dataplane: Dataplane,
    records: BTreeMap<u32, AttachmentRecord>,
}

/// The dataplane and its attachments.
pub struct Attachments {
    state: RwLock<State>,
    metrics: AgentMetrics,
    mode: AttachMode,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Attachments {
    /// Wraps a loaded dataplane and reads its records.
    pub fn new(dataplane: Dataplane, metrics: AgentMetrics) -> Result<Self, DataplaneError> {
        let records = dataplane
            .attachments()?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let mode = dataplane.mode();
        Ok(Self {
            state: RwLock::new(State { dataplane, records }),
            metrics,
            mode,
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state stays consistent across a panic (each operation is all-or-nothing on disk).
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attach mode of new attachments.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Attaches every target, or none: on a failure the dataplane detaches what the call
    /// attached and the error is returned. The targets are attached concurrently (see
    /// [`Dataplane::attach_many`]).
    pub fn attach_all(
        &self,
        requests: &[AttachRequest<'_>],
    ) -> Result<Vec<AttachmentRecord>, String> {
        let mut state = self.write();
        let started = Instant::now();
        match state.dataplane.attach_many(requests) {
            Ok(records) => {
                self.metrics.attach_took(started.elapsed());
                for record in &records {
                    self.metrics.attach_op("attach", true);
                    state.records.insert(record.id, record.clone());
                }
                Ok(records)
            }
            Err(e) => {
                self.metrics.attach_op("attach", false);
                let names: Vec<String> = requests
                    .iter()
                    .map(|t| format!("{} in {}", t.ifname, t.netns.display()))
                    .collect();
                Err(format!(
                    "attaching the dataplane to {}: {e}",
                    names.join(", ")
                ))
            }
        }
    }

    fn detach_locked(&self, state: &mut State, id: u32) -> Result<(), DataplaneError> {
        let result = match state.dataplane.detach(id) {
            Err(DataplaneError::UnknownAttachment(_)) => Ok(()),
            other => other,
        };
        self.metrics.attach_op("detach", result.is_ok());
        if result.is_ok() {
            state.records.remove(&id);
        }
        result
    }

    /// Detaches every attachment `select` picks (looked at under the lock, so a record that
    /// changed meanwhile is judged as it is now). Returns the detached ids and the failures.
    pub fn detach_where(
        &self,
        select: impl Fn(&AttachmentRecord) -> bool,
    ) -> (Vec<u32>, Vec<DataplaneError>) {
        let mut state = self.write();
        let ids: Vec<u32> = state
            .records
            .values()
            .filter(|r| select(r))
            .map(|r| r.id)
            .collect();
        let mut detached = Vec::new();
        let mut errors = Vec::new();
        for id in ids {
            match self.detach_locked(&mut state, id) {
                Ok(()) => detached.push(id),
                Err(e) => errors.push(e),
            }
        }
        (detached, errors)
    }

    /// Detaches every attachment of the given containers.
    pub fn detach_containers(&self, containers: &BTreeSet<&str>) -> Result<Vec<u32>, String> {
        let (ids, errors) = self.detach_where(|r| {
            !r.owner.container_id.is_empty() && containers.contains(r.owner.container_id.as_str())
        });
        if !ids.is_empty() {
            info!(?containers, ?ids, "detached");
        }
        if errors.is_empty() {
            Ok(ids)
        } else {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            warn!(?containers, "detaching failed: {}", text.join("; "));
            Err(text.join("; "))
        }
    }

    /// Installs `policy` on attachment `id` in place (`None`: removes it; the attachment then
    /// only counts), recording `source` (where it comes from) with it.
    pub fn set_policy(
        &self,
        id: u32,
        policy: Option<&Policy>,
        source: Option<&str>,
    ) -> Result<(), DataplaneError> {
        let mut state = self.write();
        let record = match policy {
            Some(policy) => state.dataplane.set_policy_from(id, policy, source)?,
            None => {
                state.dataplane.clear_policy(id)?;
                state.dataplane.attachment(id)?
            }
        };
        state.records.insert(id, record);
        Ok(())
    }

    /// The container id of every attachment, by id.
    pub fn owners(&self) -> BTreeMap<u32, String> {
        self.read()
            .records
            .iter()
            .map(|(id, r)| (*id, r.owner.container_id.clone()))
            .collect()
    }

    /// Whether `record`'s interface and links still stand (see [`Dataplane::is_alive`]).
    pub fn is_alive(&self, record: &AttachmentRecord) -> Result<bool, DataplaneError> {
        self.read().dataplane.is_alive(record)
    }

    /// Every attachment record.
    pub fn records(&self) -> Vec<AttachmentRecord> {
        self.read().records.values().cloned().collect()
    }

    /// The number of attachments.
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every attachment and its counters, read now from the pinned maps, and
    /// the number of attachments, all under one read lock: the records are lent, not copied
    /// per scrape. Attachments whose counters cannot be read are left out (a partial value
    /// would look like a reset) and counted as errors.
    pub fn with_counters<R>(
        &self,
        f: impl FnOnce(&[(&AttachmentRecord, InterfaceCounters)], usize) -> R,
    ) -> R {
        let state = self.read();
        let mut rows = Vec::with_capacity(state.records.len());
        for record in state.records.values() {
            match state.dataplane.counters(record.id) {
                Ok(c) => rows.push((record, c)),
                Err(e) => {
                    self.metrics.error("counters");
                    warn!(id = record.id, "reading counters: {e}");
                }
            }
        }
        f(&rows, state.records.len())
    }
}
