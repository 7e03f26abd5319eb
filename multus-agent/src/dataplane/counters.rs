//! Reading the per-CPU counter map: one attachment's counters summed over CPUs. The loaded
//! [`super::Dataplane`] and `multus-agent status` (which opens the pinned map without loading
//! anything) read through the same code.
use aya::maps::{Map, MapData, PerCpuArray};
use multus_common::{DIR_EGRESS, DIR_INGRESS, DirCounters, counter_index, maps};

use super::{InterfaceCounters, PinLayout, error::Result, map_err};

/// The counter map: per CPU, one [`DirCounters`] per attachment and direction.
pub type CounterMap = PerCpuArray<MapData, DirCounters>;

/// Opens the pinned counter map of `layout`.
pub fn open_pinned(layout: &PinLayout) -> Result<CounterMap> {
    let data = MapData::from_pin(layout.maps().join(maps::COUNTERS))
        .map_err(|e| map_err(maps::COUNTERS, e))?;
    let map = Map::from_map_data(data).map_err(|e| map_err(maps::COUNTERS, e))?;
    PerCpuArray::try_from(map).map_err(|e| map_err(maps::COUNTERS, e))
}

/// The traffic counters of attachment `id`, summed over CPUs (an id past the map's end is a
/// map error; the flow-table figures are the loaded dataplane's to add).
pub fn read(map: &CounterMap, id: u32) -> Result<InterfaceCounters> {
    let mut out = InterfaceCounters::default();
    for (direction, sum) in [
        (DIR_INGRESS, &mut out.ingress),
        (DIR_EGRESS, &mut out.egress),
    ] {
        let values = map
            .get(&counter_index(id, direction), 0)
            .map_err(|e| map_err(maps::COUNTERS, e))?;
        for cpu in values.iter() {
            sum.add(cpu);
        }
    }
    Ok(out)
}
