//! Building the entries of one attachment's policy trie from its [`Policy`].
//!
//! The programs do one longest-prefix lookup for the peer, so every prefix that appears in the
//! policy (peer CIDRs and their excepts, plus `/0` for rules without peers) gets the verdict of
//! *all* rules whose peers contain it, not only of the rule that named it: for any address, the
//! longest stored prefix containing it decides exactly which rules' peers contain the address
//! (prefixes are nested or disjoint). Within that set of rules, deny beats allow per protocol and
//! port, which is also resolved here: each prefix carries disjoint port blocks with a final
//! verdict, inline when they are few, else as a deduplicated port set of their own entries. A
//! prefix whose verdict equals its nearest enclosing prefix's is left out; the lookup lands on the
//! enclosing one anyway. Every direction and family gets a `/0` entry, and every peer entry
//! carries its direction's defaults and flags, so the programs need one lookup per packet.
use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;
use multus_common::{
    DIR_EGRESS, DIR_INGRESS, DirMeta, MAX_POLICY_ENTRIES, PolicyKey, PolicyValue, PortBlock,
    policy::{
        BLOCKS_IN_TRIE, FAMILY_V4, FAMILY_V6, INLINE_BLOCKS, KIND_META, KIND_PEER, META_ANTI_SPOOF,
        META_ARP_RULES, META_AUDIT, META_PREFIX, META_ROUTER, META_TRACK, OWN_PREFIX_BASE,
        PEER_PREFIX_BASE, PORT_PREFIX_BASE, SPACE_ARP, SPACE_IP, VERDICT_ALLOW, VERDICT_DENY,
        VERDICT_NONE, family_bits,
    },
};

use crate::policy::model::{Action, DirectionPolicy, Policy, PolicyError, Protocol, Rule};

/// One trie entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Prefix length in bits over the whole key.
    pub prefix_len: u32,
    /// The key.
    pub key: PolicyKey,
    /// The value.
    pub value: PolicyValue,
}

/// The entries of a policy trie, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrieEntries {
    /// Every entry; meta entries carry generation 0 until [`TrieEntries::set_generation`].
    pub entries: Vec<Entry>,
}

impl TrieEntries {
    /// Stamps the policy generation into the meta and peer entries (the programs compare it
    /// with the generation recorded in the connection table).
    pub fn set_generation(&mut self, generation: u32) {
        for e in self
            .entries
            .iter_mut()
            .filter(|e| matches!(e.key.kind, KIND_META | KIND_PEER))
        {
            e.value.meta.generation = generation;
        }
    }
}

/// Builds `policy`'s trie entries; fails on what [`Policy::validate`] rejects or when it does not fit.
pub fn build(policy: &Policy) -> Result<TrieEntries, PolicyError> {
    policy.validate()?;
    let mut entries = Vec::new();
    let mut sets = PortSets::default();
    let directions = [
        (DIR_INGRESS, &policy.ingress, &policy.egress),
        (DIR_EGRESS, &policy.egress, &policy.ingress),
    ];
    for (dir, this, other) in directions {
        let dir = dir as u8;
        let meta = dir_meta(dir, policy, this, other);
        for family in [FAMILY_V4, FAMILY_V6] {
            peer_entries(dir, family, &this.rules, meta, &mut sets, &mut entries);
        }
        entries.push(Entry {
            prefix_len: META_PREFIX,
            key: PolicyKey::meta(dir),
            value: PolicyValue {
                meta,
                ..PolicyValue::default()
            },
        });
    }
    sets.emit(&mut entries);
    if let Some(anti_spoof) = &policy.anti_spoof {
        for ip in &anti_spoof.ips {
            let (family, prefix) = Prefix::of(&IpNet::from(*ip));
            entries.push(Entry {
                prefix_len: OWN_PREFIX_BASE + family_bits(family),
                key: PolicyKey::own(family, prefix.addr.to_be_bytes()),
                value: PolicyValue::default(),
            });
        }
    }
    if entries.len() > MAX_POLICY_ENTRIES as usize {
        return Err(PolicyError::TooLarge {
            entries: entries.len(),
            max: MAX_POLICY_ENTRIES,
        });
    }
    Ok(TrieEntries { entries })
}

fn dir_meta(dir: u8, policy: &Policy, this: &DirectionPolicy, other: &DirectionPolicy) -> DirMeta {
    let mut flags = 0;
    if policy.audit {
        flags |= META_AUDIT;
    }
    // Flows are remembered when either direction can drop: the other direction for the replies
    // of this one's flows, and this one so that a flow is known by the packet that opened it
    // (after a policy change a flow is re-checked as its opener, see `flows::Reply::Recheck`;
    // recording only one direction would take a server's answer for the opening packet).
    if this.can_drop() || other.can_drop() {
        flags |= META_TRACK;
    }
    if this
        .rules
        .iter()
        .any(|r| r.ports.iter().any(|m| m.protocol == Protocol::Arp))
    {
        flags |= META_ARP_RULES;
    }
    let mut mac = [0; 6];
    if dir == DIR_EGRESS as u8
        && let Some(anti_spoof) = &policy.anti_spoof
    {
        flags |= META_ANTI_SPOOF;
        if anti_spoof.router {
            flags |= META_ROUTER;
        }
        mac = anti_spoof.mac.0;
    }
    DirMeta {
        generation: 0,
        default: verdict_of(this.default),
        flags,
        mac,
    }
}

