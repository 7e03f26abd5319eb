//! Drop events: the programs' ring buffer, drained and resolved into records naming the pod,
//! the packet and the rule that dropped it.
//!
//! The compiled policy carries no rule id (it would cost trie space and a store on every
//! lookup); the rule is resolved here instead, from the event's reason, direction, peer,
//! protocol and port, against the policy the attachment record holds: the same policy the
//! programs were given.
use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use multus_common::{
    DIR_EGRESS, DROP_DEFAULT_DENY, DROP_HEADER_CHAIN, DROP_MALFORMED, DROP_POLICY_DENY,
    DROP_SPOOFED, DropEvent, EVENT_AUDIT, EVENT_HAS_L4, EVENT_L3_ARP, EVENT_L3_IP,
    policy::FAMILY_V6,
};
use serde::{Deserialize, Serialize};

use super::{Action, AttachmentRecord, DirectionPolicy, DropReason, Policy};

/// Default number of events the agent keeps.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Default rate limit: events per second and attachment.
pub const DEFAULT_RATE: u32 = 100;
/// Default burst: events an attachment may emit at once.
pub const DEFAULT_BURST: u32 = 200;

/// The per-attachment rate limit of drop events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLimit {
    /// Events per second (0 turns events off).
    pub rate: u32,
    /// Events at once.
    pub burst: u32,
}

impl Default for EventLimit {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl EventLimit {
    /// The map form.
    pub fn to_config(self) -> multus_common::EventConfig {
        if self.rate == 0 {
            return multus_common::EventConfig::default();
        }
        let interval_ns = 1_000_000_000 / u64::from(self.rate);
        multus_common::EventConfig {
            interval_ns: interval_ns.max(1),
            burst_ns: interval_ns.max(1) * u64::from(self.burst.max(1)),
        }
    }
}

/// Event counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Written to the ring.
    pub emitted: u64,
    /// Held back by the rate limit.
    pub suppressed: u64,
    /// Lost: the ring was full.
    pub lost: u64,
}

/// One drop, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// Position in the agent's log (1, 2, ...; set when logged, 0 before).
    #[serde(default)]
    pub seq: u64,
    /// Wall-clock time of the drop, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The attachment id.
    pub attachment: u32,
    /// Pod namespace (empty when the attachment is unknown).
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Network (the NetworkAttachmentDefinition, `namespace/name`).
    pub network: String,
    /// Interface name inside the pod.
    pub interface: String,
    /// `ingress` (to the pod) or `egress` (from it).
    pub direction: String,
    /// Why, as in the drop counters' `reason` label.
    pub reason: String,
    /// Whether the packet passed (audit mode).
    pub audit: bool,
    /// `tcp`, `udp`, `icmp`, `arp`, ... or the protocol number.
    pub protocol: String,
    /// Source address (absent for non-IP frames).
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port (TCP, UDP, SCTP).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// Frame length in bytes.
    pub len: u32,
    /// The rule that decided, as the user wrote it, best effort.
    pub rule: String,
}

