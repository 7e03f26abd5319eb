//! `multus-agent status`: every attachment with its pod, network, interface, policy and
//! counters. It reads the attachment records and the pinned counter map directly, so it works
//! whether or not the agent runs and never changes anything (no program is loaded).
//!
//! The records hold the policy in force (the dataplane writes it with every update) and where
//! it comes from (`nad:<ns>/<name>+mnp:<ns>/<name>,...`, written by the agent).
use std::{fmt::Write as _, path::Path};

use aya::maps::{Map, MapData, PerCpuArray};
use multus_common::{DIR_EGRESS, DIR_INGRESS, DirCounters, counter_index, maps};
use serde::Serialize;

use crate::dataplane::{
    AttachMode, AttachmentRecord, DataplaneError, DirectionCounters, InterfaceCounters, PinLayout,
    Policy,
};

/// One row of the status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// The attachment id.
    pub id: u32,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// `<nad-namespace>/<nad-name>`.
    pub network: String,
    /// The interface in the pod.
    pub interface: String,
    /// The runtime's container (sandbox) id.
    pub container_id: String,
    /// The pod's network namespace file.
    pub netns: String,
    /// TCX or clsact.
    pub mode: AttachMode,
    /// Where the policy in force comes from (`nad:<ns>/<name>+mnp:<ns>/<name>,...`, or `manual`
    /// for one set by hand); `None`: no policy, all traffic passes and is counted.
    pub policy: Option<String>,
    /// The policy in force, as installed.
    pub compiled_policy: Option<Policy>,
    /// Counters from the pinned map; `None` when they could not be read.
    pub counters: Option<InterfaceCounters>,
}

/// Reads the status from the pins and records of `layout`. Records that do not parse are
/// returned as errors next to the rows.
pub fn read(layout: &PinLayout) -> Result<(Vec<StatusRow>, Vec<DataplaneError>), DataplaneError> {
    let (records, errors) = AttachmentRecord::load_all(&layout.records())?;
    let counters = open_counters(&layout.maps().join(maps::COUNTERS));
    let rows = records
        .into_iter()
        .map(|r| StatusRow {
            id: r.id,
            counters: counters.as_ref().ok().and_then(|m| read_counters(m, r.id)),
            namespace: r.owner.namespace,
            pod: r.owner.pod,
            network: r.owner.network,
            interface: r.ifname,
            container_id: r.owner.container_id,
            netns: r.netns.display().to_string(),
            mode: r.mode,
            policy: r.policy.as_ref().map(|_| {
                r.policy_source
                    .clone()
                    .unwrap_or_else(|| "manual".to_owned())
            }),
            compiled_policy: r.policy,
        })
        .collect();
    let mut errors = errors;
    if let Err(e) = counters {
        errors.push(e);
    }
    Ok((rows, errors))
}

fn open_counters(path: &Path) -> Result<PerCpuArray<MapData, DirCounters>, DataplaneError> {
    let map_err = |e| DataplaneError::Map {
        name: maps::COUNTERS,
        source: Box::new(e),
    };
    let data = MapData::from_pin(path).map_err(map_err)?;
    let map = Map::from_map_data(data).map_err(map_err)?;
    PerCpuArray::try_from(map).map_err(map_err)
}

fn read_counters(map: &PerCpuArray<MapData, DirCounters>, id: u32) -> Option<InterfaceCounters> {
    let mut out = InterfaceCounters::default();
    for (direction, sum) in [
        (DIR_INGRESS, &mut out.ingress),
        (DIR_EGRESS, &mut out.egress),
    ] {
        let values = map.get(&counter_index(id, direction), 0).ok()?;
        for cpu in values.iter() {
            add(sum, cpu);
        }
    }
    Some(out)
}

fn add(sum: &mut DirectionCounters, c: &DirCounters) {
    sum.packets += c.packets;
    sum.bytes += c.bytes;
    for (total, v) in sum.drop_packets.iter_mut().zip(c.drop_packets) {
        *total += v;
    }
    for (total, v) in sum.drop_bytes.iter_mut().zip(c.drop_bytes) {
        *total += v;
    }
    for (total, v) in sum.audit_packets.iter_mut().zip(c.audit_packets) {
        *total += v;
    }
    for (total, v) in sum.audit_bytes.iter_mut().zip(c.audit_bytes) {
        *total += v;
    }
}

/// One attachment's policy as `status --policy ID` prints it: where it comes from and what it
/// is (`null` for both: no policy).
pub fn policy_json(rows: &[StatusRow], id: u32) -> Option<serde_json::Value> {
    let row = rows.iter().find(|r| r.id == id)?;
    Some(serde_json::json!({
        "id": row.id,
        "pod": format!("{}/{}", row.namespace, row.pod),
        "interface": row.interface,
        "network": row.network,
        "source": row.policy,
        "policy": row.compiled_policy,
    }))
}

/// The rows as an aligned table (the policy's source last: it can be long).
pub fn table(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 10]| {
        let _ = writeln!(
            out,
            "{:<32} {:<28} {:<10} {:>5} {:>10} {:>12} {:>10} {:>12} {:>8} {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9]
        );
    };
    line(
        &mut out,
        [
            "POD",
            "NETWORK",
            "INTERFACE",
            "ID",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "DROPS",
            "POLICY",
        ],
    );
    for r in rows {
        let pod = if r.pod.is_empty() {
            format!("({})", r.netns)
        } else {
            format!("{}/{}", r.namespace, r.pod)
        };
        let id = r.id.to_string();
        let n = |v: u64| v.to_string();
        let (rx_p, rx_b, tx_p, tx_b, drops) = match &r.counters {
            Some(c) => (
                n(c.ingress.packets),
                n(c.ingress.bytes),
                n(c.egress.packets),
                n(c.egress.bytes),
                n(c.ingress
                    .drop_packets
                    .iter()
                    .chain(&c.egress.drop_packets)
                    .sum()),
            ),
            None => Default::default(),
        };
        line(
            &mut out,
            [
                &pod,
                if r.network.is_empty() {
                    "-"
                } else {
                    &r.network
                },
                &r.interface,
                &id,
                &rx_p,
                &rx_b,
                &tx_p,
                &tx_b,
                &drops,
                r.policy.as_deref().unwrap_or("-"),
            ],
        );
    }
    out
}
