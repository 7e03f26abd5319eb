//! Each attachment's connection table: an LRU map of its own in the `MULTUS_FLOWS` array of
//! maps, created with the attachment's first policy and removed with the attachment. A pod that
//! opens flows by the thousand evicts only its own least recently used flows; the programs count
//! those evictions in the attachment's [`FlowBudget`].
use std::{io, os::fd::AsFd as _};

use aya::maps::{ArrayOfMaps, HashMap as BpfHashMap, Map, MapData};
use multus_common::{FlowBudget, FlowKey, FlowValue, maps};
use serde::{Deserialize, Serialize};

use super::{
    Dataplane,
    error::{DataplaneError, Result},
    map_err, sys,
};

/// The state of one attachment's connection table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStats {
    /// Flows the table can hold (zero: the attachment has no table, it has never had a policy).
    pub capacity: u64,
    /// Flows it holds, as the programs count them.
    pub live: u64,
    /// New flows that pushed the table's least recently used flow out because it was full.
    pub evictions: u64,
}

impl Dataplane {
    /// Gives attachment `id` a connection table of its own, unless it has one.
    pub(super) fn ensure_flow_table(&mut self, id: u32) -> Result<()> {
        if self.flow_table(id)?.is_some() {
            return Ok(());
        }
        let capacity = self.sizing.flows_per_attachment;
        let table = sys::create_lru_hash(
            "multus_flows",
            size_of::<FlowKey>() as u32,
            size_of::<FlowValue>() as u32,
            capacity,
        )
        .map_err(|e| DataplaneError::io("creating a connection table for", maps::FLOWS, e))?;
        // The budget first: the programs count from the first flow on.
        self.flow_budgets
            .set(
                id,
                &FlowBudget {
                    live: 0,
                    evictions: 0,
                    capacity: u64::from(capacity),
                },
                0,
            )
            .map_err(|e| map_err(maps::FLOW_BUDGETS, e))?;
        let Map::ArrayOfMaps(outer) = &self.flows else {
            return Err(DataplaneError::MissingMap(maps::FLOWS));
        };
        sys::set_array_of_maps_elem(outer.fd().as_fd(), id, table.as_fd())
            .map_err(|e| DataplaneError::io("installing a connection table in", maps::FLOWS, e))
        // Our descriptor closes here; the array holds the table from now on.
    }

    /// Attachment `id`'s connection table, if it has one.
    fn flow_table(&self, id: u32) -> Result<Option<BpfHashMap<MapData, FlowKey, FlowValue>>> {
        let outer: ArrayOfMaps<&MapData, MapData> =
            ArrayOfMaps::try_from(&self.flows).map_err(|e| map_err(maps::FLOWS, e))?;
        match outer.get(&id, 0) {
            Ok(table) => BpfHashMap::try_from(Map::LruHashMap(table))
                .map(Some)
                .map_err(|e| map_err(maps::FLOWS, e)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(maps::FLOWS, e)),
        }
    }

    /// How many flows attachment `id`'s connection table holds.
    pub fn flows(&self, id: u32) -> Result<usize> {
        let Some(table) = self.flow_table(id)? else {
            return Ok(0);
        };
        let mut n = 0;
        for key in table.keys() {
            key.map_err(|e| map_err(maps::FLOWS, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Attachment `id`'s connection table: capacity, flows and evictions.
    pub fn flow_table_stats(&self, id: u32) -> Result<FlowTableStats> {
        if id == 0 || id >= self.sizing.max_attachments {
            return Err(DataplaneError::UnknownAttachment(id));
        }
        let budget = self
            .flow_budgets
            .get(&id, 0)
            .map_err(|e| map_err(maps::FLOW_BUDGETS, e))?;
        Ok(FlowTableStats {
            capacity: budget.capacity,
            live: budget.live.min(budget.capacity),
            evictions: budget.evictions,
        })
    }

    /// Removes attachment `id`'s connection table (nothing there is fine).
    pub(super) fn forget_flows(&mut self, id: u32) -> Result<()> {
        let Map::ArrayOfMaps(outer) = &self.flows else {
            return Err(DataplaneError::MissingMap(maps::FLOWS));
        };
        match sys::delete_array_of_maps_elem(outer.fd().as_fd(), id) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataplaneError::io("deleting a slot of", maps::FLOWS, e)),
        }
        self.flow_budgets
            .set(id, &FlowBudget::default(), 0)
            .map_err(|e| map_err(maps::FLOW_BUDGETS, e))
    }
}
