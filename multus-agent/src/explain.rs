//! `multus-agent explain`: the verdict the dataplane would give one packet of a pod's interface,
//! and the rule that decides it, without sending anything.
//!
//! The verdict comes from the attachment's policy trie as installed (read back from its pin, see
//! [`crate::dataplane::lookup`]); the rule's name from the policy the attachment record holds,
//! which is what the trie was compiled from. Both are read from bpffs and the state directory,
//! so it works with the agent down, like `status`. The reference evaluator
//! ([`crate::policy::eval`]) judges the recorded policy too: a disagreement with the trie is
//! reported, never hidden.
use std::net::IpAddr;

use serde::Serialize;

use crate::{
    dataplane::{
        Action, AttachmentRecord, DataplaneError, DropReason, PinLayout,
        events::{default_name, first_matching, rule_name, source_text},
        lookup::InstalledPolicy,
    },
    policy::eval::{self, Direction, Packet, Traffic},
};

/// The packet to explain and whose interface it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// `<namespace>/<name>` of the pod.
    pub pod: String,
    /// The interface inside the pod (`net1`), when the pod has more than one attachment.
    pub interface: Option<String>,
    /// The network (`<namespace>/<name>` or `<name>`), instead of the interface.
    pub network: Option<String>,
    /// The packet's direction, its peer and what it carries.
    pub packet: Packet,
}

/// The verdict and the rule behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The attachment id.
    pub attachment: u32,
    /// `<namespace>/<name>` of the pod.
    pub pod: String,
    /// The network, `<namespace>/<name>`.
    pub network: String,
    /// The interface inside the pod.
    pub interface: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The other end.
    pub peer: IpAddr,
    /// `tcp/5432`, `icmp`, `arp`, ...
    pub traffic: String,
    /// `pass`, `drop`, or `audit` (a drop counted, the packet passed).
    pub verdict: String,
    /// Why it is dropped (as in the drop counters' `reason` label).
    pub reason: Option<String>,
    /// The rule that decides, as its author wrote it, or the direction's default.
    pub rule: String,
    /// Where the policy comes from (`nad:<ns>/<name>+mnp:...`); `None`: no policy.
    pub source: Option<String>,
    /// The generation of the installed policy (its trie's map id).
    pub generation: Option<u32>,
    /// Set when the recorded policy, judged by the reference evaluator, disagrees with the
    /// installed trie (a bug, or a policy being replaced right now).
    pub disagreement: Option<String>,
}

