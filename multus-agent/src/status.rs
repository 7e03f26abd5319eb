//! `multus-agent status`: every attachment with its pod, network, interface, policy and
//! counters. It reads the attachment records and the pinned counter map directly, so it works
//! whether or not the agent runs and never changes anything (no program is loaded).
//!
//! The records hold the policy in force (the dataplane writes it with every update) and where
//! it comes from (`nad:<ns>/<name>+mnp:<ns>/<name>,...`, written by the agent).
use std::fmt::Write as _;

use serde::Serialize;

use crate::dataplane::{
    AttachMode, AttachmentRecord, DataplaneError, InterfaceCounters, PinLayout, Policy, counters,
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
    let counters = counters::open_pinned(layout);
    let rows = records
        .into_iter()
        .map(|r| StatusRow {
            id: r.id,
            counters: counters
                .as_ref()
                .ok()
                .and_then(|m| counters::read(m, r.id).ok()),
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

/// Which rows to show: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name, or `<namespace>/<name>`.
    pub pod: Option<String>,
    /// The network, as `<nad-namespace>/<nad-name>` or just `<nad-name>`.
    pub network: Option<String>,
}

impl Filter {
    /// Whether `row` passes.
    pub fn matches(&self, row: &StatusRow) -> bool {
        let namespace = self
            .namespace
            .as_deref()
            .is_none_or(|ns| row.namespace == ns);
        let pod = self.pod.as_deref().is_none_or(|p| match p.split_once('/') {
            Some((ns, name)) => row.namespace == ns && row.pod == name,
            None => row.pod == p,
        });
        let network = self.network.as_deref().is_none_or(|n| {
            row.network == n
                || (!n.contains('/')
                    && row
                        .network
                        .rsplit_once('/')
                        .is_some_and(|(_, name)| name == n))
        });
        namespace && pod && network
    }
}

/// How a column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Renders `header` and `rows` with each column as wide as its widest cell (long names never
/// run into the next column), two spaces apart; the last column is not padded.
fn render(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|(h, _)| (*h).to_owned()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let (width, align) = (widths[i], header[i].1);
            if i > 0 {
                line.push_str("  ");
            }
            if i + 1 == row.len() && align == Align::Left {
                line.push_str(cell);
            } else if align == Align::Left {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "{cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn pod_name(r: &StatusRow) -> String {
    if r.pod.is_empty() {
        format!("({})", r.netns)
    } else {
        format!("{}/{}", r.namespace, r.pod)
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Counter cells: packets and bytes each way, drops each way, audited packets; empty when the
/// counters could not be read.
#[derive(Default, Clone, Copy)]
struct Totals {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_drops: u64,
    tx_drops: u64,
    audited: u64,
}

impl Totals {
    fn of(c: &InterfaceCounters) -> Self {
        Self {
            rx_packets: c.ingress.packets,
            rx_bytes: c.ingress.bytes,
            tx_packets: c.egress.packets,
            tx_bytes: c.egress.bytes,
            rx_drops: c.ingress.dropped(),
            tx_drops: c.egress.dropped(),
            audited: c
                .ingress
                .audit_packets
                .iter()
                .chain(&c.egress.audit_packets)
                .sum(),
        }
    }

    fn add(&mut self, o: &Self) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_drops += o.rx_drops;
        self.tx_drops += o.tx_drops;
        self.audited += o.audited;
    }
}

/// The rows as an aligned table: pod, network, interface, id, traffic, drops, what an audit
/// policy would have dropped, and the policy's source (last: it can be long). `wide` adds the
/// attach mode, the container id and the netns, and splits drops by direction.
pub fn table(rows: &[StatusRow], wide: bool) -> String {
    use Align::{Left, Right};
    let mut header = vec![
        ("POD", Left),
        ("NETWORK", Left),
        ("INTERFACE", Left),
        ("ID", Right),
    ];
    if wide {
        header.extend([("MODE", Left), ("CONTAINER", Left), ("NETNS", Left)]);
    }
    header.extend([
        ("RX PKTS", Right),
        ("RX BYTES", Right),
        ("TX PKTS", Right),
        ("TX BYTES", Right),
    ]);
    if wide {
        header.extend([("RX DROPS", Right), ("TX DROPS", Right)]);
    } else {
        header.push(("DROPS", Right));
    }
    header.extend([("AUDIT", Right), ("POLICY", Left)]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                pod_name(r),
                dash(&r.network).to_owned(),
                r.interface.clone(),
                r.id.to_string(),
            ];
            if wide {
                row.extend([
                    r.mode.to_string(),
                    dash(&r.container_id).to_owned(),
                    r.netns.clone(),
                ]);
            }
            let t = r.counters.as_ref().map(Totals::of);
            let n =
                |f: fn(&Totals) -> u64| t.as_ref().map_or_else(String::new, |t| f(t).to_string());
            row.extend([
                n(|t| t.rx_packets),
                n(|t| t.rx_bytes),
                n(|t| t.tx_packets),
                n(|t| t.tx_bytes),
            ]);
            if wide {
                row.extend([n(|t| t.rx_drops), n(|t| t.tx_drops)]);
            } else {
                row.push(n(|t| t.rx_drops + t.tx_drops));
            }
            row.extend([
                n(|t| t.audited),
                r.policy.as_deref().unwrap_or("-").to_owned(),
            ]);
            row
        })
        .collect();
    render(&header, &cells)
}

/// One line per pod over all its interfaces: their names and networks, and the counters
/// summed (an interface whose counters could not be read adds nothing).
pub fn pods_table(rows: &[StatusRow]) -> String {
    use Align::{Left, Right};
    let mut pods: std::collections::BTreeMap<String, (Vec<String>, Vec<String>, Totals)> =
        std::collections::BTreeMap::new();
    for r in rows {
        let entry = pods.entry(pod_name(r)).or_default();
        entry.0.push(r.interface.clone());
        if !entry.1.contains(&r.network) {
            entry.1.push(r.network.clone());
        }
        if let Some(c) = &r.counters {
            entry.2.add(&Totals::of(c));
        }
    }
    let header = [
        ("POD", Left),
        ("INTERFACES", Left),
        ("NETWORKS", Left),
        ("RX PKTS", Right),
        ("RX BYTES", Right),
        ("TX PKTS", Right),
        ("TX BYTES", Right),
        ("DROPS", Right),
        ("AUDIT", Right),
    ];
    let cells: Vec<Vec<String>> = pods
        .into_iter()
        .map(|(pod, (mut interfaces, networks, t))| {
            interfaces.sort();
            vec![
                pod,
                interfaces.join(","),
                networks
                    .iter()
                    .map(|n| dash(n))
                    .collect::<Vec<_>>()
                    .join(","),
                t.rx_packets.to_string(),
                t.rx_bytes.to_string(),
                t.tx_packets.to_string(),
                t.tx_bytes.to_string(),
                (t.rx_drops + t.tx_drops).to_string(),
                t.audited.to_string(),
            ]
        })
        .collect();
    render(&header, &cells)
}

#[cfg(test)]
mod tests {
    use multus_common::{DROP_DEFAULT_DENY, DROP_POLICY_DENY};

    use super::*;

    fn row(id: u32, ns: &str, pod: &str, network: &str, ifname: &str) -> StatusRow {
        let mut c = InterfaceCounters::default();
        c.ingress.packets = u64::from(id) * 10;
        c.ingress.bytes = u64::from(id) * 1000;
        c.egress.packets = u64::from(id);
        c.egress.bytes = u64::from(id) * 100;
        c.ingress.drop_packets[DROP_POLICY_DENY] = 2;
        c.egress.drop_packets[DROP_DEFAULT_DENY] = 1;
        c.ingress.audit_packets[DROP_DEFAULT_DENY] = u64::from(id);
        StatusRow {
            id,
            namespace: ns.to_owned(),
            pod: pod.to_owned(),
            network: network.to_owned(),
            interface: ifname.to_owned(),
            container_id: format!("ctr{id}"),
            netns: format!("/var/run/netns/p{id}"),
            mode: AttachMode::Tcx,
            policy: Some(format!("nad:{network}")),
            compiled_policy: None,
            counters: Some(c),
        }
    }

    fn rows() -> Vec<StatusRow> {
        vec![
            row(
                1,
                "a-very-long-namespace-name-for-a-team",
                "frontend-7d9f8b6c5d-x2x9q",
                "a-very-long-namespace-name-for-a-team/storage-network",
                "net1",
            ),
            row(2, "web", "db-0", "web/macvlan", "net1"),
            row(3, "web", "db-0", "infra/mgmt", "net2"),
        ]
    }

    /// The start of each column in the header, by name.
    fn columns(table: &str) -> Vec<(String, usize)> {
        let header = table.lines().next().unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        for cell in header.split("  ").filter(|c| !c.trim().is_empty()) {
            let start = header[at..].find(cell.trim()).unwrap() + at;
            out.push((cell.trim().to_owned(), start));
            at = start + cell.trim().len();
        }
        out
    }

    #[test]
    fn long_names_keep_every_column_aligned() {
        let table = table(&rows(), false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let cols = columns(&table);
        let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
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
                "AUDIT",
                "POLICY"
            ]
        );
        // Left-aligned columns start where their header does, on every line.
        let network_at = cols[1].1;
        let policy_at = cols[10].1;
        for (line, network, policy) in [
            (
                lines[1],
                "a-very-long-namespace-name-for-a-team/storage-network",
                "nad:a-very",
            ),
            (lines[2], "web/macvlan", "nad:web/macvlan"),
        ] {
            assert_eq!(line.find(network), Some(network_at), "{table}");
            assert_eq!(line.find(policy), Some(policy_at), "{table}");
        }
        // Drops both ways, and the audited packets, per interface.
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "web/db-0",
                "infra/mgmt",
                "net2",
                "3",
                "30",
                "3000",
                "3",
                "300",
                "3",
                "3",
                "nad:infra/mgmt"
            ]
        );
    }

    #[test]
    fn wide_adds_mode_container_netns_and_drops_per_direction() {
        let table = table(&rows(), true);
        let names: Vec<String> = columns(&table).into_iter().map(|(n, _)| n).collect();
        for name in [
            "MODE",
            "CONTAINER",
            "NETNS",
            "RX DROPS",
            "TX DROPS",
            "AUDIT",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}: {table}");
        }
        assert!(!names.iter().any(|n| n == "DROPS"), "{table}");
        let line = table.lines().nth(2).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "web/db-0",
                "web/macvlan",
                "net1",
                "2",
                "tcx",
                "ctr2",
                "/var/run/netns/p2",
                "20",
                "2000",
                "2",
                "200",
                "2",
                "1",
                "2",
                "nad:web/macvlan"
            ]
        );
    }

    #[test]
    fn filters_by_namespace_pod_and_network() {
        let ids = |f: Filter| -> Vec<u32> {
            rows()
                .iter()
                .filter(|r| f.matches(r))
                .map(|r| r.id)
                .collect()
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(ids(Filter::default()), [1, 2, 3]);
        assert_eq!(
            ids(Filter {
                namespace: some("web"),
                ..Filter::default()
            }),
            [2, 3]
        );
        assert_eq!(
            ids(Filter {
                pod: some("db-0"),
                ..Filter::default()
            }),
            [2, 3]
        );
        assert_eq!(
            ids(Filter {
                pod: some("web/db-0"),
                ..Filter::default()
            }),
            [2, 3]
        );
        assert!(
            ids(Filter {
                pod: some("other/db-0"),
                ..Filter::default()
            })
            .is_empty()
        );
        assert_eq!(
            ids(Filter {
                network: some("mgmt"),
                ..Filter::default()
            }),
            [3]
        );
        assert_eq!(
            ids(Filter {
                network: some("infra/mgmt"),
                ..Filter::default()
            }),
            [3]
        );
        assert!(
            ids(Filter {
                network: some("web/mgmt"),
                ..Filter::default()
            })
            .is_empty()
        );
        assert_eq!(
            ids(Filter {
                namespace: some("web"),
                network: some("macvlan"),
                ..Filter::default()
            }),
            [2]
        );
    }

    #[test]
    fn the_pod_view_sums_a_pods_interfaces() {
        let table = pods_table(&rows());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let db: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with("web/db-0"))
            .unwrap()
            .split_whitespace()
            .collect();
        // net1 (id 2) and net2 (id 3): 20+30 received packets, 2000+3000 bytes, 2+3 sent,
        // 200+300 bytes, 3 drops each, 2+3 audited.
        assert_eq!(
            db,
            [
                "web/db-0",
                "net1,net2",
                "web/macvlan,infra/mgmt",
                "50",
                "5000",
                "5",
                "500",
                "6",
                "5"
            ]
        );
    }
}