/// Resolves `ev` against its attachment's record (`None`: the attachment is gone).
pub fn resolve(ev: &DropEvent, record: Option<&AttachmentRecord>, boot: SystemTime) -> DropRecord {
    let direction = if u32::from(ev.direction) == DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    };
    let reason = reason_of(ev.reason).map_or("unknown", DropReason::label);
    let v6 = ev.family == FAMILY_V6;
    let ip = |b: [u8; 16]| -> IpAddr {
        if v6 && ev.l3 == EVENT_L3_IP {
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    let (src, dst) = match ev.l3 {
        EVENT_L3_IP | EVENT_L3_ARP => (Some(ip(ev.src)), Some(ip(ev.dst))),
        _ => (None, None),
    };
    let has_l4 = ev.flags & EVENT_HAS_L4 != 0 && ev.l3 == EVENT_L3_IP;
    let ported = matches!(ev.proto, 6 | 17 | 132);
    let icmpish = matches!(ev.proto, 1 | 58);
    let protocol = match (ev.l3, ev.proto) {
        (EVENT_L3_ARP, _) => "arp".to_owned(),
        (EVENT_L3_IP, 6) => "tcp".to_owned(),
        (EVENT_L3_IP, 17) => "udp".to_owned(),
        (EVENT_L3_IP, 132) => "sctp".to_owned(),
        (EVENT_L3_IP, 1) => "icmp".to_owned(),
        (EVENT_L3_IP, 58) => "icmpv6".to_owned(),
        (EVENT_L3_IP, n) => n.to_string(),
        _ => "other".to_owned(),
    };
    let time = boot + Duration::from_nanos(ev.time_ns);
    let time_ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut out = DropRecord {
        seq: 0,
        time_ms,
        attachment: ev.attach_id,
        namespace: String::new(),
        pod: String::new(),
        network: String::new(),
        interface: String::new(),
        direction: direction.to_owned(),
        reason: reason.to_owned(),
        audit: ev.flags & EVENT_AUDIT != 0,
        protocol,
        src,
        dst,
        sport: (has_l4 && ported).then_some(ev.sport),
        dport: (has_l4 && ported).then_some(ev.dport),
        icmp: (has_l4 && icmpish).then_some((ev.icmp_type, ev.icmp_code)),
        len: ev.len,
        rule: String::new(),
    };
    let Some(record) = record else {
        out.rule = "attachment gone".to_owned();
        return out;
    };
    out.namespace.clone_from(&record.owner.namespace);
    out.pod.clone_from(&record.owner.pod);
    out.network.clone_from(&record.owner.network);
    out.interface.clone_from(&record.ifname);
    out.rule = rule_text(ev, &out, record);
    out
}

fn reason_of(reason: u8) -> Option<DropReason> {
    DropReason::ALL
        .into_iter()
        .find(|r| r.index() == usize::from(reason))
}

/// The rule behind a drop, in the words of the policy's source.
fn rule_text(ev: &DropEvent, rec: &DropRecord, record: &AttachmentRecord) -> String {
    let source = source_text(record.policy_source.as_deref());
    let dir = rec.direction.as_str();
    match usize::from(ev.reason) {
        DROP_SPOOFED => {
            let own_mac = record
                .policy
                .as_ref()
                .and_then(|p| p.anti_spoof.as_ref())
                .map(|a| a.mac.0);
            match (own_mac, rec.src) {
                (Some(mac), _) if mac != ev.src_mac => format!(
                    "antiSpoof: source MAC {} is not the interface's",
                    super::MacAddr(ev.src_mac)
                ),
                (_, Some(src)) => format!("antiSpoof: source {src} is not the interface's"),
                _ => "antiSpoof".to_owned(),
            }
        }
        DROP_POLICY_DENY => {
            let Some(policy) = record.policy.as_ref() else {
                return format!("{source}: a deny rule ({dir})");
            };
            let rules = direction_policy(policy, dir);
            match packet_of(rec).and_then(|p| first_matching(rules, &p, Action::Deny)) {
                Some(i) => rule_name(rules, i, dir, &source),
                None => format!("{source}: a deny rule ({dir})"),
            }
        }
        DROP_DEFAULT_DENY => match record.policy.as_ref() {
            Some(policy) => default_name(direction_policy(policy, dir), dir, &source),
            None => format!("{source}: default deny ({dir})"),
        },
        DROP_MALFORMED => "malformed: headers cut short".to_owned(),
        DROP_HEADER_CHAIN => "IPv6 extension header chain too long".to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// A record's policy source in words (`policy` when none is recorded).
pub fn source_text(source: Option<&str>) -> String {
    source.map_or_else(|| "policy".to_owned(), describe_source)
}

/// `nad:ns/name+mnp:ns/a,ns/b` in words: `NetworkAttachmentDefinition ns/name + MultiNetworkPolicy
/// ns/a, ns/b`.
fn describe_source(source: &str) -> String {
    source
        .split('+')
        .map(|part| match part.split_once(':') {
            Some(("nad", nad)) => format!("NetworkAttachmentDefinition {nad}"),
            Some(("mnp", list)) => format!("MultiNetworkPolicy {}", list.replace(',', ", ")),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Rule `index` of `rules` as its author wrote it (`NetworkAttachmentDefinition infra/storage:
/// ingress.deny[0]`); a rule without origins (a policy given by hand) by its place in the
/// compiled policy (`<source>: ingress.rules[3] (deny)`).
pub fn rule_name(rules: &DirectionPolicy, index: usize, dir: &str, source: &str) -> String {
    let Some(rule) = rules.rules.get(index) else {
        return format!("{source}: {dir}.rules[{index}]");
    };
    if rule.origins.is_empty() {
        let action = match rule.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        };
        return format!("{source}: {dir}.rules[{index}] ({action})");
    }
    rule.origins
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The direction's default, with the objects that made it deny (`MultiNetworkPolicy
/// app/db-policy: default deny (ingress)`).
pub fn default_name(rules: &DirectionPolicy, dir: &str, source: &str) -> String {
    let action = match rules.default {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    let objects = if rules.default_from.is_empty() {
        source.to_owned()
    } else {
        objects_text(&rules.default_from)
    };
    format!("{objects}: default {action} ({dir})")
}

/// Objects by kind: `NetworkAttachmentDefinition infra/storage + MultiNetworkPolicy app/a, app/b`.
fn objects_text(origins: &[super::Origin]) -> String {
    let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
    for o in origins {
        let object = o.object();
        let (kind, name) = object.split_once(' ').unwrap_or(("", object.as_str()));
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, names)) if names.iter().any(|n| n == name) => {}
            Some((_, names)) => names.push(name.to_owned()),
            None => kinds.push((kind.to_owned(), vec![name.to_owned()])),
        }
    }
    kinds
        .into_iter()
        .map(|(kind, names)| format!("{kind} {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn direction_policy<'a>(p: &'a Policy, dir: &str) -> &'a DirectionPolicy {
    if dir == "egress" {
        &p.egress
    } else {
        &p.ingress
    }
}

/// The dropped packet as the reference evaluator sees it (`None` without a peer address).
fn packet_of(rec: &DropRecord) -> Option<crate::policy::eval::Packet> {
    use crate::policy::eval::{Direction, Packet, Traffic};
    let (direction, peer) = if rec.direction == "egress" {
        (Direction::Egress, rec.dst)
    } else {
        (Direction::Ingress, rec.src)
    };
    let port = rec.dport.unwrap_or(0);
    let traffic = match rec.protocol.as_str() {
        "tcp" => Traffic::Tcp(port),
        "udp" => Traffic::Udp(port),
        "sctp" => Traffic::Sctp(port),
        "icmp" => Traffic::Icmp,
        "icmpv6" => Traffic::Icmpv6,
        "arp" => Traffic::Arp,
        _ => Traffic::Other(0),
    };
    Some(Packet {
        direction,
        peer: peer?,
        traffic,
    })
}

/// The index of the first rule with `action` that matches `packet`. For a drop by a deny rule
/// that is the rule to name: deny beats allow, so any matching deny rule decided. Matching is
/// the reference evaluator's ([`crate::policy::eval::rule_matches`]), not a second copy of the
/// semantics.
pub fn first_matching(
    rules: &DirectionPolicy,
    packet: &crate::policy::eval::Packet,
    action: Action,
) -> Option<usize> {
    rules
        .rules
        .iter()
        .position(|rule| rule.action == action && crate::policy::eval::rule_matches(rule, packet))
}

/// Reads raw events off the programs' ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").finish_non_exhaustive()
    }
}

impl EventReader {
    pub(super) fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Every event in the ring now, oldest first.
    pub fn drain(&mut self) -> Vec<DropEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<DropEvent>() {
                // SAFETY: the programs write whole `DropEvent`s; read unaligned from the ring.
                out.push(unsafe { item.as_ptr().cast::<DropEvent>().read_unaligned() });
            }
        }
        out
    }

    /// Waits up to `timeout` for the ring to have data (`poll(2)` on the map's descriptor).
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(n > 0)
    }
}

/// The last drops, bounded: the oldest go first.
#[derive(Debug)]
pub struct EventLog {
    capacity: usize,
    records: Mutex<(u64, VecDeque<DropRecord>)>,
}

impl EventLog {
    /// A log of at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            records: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Adds `record`, dropping the oldest when full.
    pub fn push(&self, mut record: DropRecord) {
        let mut guard = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seq, records) = &mut *guard;
        *seq += 1;
        record.seq = *seq;
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The records `keep` selects, oldest first, at most the last `last`.
    pub fn select(
        &self,
        keep: impl Fn(&DropRecord) -> bool,
        last: Option<usize>,
    ) -> Vec<DropRecord> {
        let guard = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<DropRecord> = guard.1.iter().filter(|r| keep(r)).cloned().collect();
        if let Some(n) = last
            && out.len() > n
        {
            out.drain(..out.len() - n);
        }
        out
    }
}

/// The wall-clock time of boot (`bpf_ktime_get_ns` counts from it, without suspend).
pub fn boot_time() -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let since_boot = if rc == 0 {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    } else {
        Duration::ZERO
    };
    SystemTime::now()
        .checked_sub(since_boot)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The programs' per-attachment event counters, opened from their pin (the reader task reads
/// them while the dataplane itself stays with the request handlers).
pub struct EventStatsReader {
    stats: aya::maps::PerCpuArray<MapData, multus_common::EventStats>,
}

impl std::fmt::Debug for EventStatsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStatsReader").finish_non_exhaustive()
    }
}