impl Explanation {
    /// Whether the packet gets through (audit mode lets a would-be drop through).
    pub fn passes(&self) -> bool {
        self.verdict != "drop"
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// No attachment of that pod (on that interface or network).
    #[error("no attachment of pod {pod}{on} in {records}")]
    NotFound {
        /// The pod asked for.
        pod: String,
        /// ` on ...` when an interface or network was given.
        on: String,
        /// The records directory.
        records: String,
    },
    /// The pod has more than one attachment and none was picked.
    #[error("pod {pod} has {} attachments ({}): say which with --interface or --network", .interfaces.len(), .interfaces.join(", "))]
    Ambiguous {
        /// The pod asked for.
        pod: String,
        /// `net1 (ns/net)`, ...
        interfaces: Vec<String>,
    },
    /// The records or the pinned maps could not be read.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// Explains `query` from the pins and records of `layout`.
pub fn explain(layout: &PinLayout, query: &Query) -> Result<Explanation, ExplainError> {
    let record = find(layout, query)?;
    explain_attachment(layout, &record, &query.packet)
}

/// Explains `packet` on the attachment of `record`, from the pins of `layout`.
pub fn explain_attachment(
    layout: &PinLayout,
    record: &AttachmentRecord,
    packet: &Packet,
) -> Result<Explanation, ExplainError> {
    let dir = match packet.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let mut out = Explanation {
        attachment: record.id,
        pod: format!("{}/{}", record.owner.namespace, record.owner.pod),
        network: record.owner.network.clone(),
        interface: record.ifname.clone(),
        direction: dir.to_owned(),
        peer: packet.peer,
        traffic: traffic_text(packet.traffic),
        verdict: "pass".to_owned(),
        reason: None,
        rule: "no policy: every packet passes and is counted".to_owned(),
        source: None,
        generation: None,
        disagreement: None,
    };
    let installed = InstalledPolicy::open(layout, record.id)?;
    let (Some(policy), Some(installed)) = (record.policy.as_ref(), installed) else {
        if record.policy.is_some() {
            out.disagreement = Some("the record holds a policy but none is installed".to_owned());
        }
        return Ok(out);
    };
    out.generation = Some(installed.generation());
    out.source = Some(
        record
            .policy_source
            .clone()
            .unwrap_or_else(|| "manual".to_owned()),
    );
    let source = source_text(record.policy_source.as_deref());
    let verdict = installed.verdict(packet.direction, packet.peer, packet.traffic)?;
    let rules = match packet.direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    };
    out.verdict = match (verdict.drop, verdict.audit) {
        (None, _) => "pass",
        (Some(_), true) => "audit",
        (Some(_), false) => "drop",
    }
    .to_owned();
    out.reason = verdict.drop.map(|r| r.label().to_owned());
    let deciding = match verdict.drop {
        Some(DropReason::PolicyDeny) => first_matching(rules, packet, Action::Deny),
        Some(_) => None,
        None if verdict.by_rule => first_matching(rules, packet, Action::Allow),
        None => None,
    };
    out.rule = match (deciding, verdict.drop, verdict.by_rule) {
        (Some(i), _, _) => rule_name(rules, i, dir, &source),
        (None, None, false) if is_unruled(packet.traffic) => {
            format!("{}: no rule names it, so it passes", out.traffic)
        }
        (None, None | Some(DropReason::DefaultDeny), false) => default_name(rules, dir, &source),
        (None, _, _) => format!("{source}: no rule of the recorded policy matches ({dir})"),
    };
    let reference = eval::verdict(policy, packet);
    let installed_action = if verdict.drop.is_some() {
        Action::Deny
    } else {
        Action::Allow
    };
    if reference != installed_action || (verdict.by_rule && deciding.is_none()) {
        out.disagreement = Some(format!(
            "the installed trie (generation {}) says {:?}, the recorded policy says {reference:?}",
            installed.generation(),
            installed_action
        ));
    }
    Ok(out)
}

/// ARP and neighbour discovery pass unless a rule denies them.
fn is_unruled(traffic: Traffic) -> bool {
    matches!(traffic, Traffic::Arp | Traffic::NeighbourDiscovery)
}

fn find(layout: &PinLayout, query: &Query) -> Result<AttachmentRecord, ExplainError> {
    let dir = layout.records();
    let (records, _unreadable) = AttachmentRecord::load_all(&dir)?;
    let (ns, name) = query
        .pod
        .split_once('/')
        .unwrap_or(("default", query.pod.as_str()));
    let network_matches = |r: &AttachmentRecord| {
        query.network.as_deref().is_none_or(|n| {
            r.owner.network == n
                || (!n.contains('/')
                    && r.owner
                        .network
                        .rsplit_once('/')
                        .is_some_and(|(_, net)| net == n))
        })
    };
    let mut found: Vec<AttachmentRecord> = records
        .into_iter()
        .filter(|r| r.owner.namespace == ns && r.owner.pod == name)
        .filter(|r| query.interface.as_deref().is_none_or(|i| r.ifname == i))
        .filter(network_matches)
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let on = match (&query.interface, &query.network) {
                (Some(i), _) => format!(" on interface {i}"),
                (None, Some(n)) => format!(" on network {n}"),
                (None, None) => String::new(),
            };
            Err(ExplainError::NotFound {
                pod: format!("{ns}/{name}"),
                on,
                records: dir.display().to_string(),
            })
        }
        _ => Err(ExplainError::Ambiguous {
            pod: format!("{ns}/{name}"),
            interfaces: found
                .iter()
                .map(|r| format!("{} ({})", r.ifname, r.owner.network))
                .collect(),
        }),
    }
}

/// `tcp/5432`, `icmp`, ...
pub fn traffic_text(traffic: Traffic) -> String {
    match traffic {
        Traffic::Tcp(p) => format!("tcp/{p}"),
        Traffic::Udp(p) => format!("udp/{p}"),
        Traffic::Sctp(p) => format!("sctp/{p}"),
        Traffic::Icmp => "icmp".to_owned(),
        Traffic::Icmpv6 => "icmpv6".to_owned(),
        Traffic::NeighbourDiscovery => "neighbour discovery".to_owned(),
        Traffic::Arp => "arp".to_owned(),
        Traffic::Other(n) => format!("ip protocol {n}"),
    }
}

/// The explanation as a few lines for a terminal.
pub fn text(e: &Explanation) -> String {
    let mut out = format!(
        "{} {} ({}, attachment {}) {} {} {}\n",
        e.pod,
        e.interface,
        e.network,
        e.attachment,
        e.direction,
        if e.direction == "egress" {
            "to"
        } else {
            "from"
        },
        e.peer,
    );
    let verdict = match (&e.reason, e.verdict.as_str()) {
        (Some(reason), "audit") => {
            format!("AUDIT ({reason}: counted as a drop, passes)")
        }
        (Some(reason), _) => format!("DROP ({reason})"),
        (None, _) => "PASS".to_owned(),
    };
    out.push_str(&format!("  {}: {verdict}\n  rule: {}\n", e.traffic, e.rule));
    if let (Some(source), Some(generation)) = (&e.source, e.generation) {
        out.push_str(&format!("  policy: {source} (generation {generation})\n"));
    }
    if let Some(d) = &e.disagreement {
        out.push_str(&format!("  WARNING: {d}\n"));
    }
    out
}
