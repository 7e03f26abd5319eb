//! An attachment's installed policy trie, read back from its pin: the verdict the programs would
//! give a packet, from the very entries they look up, without sending one or running a program.
//! It follows the programs' decision (multus-ebpf's `policy::decide`) for the opening packet of
//! a flow: replies of allowed flows, anti-spoofing and header checks are left out.
use std::net::IpAddr;

use aya::maps::{ArrayOfMaps, IterableMap as _, LpmTrie, Map, MapData, lpm_trie::Key};
use multus_common::{
    DIR_EGRESS, DIR_INGRESS, PolicyKey, PolicyValue, maps,
    policy::{
        BLOCKS_IN_TRIE, FAMILY_V4, FAMILY_V6, META_ARP_RULES, META_AUDIT, PEER_PREFIX_BASE,
        PORT_PREFIX_BASE, SPACE_ARP, SPACE_IP, VERDICT_ALLOW, VERDICT_DENY, VERDICT_NONE,
        family_bits,
    },
};

use super::{DropReason, PinLayout, error::Result, map_err};
use crate::policy::eval::{Direction, Traffic};

type PolicyTrie = LpmTrie<MapData, PolicyKey, PolicyValue>;

/// What the installed entries say about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledVerdict {
    /// `None`: it passes; else why it is dropped.
    pub drop: Option<DropReason>,
    /// A rule decided (not the direction's default, nor the pass of ARP or neighbour discovery
    /// that no rule names).
    pub by_rule: bool,
    /// The direction is in audit mode: a drop is only counted, the packet passes.
    pub audit: bool,
}

/// One attachment's policy trie as installed.
pub struct InstalledPolicy {
    trie: PolicyTrie,
    generation: u32,
}

impl std::fmt::Debug for InstalledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstalledPolicy")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl InstalledPolicy {
    /// Opens attachment `id`'s trie from the pinned array of policies under `layout`; `None`
    /// when the attachment has no policy installed.
    pub fn open(layout: &PinLayout, id: u32) -> Result<Option<Self>> {
        let name = maps::POLICIES;
        let data = MapData::from_pin(layout.maps().join(name)).map_err(|e| map_err(name, e))?;
        let map = Map::from_map_data(data).map_err(|e| map_err(name, e))?;
        let outer: ArrayOfMaps<MapData, PolicyTrie> =
            ArrayOfMaps::try_from(map).map_err(|e| map_err(name, e))?;
        let trie = match outer.get(&id, 0) {
            Ok(trie) => trie,
            Err(e) if super::is_absent(&e) => return Ok(None),
            Err(e) => return Err(map_err(name, e)),
        };
        let generation = trie.map().info().map_err(|e| map_err(name, e))?.id();
        Ok(Some(Self { trie, generation }))
    }

    /// The policy's generation (the trie's map id), as the programs stamp it on flows.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The verdict for the opening packet of a flow in `direction` with the other end at
    /// `peer`.
    pub fn verdict(
        &self,
        direction: Direction,
        peer: IpAddr,
        traffic: Traffic,
    ) -> Result<InstalledVerdict> {
        let dir = match direction {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
        } as u8;
        let (family, addr) = match peer {
            IpAddr::V4(a) => {
                let mut out = [0; 16];
                out[..4].copy_from_slice(&a.octets());
                (FAMILY_V4, out)
            }
            IpAddr::V6(a) => (FAMILY_V6, a.octets()),
        };
        let key = Key::new(
            PEER_PREFIX_BASE + family_bits(family),
            PolicyKey::peer(dir, family, addr),
        );
        let pass = InstalledVerdict {
            drop: None,
            by_rule: false,
            audit: false,
        };
        // Every direction and family has a /0 entry; a miss means no opinion, as in the programs.
        let Some(entry) = self.get(&key)? else {
            return Ok(pass);
        };
        let audit = entry.meta.flags & META_AUDIT != 0;
        let denied = |reason| InstalledVerdict {
            drop: Some(reason),
            by_rule: reason == DropReason::PolicyDeny,
            audit,
        };
        if traffic == Traffic::Arp {
            let denies = entry.meta.flags & META_ARP_RULES != 0
                && self.port_verdict(&entry, SPACE_ARP, 0, 0)? == VERDICT_DENY;
            return Ok(if denies {
                denied(DropReason::PolicyDeny)
            } else {
                pass
            });
        }
        let (proto, port) = match traffic {
            Traffic::Tcp(p) => (6, p),
            Traffic::Udp(p) => (17, p),
            Traffic::Sctp(p) => (132, p),
            Traffic::Icmp => (1, 0),
            Traffic::Icmpv6 | Traffic::NeighbourDiscovery => (58, 0),
            Traffic::Other(n) => (n, 0),
            Traffic::Arp => (0, 0),
        };
        Ok(match self.port_verdict(&entry, SPACE_IP, proto, port)? {
            VERDICT_ALLOW => InstalledVerdict {
                by_rule: true,
                ..pass
            },
            VERDICT_DENY => denied(DropReason::PolicyDeny),
            _ if traffic == Traffic::NeighbourDiscovery => pass,
            _ if entry.meta.default == VERDICT_ALLOW => pass,
            _ => denied(DropReason::DefaultDeny),
        })
    }

    fn get(&self, key: &Key<PolicyKey>) -> Result<Option<PolicyValue>> {
        match self.trie.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(e) if super::is_absent(&e) => Ok(None),
            Err(e) => Err(map_err(maps::POLICIES, e)),
        }
    }

    /// The verdict of the peer entry's port blocks, inline or in the trie's port set.
    fn port_verdict(&self, entry: &PolicyValue, space: u8, proto: u8, port: u16) -> Result<u8> {
        // "Any protocol" never covers ARP: without a block naming ARP, no rule matched.
        let fallback = if space == SPACE_ARP {
            VERDICT_NONE
        } else {
            entry.verdict
        };
        if entry.blocks == BLOCKS_IN_TRIE {
            let key = Key::new(
                PORT_PREFIX_BASE + 16,
                PolicyKey::port(entry.set, space, proto, port),
            );
            return Ok(self.get(&key)?.map_or(fallback, |p| p.verdict));
        }
        let blocks = &entry.block[..usize::from(entry.blocks).min(entry.block.len())];
        Ok(blocks
            .iter()
            .find(|b| b.space == space && b.proto == proto && b.start <= port && port <= b.end)
            .map_or(fallback, |b| b.verdict))
    }
}