fn verdict_of(action: Action) -> u8 {
    match action {
        Action::Allow => VERDICT_ALLOW,
        Action::Deny => VERDICT_DENY,
    }
}

/// A prefix with its address left-aligned in 128 bits (IPv4 in the top 32), as the trie
/// stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Prefix {
    len: u8,
    addr: u128,
}

impl Prefix {
    fn of(net: &IpNet) -> (u8, Self) {
        match net.trunc() {
            IpNet::V4(n) => (
                FAMILY_V4,
                Self {
                    len: n.prefix_len(),
                    addr: u128::from(u32::from(n.network())) << 96,
                },
            ),
            IpNet::V6(n) => (
                FAMILY_V6,
                Self {
                    len: n.prefix_len(),
                    addr: u128::from(n.network()),
                },
            ),
        }
    }

    fn in_family(net: &IpNet, family: u8) -> Option<Self> {
        let (f, p) = Self::of(net);
        (f == family).then_some(p)
    }

    /// The prefix of the first `len` bits.
    fn ancestor(self, len: u8) -> Self {
        let addr = if len == 0 {
            0
        } else {
            self.addr & (u128::MAX << (128 - u32::from(len)))
        };
        Self { len, addr }
    }

    const ROOT: Self = Self { len: 0, addr: 0 };
}

/// The verdict of a set of rules over protocols and ports: `fallback` for whatever `ports`
/// does not cover. Equal sets give the same trie data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Verdicts {
    fallback: u8,
    ports: Vec<PortBlock>,
}

/// Protocols that can carry their own verdicts, with their key space and number.
const PROTOCOLS: [(Protocol, u8, u8); 6] = [
    (Protocol::Tcp, SPACE_IP, 6),
    (Protocol::Udp, SPACE_IP, 17),
    (Protocol::Sctp, SPACE_IP, 132),
    (Protocol::Icmp, SPACE_IP, 1),
    (Protocol::Icmpv6, SPACE_IP, 58),
    (Protocol::Arp, SPACE_ARP, 0),
];

impl Verdicts {
    /// Combines the rules `matched` (indexes into `rules`): deny wins over allow for every
    /// protocol and port.
    fn of(rules: &[Rule], matched: &[usize]) -> Self {
        let any = |action: Action| {
            matched.iter().any(|&r| {
                let rule = &rules[r];
                rule.action == action
                    && (rule.ports.is_empty()
                        || rule.ports.iter().any(|m| m.protocol == Protocol::Any))
            })
        };
        let fallback = if any(Action::Deny) {
            VERDICT_DENY
        } else if any(Action::Allow) {
            VERDICT_ALLOW
        } else {
            VERDICT_NONE
        };
        let mut ports = Vec::new();
        for (protocol, space, proto) in PROTOCOLS {
            let mut deny = Vec::new();
            let mut allow = Vec::new();
            for &r in matched {
                let rule = &rules[r];
                for m in rule.ports.iter().filter(|m| m.protocol == protocol) {
                    let range = m.ports.map_or((0, u16::MAX), |p| (p.start, p.end));
                    match rule.action {
                        Action::Deny => deny.push(range),
                        Action::Allow => allow.push(range),
                    }
                }
            }
            if deny.is_empty() && allow.is_empty() {
                continue;
            }
            // "Any protocol" never covers ARP: a miss in the ARP space means no rule matched.
            let base = if space == SPACE_ARP {
                VERDICT_NONE
            } else {
                fallback
            };
            let verdict_at = |port: u16| {
                let inside =
                    |ranges: &[(u16, u16)]| ranges.iter().any(|&(s, e)| s <= port && port <= e);
                if base == VERDICT_DENY || inside(&deny) {
                    VERDICT_DENY
                } else if inside(&allow) {
                    VERDICT_ALLOW
                } else {
                    base
                }
            };
            // Verdicts only change at range boundaries: evaluate each elementary segment once.
            let mut cuts: Vec<u32> = vec![0];
            for &(s, e) in deny.iter().chain(&allow) {
                cuts.push(u32::from(s));
                cuts.push(u32::from(e) + 1);
            }
            cuts.sort_unstable();
            cuts.dedup();
            cuts.retain(|&c| c <= u32::from(u16::MAX));
            let mut segments: Vec<(u16, u16, u8)> = Vec::new();
            for (i, &start) in cuts.iter().enumerate() {
                let end = cuts
                    .get(i + 1)
                    .map_or(u32::from(u16::MAX), |&next| next - 1);
                let (start, end) = (start as u16, end as u16);
                let verdict = verdict_at(start);
                match segments.last_mut() {
                    Some(last)
                        if last.2 == verdict && u32::from(last.1) + 1 == u32::from(start) =>
                    {
                        last.1 = end;
                    }
                    _ => segments.push((start, end, verdict)),
                }
            }
            ports.extend(segments.into_iter().filter(|&(_, _, v)| v != base).map(
                |(start, end, verdict)| PortBlock {
                    space,
                    proto,
                    start,
                    end,
                    verdict,
                    pad: 0,
                },
            ));
        }
        Self { fallback, ports }
    }
}

