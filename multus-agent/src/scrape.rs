//! What `/metrics` serves: the agent's own metrics ([`AgentMetrics`]) and per-interface counters
//! read from the eBPF maps at scrape time by a [`Collector`] (nothing is copied between scrapes,
//! and since the maps are pinned the counters continue across agent restarts).
//!
//! Per attachment (labels `namespace`, `pod`, `interface`, `network_name`):
//! `multus_interface_{receive,transmit}_{bytes,packets}_total`,
//! `multus_policy_drop_{packets,bytes}_total` and `multus_policy_audit_{packets,bytes}_total`
//! (plus `direction`, `reason` and `policy_source`; every reason's series is there at zero while
//! the interface has a policy, audit series while it is in audit mode), and
//! `pod_network_name_info` (always 0; OpenShift's name and labels, so
//! cAdvisor's `container_network_*` series join on `namespace`, `pod`, `interface`).
use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    attachments::Attachments,
    dataplane::{AttachmentRecord, DirectionCounters, DropReason, InterfaceCounters},
    metrics::{AgentMetrics, BuildInfo},
    policy::PolicySource,
};

/// The registry served on `/metrics`.
pub fn registry(
    metrics: &AgentMetrics,
    attachments: Arc<Attachments>,
    build: BuildInfo,
) -> Registry {
    registry_with(metrics, Box::new(InterfaceCollector { attachments }), build).0
}

/// The registry with `interfaces` as the per-interface collector, and the families registered.
fn registry_with(
    metrics: &AgentMetrics,
    interfaces: Box<dyn Collector>,
    build: BuildInfo,
) -> (Registry, Vec<(String, MetricType)>) {
    let mut registry = Registry::default();
    let families = metrics.register_into(&mut registry, build);
    registry.register_collector(interfaces);
    (registry, families)
}

/// Every series name `/metrics` can carry (`_total`, `_bucket`, `_info`... included), from
/// the same registration as the served registry: for checking dashboards and alert rules.
pub fn series_names() -> std::collections::BTreeSet<String> {
    #[derive(Debug)]
    struct NoInterfaces;
    impl Collector for NoInterfaces {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode_interfaces(&[], 0, encoder)
        }
    }
    let build = BuildInfo {
        version: String::new(),
        commit: String::new(),
        attach_mode: String::new(),
        kernel: String::new(),
    };
    let (registry, registered) =
        registry_with(&AgentMetrics::default(), Box::new(NoInterfaces), build);
    // The collector's families are written even without a row; the registered ones are known
    // by their registration.
    let text = encode(&registry).unwrap_or_default();
    let written = text.lines().filter_map(|line| {
        let (family, kind) = line.strip_prefix("# TYPE ")?.split_once(' ')?;
        Some((family.to_owned(), kind.to_owned()))
    });
    let registered = registered
        .into_iter()
        .map(|(family, kind)| (family, kind.as_str().to_owned()));
    let mut out = std::collections::BTreeSet::new();
    for (family, kind) in written.chain(registered) {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            out.insert(format!("{family}{suffix}"));
        }
    }
    out
}

/// Reads every attachment's counters when scraped.
#[derive(Debug)]
struct InterfaceCollector {
    attachments: Arc<Attachments>,
}

type Pick = fn(&DirectionCounters) -> u64;
/// Packets and bytes of one drop reason.
type Pick2 = fn(&DirectionCounters, DropReason) -> (u64, u64);

/// The `policy_source` label: `nad`, `mnp` or `nad+mnp` for a compiled policy, `manual` for
/// one installed by hand, `none` when the attachment has no policy (now; its drops are
/// earlier policies').
fn policy_source_label(r: &AttachmentRecord) -> &'static str {
    match (&r.policy, &r.policy_source) {
        (None, _) => "none",
        (Some(_), Some(source)) => source
            .parse::<PolicySource>()
            .map_or("manual", |s| s.kind()),
        (Some(_), None) => "manual",
    }
}

fn interface_labels(r: &AttachmentRecord) -> [(&'static str, &str); 4] {
    [
        ("namespace", r.owner.namespace.as_str()),
        ("pod", r.owner.pod.as_str()),
        ("interface", r.ifname.as_str()),
        ("network_name", r.owner.network.as_str()),
    ]
}

impl Collector for InterfaceCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let rows = self.attachments.with_counters();
        encode_interfaces(&rows, self.attachments.len(), encoder)
    }
}