impl EventStatsReader {
    /// Opens the pinned counters under `layout`.
    pub fn open(layout: &super::PinLayout) -> super::Result<Self> {
        let name = multus_common::maps::EVENT_STATS;
        let path = layout.maps().join(name);
        let data = MapData::from_pin(&path).map_err(|e| super::map_err(name, e))?;
        let stats = aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
            .map_err(|e| super::map_err(name, e))?;
        Ok(Self { stats })
    }

    /// The counters of attachment `id`, summed over CPUs.
    pub fn counts(&self, id: u32) -> super::Result<EventCounts> {
        let name = multus_common::maps::EVENT_STATS;
        let values = self
            .stats
            .get(&id, 0)
            .map_err(|e| super::map_err(name, e))?;
        let mut out = EventCounts::default();
        for cpu in values.iter() {
            out.emitted += cpu.emitted;
            out.suppressed += cpu.suppressed;
            out.lost += cpu.lost;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::path::PathBuf;

    use multus_common::{DIR_INGRESS, policy::FAMILY_V4};

    use super::*;
    use crate::dataplane::Protocol;
    use crate::dataplane::{
        AntiSpoof, AttachMode, AttachmentOwner, MacAddr, ObjectKind, Origin, PortRange, Rule,
    };

    fn record(policy: Policy, source: &str) -> AttachmentRecord {
        AttachmentRecord {
            id: 7,
            netns: PathBuf::from("/proc/1/ns/net"),
            ifname: "net1".to_owned(),
            ifindex: 3,
            netns_cookie: 1,
            mode: AttachMode::Tcx,
            owner: AttachmentOwner {
                namespace: "infra".to_owned(),
                pod: "db-0".to_owned(),
                network: "infra/storage".to_owned(),
                container_id: String::new(),
            },
            policy: Some(policy),
            policy_source: Some(source.to_owned()),
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    fn tcp_in(src: [u8; 16], dst: [u8; 16], family: u8, dport: u16) -> DropEvent {
        DropEvent {
            attach_id: 7,
            direction: DIR_INGRESS as u8,
            reason: DROP_POLICY_DENY as u8,
            flags: EVENT_HAS_L4,
            l3: EVENT_L3_IP,
            family,
            proto: 6,
            sport: 40000,
            dport,
            src,
            dst,
            len: 74,
            ..DropEvent::default()
        }
    }

    #[test]
    fn the_first_matching_deny_rule_is_named_with_excepts_and_port_ranges() {
        let policy = Policy {
            ingress: DirectionPolicy::allow_by_default(vec![
                // Does not match: the peer is in the except.
                Rule::deny().peer_except(
                    "192.0.2.0/24".parse().unwrap(),
                    vec!["192.0.2.8/29".parse().unwrap()],
                ),
                // Does not match: another port.
                Rule::deny().ports(Protocol::Tcp, PortRange::new(1, 1000)),
                Rule::allow(),
                Rule::deny().ports(Protocol::Tcp, PortRange::new(5000, 6000)),
            ]),
            ..Policy::default()
        };
        let r = record(policy, "nad:infra/storage+mnp:infra/a,infra/b");
        let ev = tcp_in(v4([192, 0, 2, 9]), v4([192, 0, 2, 20]), FAMILY_V4, 5432);
        let out = resolve(&ev, Some(&r), SystemTime::UNIX_EPOCH);
        assert_eq!(
            out.rule,
            "NetworkAttachmentDefinition infra/storage + MultiNetworkPolicy infra/a, infra/b: \
             ingress.rules[3] (deny)"
        );
        assert_eq!((out.pod.as_str(), out.interface.as_str()), ("db-0", "net1"));
        assert_eq!(out.src, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(
            (out.sport, out.dport, out.icmp),
            (Some(40000), Some(5432), None)
        );
    }

    #[test]
    fn rules_and_defaults_are_named_where_they_were_written() {
        let origin = |kind, name: &str, path: &str| Origin {
            kind,
            namespace: "app".to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
        };
        let nad = ObjectKind::NetworkAttachmentDefinition;
        let mnp = ObjectKind::MultiNetworkPolicy;
        let policy = Policy {
            ingress: DirectionPolicy {
                default_from: vec![
                    origin(nad, "storage", ""),
                    origin(mnp, "db-policy", ""),
                    origin(mnp, "other", ""),
                ],
                ..DirectionPolicy::deny_by_default(vec![
                    Rule::deny()
                        .ports(Protocol::Tcp, PortRange::single(22))
                        .from(origin(nad, "storage", "ingress.deny[0]")),
                    Rule::allow()
                        .ports(Protocol::Tcp, PortRange::single(5432))
                        .from(origin(nad, "storage", "ingress.allow[0]"))
                        .from(origin(mnp, "db-policy", "ingress[1]")),
                ])
            },
            ..Policy::default()
        };
        let r = record(policy, "nad:app/storage+mnp:app/db-policy,app/other");
        let out = resolve(
            &tcp_in(v4([192, 0, 2, 9]), v4([192, 0, 2, 20]), FAMILY_V4, 22),
            Some(&r),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            out.rule,
            "NetworkAttachmentDefinition app/storage: ingress.deny[0]"
        );
        let mut ev = tcp_in(v4([192, 0, 2, 9]), v4([192, 0, 2, 20]), FAMILY_V4, 80);
        ev.reason = DROP_DEFAULT_DENY as u8;
        let out = resolve(&ev, Some(&r), SystemTime::UNIX_EPOCH);
        assert_eq!(
            out.rule,
            "NetworkAttachmentDefinition app/storage + MultiNetworkPolicy app/db-policy, \
             app/other: default deny (ingress)"
        );
        let ingress = &r.policy.as_ref().unwrap().ingress;
        assert_eq!(
            rule_name(ingress, 1, "ingress", "x"),
            "NetworkAttachmentDefinition app/storage: ingress.allow[0] + MultiNetworkPolicy \
             app/db-policy: ingress[1]"
        );
    }

    #[test]
    fn ipv6_addresses_and_unknown_attachments() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let ev = tcp_in(src.octets(), dst.octets(), FAMILY_V6, 80);
        let out = resolve(&ev, None, SystemTime::UNIX_EPOCH);
        assert_eq!(
            (out.src, out.dst),
            (Some(IpAddr::V6(src)), Some(IpAddr::V6(dst)))
        );
        assert_eq!(out.rule, "attachment gone");
        assert!(out.pod.is_empty());
    }

    #[test]
    fn anti_spoof_names_the_mac_before_the_address() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let policy = Policy {
            anti_spoof: Some(AntiSpoof {
                mac,
                ips: vec!["192.0.2.5".parse().unwrap()],
                router: false,
            }),
            ..Policy::default()
        };
        let r = record(policy, "nad:infra/storage");
        let mut ev = tcp_in(v4([192, 0, 2, 6]), v4([192, 0, 2, 7]), FAMILY_V4, 80);
        ev.reason = DROP_SPOOFED as u8;
        ev.direction = DIR_EGRESS as u8;
        ev.src_mac = mac.0;
        let out = resolve(&ev, Some(&r), SystemTime::UNIX_EPOCH);
        assert_eq!(
            out.rule,
            "antiSpoof: source 192.0.2.6 is not the interface's"
        );
        ev.src_mac = [2, 0, 0, 0, 0, 9];
        let out = resolve(&ev, Some(&r), SystemTime::UNIX_EPOCH);
        assert!(
            out.rule.starts_with("antiSpoof: source MAC "),
            "{}",
            out.rule
        );
    }

    #[test]
    fn the_log_keeps_the_last_and_numbers_them() {
        let log = EventLog::new(2);
        let ev = tcp_in(v4([192, 0, 2, 1]), v4([192, 0, 2, 2]), FAMILY_V4, 1);
        for _ in 0..3 {
            log.push(resolve(&ev, None, SystemTime::UNIX_EPOCH));
        }
        let all = log.select(|_| true, None);
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(log.select(|_| true, Some(1))[0].seq, 3);
    }

    #[test]
    fn the_limit_becomes_an_interval_and_a_burst() {
        let c = EventLimit {
            rate: 100,
            burst: 200,
        }
        .to_config();
        assert_eq!((c.interval_ns, c.burst_ns), (10_000_000, 2_000_000_000));
        assert_eq!(EventLimit { rate: 0, burst: 5 }.to_config().interval_ns, 0);
    }
}
