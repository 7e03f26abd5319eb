//! Installing, replacing and removing an attachment's policy, and the flows it allowed.
//!
//! Every installation builds a fresh policy trie and swaps it into the attachment's slot of the
//! array of maps with one update: a packet sees the old policy or the new one, never a mix, and
//! the kernel frees the old trie once no running program can hold it. The trie's map id is the
//! policy's generation: flows recorded under an older policy are checked against the new one.
use std::{io, os::fd::AsFd as _};

use aya::maps::{ArrayOfMaps, IterableMap as _, LpmTrie, Map, MapData, lpm_trie::Key};
use multus_common::{MAX_POLICY_ENTRIES, PolicyKey, PolicyValue, maps};

use super::{
    Dataplane,
    error::{DataplaneError, Result},
    map_err,
    record::AttachmentRecord,
    sys,
    trie::{self, TrieEntries},
};
use crate::policy::model::Policy;

/// LPM tries must be created without preallocation.
const BPF_F_NO_PREALLOC: u32 = 1;

type PolicyTrie = LpmTrie<MapData, PolicyKey, PolicyValue>;

impl Dataplane {
    /// Replaces attachment `id`'s policy in place, without reloading or re-attaching anything.
    /// An invalid policy changes nothing.
    pub fn set_policy(&mut self, id: u32, policy: &Policy) -> Result<()> {
        self.set_policy_from(id, policy, None).map(drop)
    }

    /// [`Dataplane::set_policy`], recording where the policy comes from (`source`, free text
    /// kept in the record for status and metrics). Returns the updated record.
    pub fn set_policy_from(
        &mut self,
        id: u32,
        policy: &Policy,
        source: Option<&str>,
    ) -> Result<AttachmentRecord> {
        let mut record = self.attachment(id)?;
        let compiled = trie::build(policy).map_err(DataplaneError::Policy)?;
        self.install_policy(id, compiled)?;
        record.policy = Some(policy.clone());
        record.policy_source = source.map(str::to_owned);
        record.save(&self.layout.record(id))?;
        Ok(record)
    }

    /// Removes attachment `id`'s policy: from the next packet on it only counts.
    pub fn clear_policy(&mut self, id: u32) -> Result<()> {
        let mut record = self.attachment(id)?;
        self.remove_policy(id)?;
        record.policy = None;
        record.policy_source = None;
        record.save(&self.layout.record(id))
    }

    /// The generation of attachment `id`'s policy in force, `None` when it has none.
    pub fn policy_generation(&self, id: u32) -> Result<Option<u32>> {
        let outer: ArrayOfMaps<&MapData, MapData> =
            ArrayOfMaps::try_from(&self.policies).map_err(|e| map_err(maps::POLICIES, e))?;
        match outer.get(&id, 0) {
            Ok(trie) => Ok(Some(
                trie.info().map_err(|e| map_err(maps::POLICIES, e))?.id(),
            )),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(maps::POLICIES, e)),
        }
    }

    /// Builds a new trie from `compiled` and swaps it in; returns its generation.
    pub(super) fn install_policy(&mut self, id: u32, mut compiled: TrieEntries) -> Result<u32> {
        // Replies need somewhere to find their flows before the first packet is policed.
        self.ensure_flow_table(id)?;
        let mut trie = PolicyTrie::create(MAX_POLICY_ENTRIES, BPF_F_NO_PREALLOC)
            .map_err(|e| map_err(maps::POLICIES, e))?;
        let generation = trie
            .map()
            .info()
            .map_err(|e| map_err(maps::POLICIES, e))?
            .id();
        compiled.set_generation(generation);
        for entry in &compiled.entries {
            trie.insert(&Key::new(entry.prefix_len, entry.key), &entry.value, 0)
                .map_err(|e| map_err(maps::POLICIES, e))?;
        }
        let mut outer: ArrayOfMaps<&mut MapData, PolicyTrie> =
            ArrayOfMaps::try_from(&mut self.policies).map_err(|e| map_err(maps::POLICIES, e))?;
        outer
            .set(id, &trie, 0)
            .map_err(|e| map_err(maps::POLICIES, e))?;
        // The programs cache peers' trie entries per epoch: the old policy's must not count.
        self.bump_epoch()?;
        // Our descriptor closes here; the array holds the trie from now on.
        Ok(generation)
    }

    /// Empties attachment `id`'s policy slot (nothing there is fine).
    pub(super) fn remove_policy(&mut self, id: u32) -> Result<()> {
        let Map::ArrayOfMaps(data) = &self.policies else {
            return Err(DataplaneError::MissingMap(maps::POLICIES));
        };
        match sys::delete_array_of_maps_elem(data.fd().as_fd(), id) {
            // A cached peer entry of the removed policy must not count (see `install_policy`).
            Ok(()) => self.bump_epoch(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataplaneError::io("deleting a slot of", maps::POLICIES, e)),
        }
    }
}