/// Writes the per-interface families for `rows`, and the attached-interfaces gauge.
fn encode_interfaces(
    rows: &[(AttachmentRecord, InterfaceCounters)],
    attached: usize,
    mut encoder: DescriptorEncoder,
) -> Result<(), fmt::Error> {
    {
        let packets = Unit::Other("packets".to_owned());
        let traffic: [(&str, &str, &Unit, bool, Pick); 4] = [
            (
                "multus_interface_receive",
                "Bytes received by the pod on a secondary interface (layer 2 included)",
                &Unit::Bytes,
                true,
                |c| c.bytes,
            ),
            (
                "multus_interface_receive",
                "Packets received by the pod on a secondary interface",
                &packets,
                true,
                |c| c.packets,
            ),
            (
                "multus_interface_transmit",
                "Bytes sent by the pod on a secondary interface (layer 2 included)",
                &Unit::Bytes,
                false,
                |c| c.bytes,
            ),
            (
                "multus_interface_transmit",
                "Packets sent by the pod on a secondary interface",
                &packets,
                false,
                |c| c.packets,
            ),
        ];
        for (name, help, unit, ingress, pick) in traffic {
            let mut family =
                encoder.encode_descriptor(name, help, Some(unit), MetricType::Counter)?;
            for (record, counters) in rows {
                let dir = if ingress {
                    &counters.ingress
                } else {
                    &counters.egress
                };
                ConstCounter::new(pick(dir))
                    .encode(family.encode_family(&interface_labels(record))?)?;
            }
        }
        // The last field: an audit family (zero series only under an audit-mode policy).
        let drops: [(&str, &str, Pick2, bool); 2] = [
            (
                "multus_policy_drop",
                "Packets dropped on a secondary interface by its policy, by direction, reason and \
                 policy source",
                DirectionCounters::drops,
                false,
            ),
            (
                "multus_policy_audit",
                "Packets an audit-mode policy would have dropped (and passed), by direction, \
                 reason and policy source",
                DirectionCounters::audited,
                true,
            ),
        ];
        // Parsed once per record, not once per family and unit.
        let sources: Vec<&str> = rows.iter().map(|(r, _)| policy_source_label(r)).collect();
        for (name, help, pick, audit) in drops {
            for (unit, packets_not_bytes) in [(&packets, true), (&Unit::Bytes, false)] {
                let mut family =
                    encoder.encode_descriptor(name, help, Some(unit), MetricType::Counter)?;
                for ((record, counters), &source) in rows.iter().zip(&sources) {
                    // Under a policy every reason is there from the start, at zero, so the
                    // first drop is an increase; without one, only what earlier policies
                    // left.
                    let zeros = record.policy.as_ref().is_some_and(|p| !audit || p.audit);
                    for (direction, dir) in
                        [("ingress", &counters.ingress), ("egress", &counters.egress)]
                    {
                        for reason in DropReason::ALL {
                            let (packets, bytes) = pick(dir, reason);
                            let value = if packets_not_bytes { packets } else { bytes };
                            if value == 0 && !zeros {
                                continue;
                            }
                            let [ns, pod, iface, net] = interface_labels(record);
                            let labels = [
                                ns,
                                pod,
                                iface,
                                net,
                                ("direction", direction),
                                ("reason", reason.label()),
                                ("policy_source", source),
                            ];
                            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                        }
                    }
                }
            }
        }
        let mut evictions = encoder.encode_descriptor(
            "multus_flow_table_evictions",
            "New flows of a secondary interface that pushed one of its own older flows out of its \
             full connection table (their replies then meet the policy)",
            None,
            MetricType::Counter,
        )?;
        for (record, counters) in rows.iter().filter(|(r, _)| r.policy.is_some()) {
            ConstCounter::new(counters.flows.evictions)
                .encode(evictions.encode_family(&interface_labels(record))?)?;
        }
        let mut live = encoder.encode_descriptor(
            "multus_flow_table_flows",
            "Flows in a secondary interface's connection table",
            None,
            MetricType::Gauge,
        )?;
        for (record, counters) in rows.iter().filter(|(r, _)| r.policy.is_some()) {
            ConstGauge::new(i64::try_from(counters.flows.live).unwrap_or(i64::MAX))
                .encode(live.encode_family(&interface_labels(record))?)?;
        }
        let mut info = encoder.encode_descriptor(
            "pod_network_name_info",
            "The network of each pod interface, to join with per-interface metrics (always 0)",
            None,
            MetricType::Gauge,
        )?;
        for (record, _) in rows {
            ConstGauge::new(0i64).encode(info.encode_family(&interface_labels(record))?)?;
        }
        let gauge = encoder.encode_descriptor(
            "multus_agent_attached_interfaces",
            "Interfaces the dataplane is attached to",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(attached as i64).encode(gauge)?;
        Ok(())
    }
}

/// The text the `/metrics` endpoint serves (OpenMetrics).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use multus_common::{DROP_DEFAULT_DENY, DROP_SPOOFED};

    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<(AttachmentRecord, InterfaceCounters)>);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode_interfaces(&self.0, self.0.len(), encoder)
        }
    }

    #[test]
    fn series_names_cover_every_family_of_every_kind() {
        let names = series_names();
        for name in [
            "multus_agent_build_info",
            "multus_agent_attach_operations_total",
            "multus_agent_cache_synced",
            "multus_agent_ready",
            "multus_agent_policy_errors_total",
            "multus_cni_request_duration_seconds_bucket",
            "multus_interface_receive_bytes_total",
            "multus_policy_drop_packets_total",
            "multus_policy_audit_bytes_total",
            "pod_network_name_info",
            "multus_agent_attached_interfaces",
        ] {
            assert!(names.contains(name), "{name} not in {names:?}");
        }
        assert!(!names.contains("multus_agent_build"), "{names:?}");
    }

    #[test]
    fn interface_families_and_labels() {
        // From JSON: fields added to records later default, as on disk.
        let record: AttachmentRecord = serde_json::from_value(serde_json::json!({
            "id": 7, "netns": "/var/run/netns/p", "ifname": "net1", "ifindex": 3,
            "netns_cookie": 9, "mode": "tcx",
            "owner": {"namespace": "ns", "pod": "web", "network": "ns/macvlan", "container_id": "c"},
            "policy": {"ingress": {"default": "deny"}, "egress": {"default": "allow"}},
            "policy_source": "nad:ns/macvlan+mnp:ns/web"
        }))
        .unwrap();
        let mut c = InterfaceCounters::default();
        c.ingress.packets = 5;
        c.ingress.bytes = 490;
        c.egress.packets = 4;
        c.egress.bytes = 392;
        c.egress.drop_packets[DROP_SPOOFED] = 3;
        c.egress.drop_bytes[DROP_SPOOFED] = 294;
        c.ingress.audit_packets[DROP_DEFAULT_DENY] = 2;
        c.ingress.audit_bytes[DROP_DEFAULT_DENY] = 196;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(vec![(record, c)])));
        let text = encode(&registry).unwrap();
        let labels = r#"namespace="ns",pod="web",interface="net1",network_name="ns/macvlan""#;
        for line in [
            format!("multus_interface_receive_bytes_total{{{labels}}} 490"),
            format!("multus_interface_receive_packets_total{{{labels}}} 5"),
            format!("multus_interface_transmit_bytes_total{{{labels}}} 392"),
            format!("multus_interface_transmit_packets_total{{{labels}}} 4"),
            format!(
                "multus_policy_drop_packets_total{{{labels},direction=\"egress\",reason=\"spoofed\",policy_source=\"nad+mnp\"}} 3"
            ),
            format!(
                "multus_policy_drop_bytes_total{{{labels},direction=\"egress\",reason=\"spoofed\",policy_source=\"nad+mnp\"}} 294"
            ),
            format!(
                "multus_policy_audit_packets_total{{{labels},direction=\"ingress\",reason=\"default_deny\",policy_source=\"nad+mnp\"}} 2"
            ),
            format!(
                "multus_policy_audit_bytes_total{{{labels},direction=\"ingress\",reason=\"default_deny\",policy_source=\"nad+mnp\"}} 196"
            ),
            format!("pod_network_name_info{{{labels}}} 0"),
            "multus_agent_attached_interfaces 1".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
        }
        // Under a policy every drop reason is reported from the start, at zero (two
        // directions); audit series only with their counts, the policy not being in audit mode.
        let reasons = DropReason::ALL.len();
        assert_eq!(
            text.matches("multus_policy_drop_packets_total{").count(),
            2 * reasons,
            "{text}"
        );
        assert!(text.lines().any(|l| l
            == format!(
                "multus_policy_drop_packets_total{{{labels},direction=\"ingress\",reason=\"header_chain\",policy_source=\"nad+mnp\"}} 0"
            )));
        assert_eq!(
            text.matches("multus_policy_audit_packets_total{").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("# TYPE multus_interface_receive_bytes counter"),
            "{text}"
        );
    }

    #[test]
    fn zero_series_follow_the_policy_in_force() {
        let record = |policy: serde_json::Value| -> AttachmentRecord {
            serde_json::from_value(serde_json::json!({
                "id": 3, "netns": "/var/run/netns/p", "ifname": "net1", "ifindex": 3,
                "netns_cookie": 9, "mode": "tcx",
                "owner": {"namespace": "ns", "pod": "p", "network": "ns/n", "container_id": "c"},
                "policy": policy
            }))
            .unwrap()
        };
        let scrape = |r: AttachmentRecord| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(Fixed(vec![(r, InterfaceCounters::default())])));
            encode(&registry).unwrap()
        };
        let reasons = DropReason::ALL.len();
        // No policy: nothing to count, no series.
        let text = scrape(record(serde_json::Value::Null));
        assert_eq!(text.matches("multus_policy_drop_packets_total{").count(), 0);
        assert_eq!(
            text.matches("multus_policy_audit_packets_total{").count(),
            0
        );
        // Audit mode: the audit series at zero, and the drop series (nothing is dropped, but a
        // switch to enforcing then starts from zero too).
        let text = scrape(record(serde_json::json!({"audit": true})));
        assert_eq!(
            text.matches("multus_policy_audit_packets_total{").count(),
            2 * reasons,
            "{text}"
        );
        assert_eq!(
            text.matches("multus_policy_drop_bytes_total{").count(),
            2 * reasons,
            "{text}"
        );
    }
}