/// Port sets too large to inline, shared by every prefix with the same port verdicts.
#[derive(Default)]
struct PortSets {
    ids: BTreeMap<Vec<PortBlock>, u32>,
}

impl PortSets {
    fn id(&mut self, ports: &[PortBlock]) -> u32 {
        let next = self.ids.len() as u32 + 1;
        *self.ids.entry(ports.to_vec()).or_insert(next)
    }

    fn emit(self, out: &mut Vec<Entry>) {
        for (blocks, id) in self.ids {
            for b in blocks {
                for (start, len) in port_prefixes(b.start, b.end) {
                    out.push(Entry {
                        prefix_len: PORT_PREFIX_BASE + len,
                        key: PolicyKey::port(id, b.space, b.proto, start),
                        value: PolicyValue {
                            verdict: b.verdict,
                            ..PolicyValue::default()
                        },
                    });
                }
            }
        }
    }
}

/// Splits `start..=end` into aligned port blocks, as (first port, prefix length).
fn port_prefixes(start: u16, end: u16) -> Vec<(u16, u32)> {
    let (mut start, end) = (u32::from(start), u32::from(end));
    let mut out = Vec::new();
    while start <= end {
        let mut size = if start == 0 {
            1 << 16
        } else {
            start.isolate_lowest_one()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        out.push((start as u16, 16 - size.trailing_zeros()));
        start += size;
    }
    out
}

/// The peer entries of one direction and family.
fn peer_entries(
    dir: u8,
    family: u8,
    rules: &[Rule],
    meta: DirMeta,
    sets: &mut PortSets,
    out: &mut Vec<Entry>,
) {
    // A term is one peer of one rule; `index` says which terms each prefix starts or excepts.
    // The root is always there: the programs rely on every lookup finding an entry.
    let mut term_rule: Vec<usize> = Vec::new();
    let mut index: HashMap<Prefix, Vec<(usize, bool)>> = HashMap::new();
    index.insert(Prefix::ROOT, Vec::new());
    for (r, rule) in rules.iter().enumerate() {
        if rule.peers.is_empty() {
            index
                .entry(Prefix::ROOT)
                .or_default()
                .push((term_rule.len(), false));
            term_rule.push(r);
            continue;
        }
        for peer in &rule.peers {
            let Some(prefix) = Prefix::in_family(&peer.cidr, family) else {
                continue;
            };
            let term = term_rule.len();
            term_rule.push(r);
            index.entry(prefix).or_default().push((term, false));
            for except in &peer.except {
                if let Some(e) = Prefix::in_family(except, family) {
                    index.entry(e).or_default().push((term, true));
                }
            }
        }
    }
    let mut prefixes: Vec<Prefix> = index.keys().copied().collect();
    prefixes.sort_unstable();
    let mut memo: HashMap<Vec<usize>, Verdicts> = HashMap::new();
    let mut resolved: HashMap<Prefix, Verdicts> = HashMap::with_capacity(prefixes.len());
    for prefix in prefixes {
        let mut inside = HashSet::new();
        let mut excepted = HashSet::new();
        for len in 0..=prefix.len {
            for &(term, is_except) in index.get(&prefix.ancestor(len)).into_iter().flatten() {
                if is_except {
                    excepted.insert(term);
                } else {
                    inside.insert(term);
                }
            }
        }
        let mut matched: Vec<usize> = inside
            .difference(&excepted)
            .map(|&t| term_rule[t])
            .collect();
        matched.sort_unstable();
        matched.dedup();
        let verdicts = memo
            .entry(matched)
            .or_insert_with_key(|matched| Verdicts::of(rules, matched))
            .clone();
        let enclosing = (0..prefix.len)
            .rev()
            .find_map(|len| resolved.get(&prefix.ancestor(len)));
        if enclosing.is_none_or(|outer| *outer != verdicts) {
            out.push(Entry {
                prefix_len: PEER_PREFIX_BASE + u32::from(prefix.len),
                key: PolicyKey::peer(dir, family, prefix.addr.to_be_bytes()),
                value: peer_value(meta, &verdicts, sets),
            });
        }
        resolved.insert(prefix, verdicts);
    }
}

/// A peer entry: the direction's meta, the fallback verdict and the port blocks (inline when
/// they fit).
fn peer_value(meta: DirMeta, verdicts: &Verdicts, sets: &mut PortSets) -> PolicyValue {
    let mut value = PolicyValue {
        meta,
        verdict: verdicts.fallback,
        ..PolicyValue::default()
    };
    if verdicts.ports.len() <= INLINE_BLOCKS {
        value.blocks = verdicts.ports.len() as u8;
        value.block[..verdicts.ports.len()].copy_from_slice(&verdicts.ports);
    } else {
        value.blocks = BLOCKS_IN_TRIE;
        value.set = sets.id(&verdicts.ports);
    }
    value
}

#[cfg(test)]
mod tests;
