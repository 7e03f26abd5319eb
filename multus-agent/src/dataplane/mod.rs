//! The eBPF dataplane: loads the TC program pair once, attaches it to interfaces inside pod
//! network namespaces, enforces each attachment's [`Policy`], and reads the per-interface
//! counters.
//!
//! Maps and TCX links are pinned (see [`pins`]), so enforcement and counters outlive the agent; a
//! new [`Dataplane`] reuses the pinned maps and swaps its programs into the pinned links.
pub mod btf;
pub mod counters;
pub mod error;
pub mod events;
pub mod flows;
pub mod lookup;
pub mod netns;
pub mod pins;
pub mod record;
pub mod sizing;
pub mod trie;

mod attach;
mod gc;
mod kfunc;
mod policy_maps;
mod sys;

use std::{collections::BTreeSet, fmt, fs, io, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
    util::KernelVersion,
};
use multus_common::{
    DIR_EGRESS, DIR_INGRESS, DROP_REASONS, DeviceEntry, DirCounters, EventBucket, EventConfig,
    EventStats, FlowBudget, IfaceKey, counter_index, globals, maps,
};
use serde::{Deserialize, Serialize};

pub use self::{
    error::{DataplaneError, Result},
    flows::FlowTableStats,
    gc::GcReport,
    pins::PinLayout,
    record::{AttachmentOwner, AttachmentRecord},
    sizing::{MapMemory, MapSizing},
};
pub use crate::policy::model::{
    Action, AntiSpoof, DirectionPolicy, MacAddr, ObjectKind, Origin, Peer, Policy, PolicyError,
    PortMatch, PortRange, Protocol, Rule,
};

/// The eBPF object built from `multus-ebpf` by this crate's build script.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/multus"));

/// How the programs hook into an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX links (kernel 6.6 and newer): pinned, multi-program aware.
    Tcx,
    /// A clsact qdisc with direct-action cls_bpf filters (older kernels).
    Clsact,
}

impl AttachMode {
    /// TCX where the kernel has it, clsact otherwise.
    pub fn detect() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Clsact,
        }
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcx" => Ok(Self::Tcx),
            "clsact" => Ok(Self::Clsact),
            other => Err(format!("{other:?} is not tcx or clsact")),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

/// Why a packet was dropped (or, in audit mode, would have been).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A deny rule matched.
    PolicyDeny,
    /// No rule matched and the direction's default is deny.
    DefaultDeny,
    /// Anti-spoofing: not the interface's own MAC or source address.
    Spoofed,
    /// Headers cut short, or not what a host on the link would act on.
    Malformed,
    /// An IPv6 extension header chain (or a stack of VLAN tags) too long to walk to its end.
    HeaderChain,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; DROP_REASONS] = [
        Self::PolicyDeny,
        Self::DefaultDeny,
        Self::Spoofed,
        Self::Malformed,
        Self::HeaderChain,
    ];

    /// The index of this reason in the counter arrays.
    pub fn index(self) -> usize {
        match self {
            Self::PolicyDeny => multus_common::DROP_POLICY_DENY,
            Self::DefaultDeny => multus_common::DROP_DEFAULT_DENY,
            Self::Spoofed => multus_common::DROP_SPOOFED,
            Self::Malformed => multus_common::DROP_MALFORMED,
            Self::HeaderChain => multus_common::DROP_HEADER_CHAIN,
        }
    }

    /// A metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::PolicyDeny => "policy_deny",
            Self::DefaultDeny => "default_deny",
            Self::Spoofed => "spoofed",
            Self::Malformed => "malformed",
            Self::HeaderChain => "header_chain",
        }
    }
}

impl From<DropReason> for usize {
    fn from(reason: DropReason) -> Self {
        reason.index()
    }
}

/// Counters of one direction of an attachment, summed over CPUs: the map's own type, read
/// through [`counters`].
pub type DirectionCounters = DirCounters;

/// Counters of an attachment, from the pod's point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    /// What the pod received (TC ingress).
    pub ingress: DirectionCounters,
    /// What the pod sent (TC egress).
    pub egress: DirectionCounters,
    /// The attachment's connection table.
    #[serde(default)]
    pub flows: FlowTableStats,
}

/// What to attach to.
#[derive(Clone, Debug)]
pub struct AttachRequest<'a> {
    /// The network namespace file of the interface.
    pub netns: &'a Path,
    /// The interface name inside that namespace.
    pub ifname: &'a str,
    /// Who the attachment belongs to.
    pub owner: AttachmentOwner,
    /// The policy to enforce from the very first packet; `None`: only count.
    pub policy: Option<&'a Policy>,
    /// Where that policy comes from (kept in the record for status and metrics).
    pub policy_source: Option<&'a str>,
}

/// The loaded programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
    attachments: BpfHashMap<MapData, IfaceKey, u32>,
    counters: counters::CounterMap,
    /// The array of policy tries (kept as a plain map: it is typed per use, see `enforce`).
    policies: Map,
    /// The array of per-attachment connection tables (see `flows`).
    flows: Map,
    flow_budgets: Array<MapData, FlowBudget>,
    devices: BpfHashMap<MapData, u64, DeviceEntry>,
    epoch: Array<MapData, u32>,
    event_config: Array<MapData, EventConfig>,
    event_buckets: Array<MapData, EventBucket>,
    event_stats: PerCpuArray<MapData, EventStats>,
    /// The drop event ring, until [`Dataplane::take_event_reader`] hands it out.
    events: Option<RingBuf<MapData>>,
    layout: PinLayout,
    mode: AttachMode,
    nr_cpus: usize,
    /// The sizes the maps have (those of the pins when a previous loader made them).
    sizing: MapSizing,
}

impl fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataplane")
            .field("layout", &self.layout)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The outcome of adopting what a previous loader left pinned.
#[derive(Debug, Default)]
pub struct Adoption {
    /// Attachments whose links now run this loader's programs.
    pub adopted: Vec<u32>,
    /// Problems met on the way (the attachment stays as it was).
    pub errors: Vec<DataplaneError>,
}

impl Dataplane {
    /// Loads the programs once, reusing maps pinned under `layout` (creating them on first use),
    /// and swaps the new programs into every TCX link a previous loader pinned there. The maps
    /// get the default [`MapSizing`].
    pub fn load(layout: PinLayout, mode: AttachMode) -> Result<(Self, Adoption)> {
        Self::load_sized(layout, mode, MapSizing::default())
    }

    /// [`Dataplane::load`] with maps sized by `sizing` when they are created. Maps a previous
    /// loader pinned keep their size (the programs' state lives in them): a new sizing takes
    /// effect once they are gone.
    pub fn load_sized(
        layout: PinLayout,
        mode: AttachMode,
        sizing: MapSizing,
    ) -> Result<(Self, Adoption)> {
        for dir in [layout.maps(), layout.links(), layout.records()] {
            fs::create_dir_all(&dir).map_err(|e| DataplaneError::io("creating", &dir, e))?;
        }
        let maps_dir = layout.maps();
        let offsets = btf::NetnsOffsets::from_kernel().map_err(DataplaneError::Btf)?;
        let sizing = match MapSizing::pinned(&maps_dir) {
            Some(pinned) if pinned != sizing.max_attachments => {
                tracing::warn!(
                    pinned,
                    configured = sizing.max_attachments,
                    "reusing pinned maps sized for another number of attachments"
                );
                MapSizing {
                    max_attachments: pinned,
                    ..sizing
                }
            }
            _ => sizing,
        };
        let mut ebpf = load_programs(&maps_dir, &offsets, &sizing)?;
        let attachments = take_map(&mut ebpf, maps::ATTACHMENTS)?;
        let counters = take_map(&mut ebpf, maps::COUNTERS)?;
        let policies = ebpf
            .take_map(maps::POLICIES)
            .ok_or(DataplaneError::MissingMap(maps::POLICIES))?;
        let flows = ebpf
            .take_map(maps::FLOWS)
            .ok_or(DataplaneError::MissingMap(maps::FLOWS))?;
        let flow_budgets = take_map(&mut ebpf, maps::FLOW_BUDGETS)?;
        let devices = take_map(&mut ebpf, maps::DEVICES)?;
        let epoch = take_map(&mut ebpf, maps::EPOCH)?;
        // The rate limit stays what the agent set (zero, no events, until one does): a command
        // loading the dataplane beside the agent must not change it.
        let event_config: Array<MapData, EventConfig> = take_map(&mut ebpf, maps::EVENT_CONFIG)?;
        let event_buckets = take_map(&mut ebpf, maps::EVENT_BUCKETS)?;
        let event_stats = take_map(&mut ebpf, maps::EVENT_STATS)?;
        let events = take_map(&mut ebpf, maps::EVENTS)?;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(op, e)| DataplaneError::io(op, "/sys/devices/system/cpu/possible", e))?
            .get() as usize;
        let mut dataplane = Self {
            ebpf,
            attachments,
            counters,
            policies,
            flows,
            flow_budgets,
            devices,
            epoch,
            event_config,
            event_buckets,
            event_stats,
            events: Some(events),
            layout,
            mode,
            nr_cpus,
            sizing,
        };
        let adoption = dataplane.adopt();
        Ok((dataplane, adoption))
    }

    /// The sizes the maps were created with.
    pub fn sizing(&self) -> MapSizing {
        self.sizing
    }

    /// The attach mode used for new attachments.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    fn adopt(&mut self) -> Adoption {
        let mut adoption = Adoption::default();
        let records = match AttachmentRecord::load_all(&self.layout.records()) {
            Ok((records, errors)) => {
                adoption.errors.extend(errors);
                records
            }
            Err(e) => {
                adoption.errors.push(e);
                return adoption;
            }
        };
        for record in records.iter().filter(|r| r.mode == AttachMode::Tcx) {
            let mut ok = true;
            for (_, name, dir) in attach::HOOKS {
                let path = self.layout.link(record.id, dir);
                if let Err(e) = attach::adopt_link(&mut self.ebpf, &path, name) {
                    adoption.errors.push(e);
                    ok = false;
                }
            }
            if ok {
                adoption.adopted.push(record.id);
            }
        }
        adoption
    }

    /// Attaches the program pair to `req.ifname` inside `req.netns`, counting from zero, with
    /// `req.policy` in force before the programs see the first packet.
    pub fn attach(&mut self, req: &AttachRequest<'_>) -> Result<AttachmentRecord> {
        let mut records = self.attach_many(std::slice::from_ref(req))?;
        // One record per request, in request order.
        Ok(records.swap_remove(0))
    }

    /// Attaches the program pair to every requested interface, or to none: when anything fails,
    /// whatever the call attached is detached again before the error returns. Records come back
    /// in request order.
    ///
    /// The namespaces are entered and the links created concurrently, one thread per interface
    /// and hook, so the kernel's waits of one batch overlap where the kernel allows it. Per
    /// interface the order stays: record, policy, map entry and epoch bump, then the programs,
    /// then their pins; so the very first packet is counted and policed.
    pub fn attach_many(&mut self, reqs: &[AttachRequest<'_>]) -> Result<Vec<AttachmentRecord>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        // A bad policy fails before anything exists.
        let compiled = reqs
            .iter()
            .map(|req| req.policy.map(trie::build).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(DataplaneError::Policy)?;
        let found = netns::run_each(reqs.iter().map(|req| (req.netns, || locate(req))));
        let found = all_or_errors(found)?;
        let mut seen = BTreeSet::new();
        for (req, key) in reqs.iter().zip(&found) {
            if let Ok(id) = self.attachments.get(key, 0) {
                return Err(DataplaneError::AlreadyAttached {
                    ifname: req.ifname.to_owned(),
                    netns: req.netns.to_owned(),
                    id,
                });
            }
            if !seen.insert((key.netns_cookie, key.ifindex)) {
                return Err(DataplaneError::Duplicate {
                    ifname: req.ifname.to_owned(),
                    netns: req.netns.to_owned(),
                });
            }
        }
        let ids = self.allocate_ids(reqs.len())?;
        let records: Vec<AttachmentRecord> = reqs
            .iter()
            .zip(&found)
            .zip(ids)
            .map(|((req, key), id)| AttachmentRecord {
                id,
                netns: req.netns.to_owned(),
                ifname: req.ifname.to_owned(),
                ifindex: key.ifindex,
                netns_cookie: key.netns_cookie,
                mode: self.mode,
                owner: req.owner.clone(),
                policy: req.policy.cloned(),
                policy_source: req.policy_source.map(str::to_owned),
            })
            .collect();
        if let Err(e) = self.install(&records, &found, compiled) {
            let mut errors = vec![e];
            for record in &records {
                errors.extend(self.teardown(record));
            }
            return Err(flatten(errors));
        }
        Ok(records)
    }

    fn install(
        &mut self,
        records: &[AttachmentRecord],
        keys: &[IfaceKey],
        policies: Vec<Option<trie::TrieEntries>>,
    ) -> Result<()> {
        // Records first: whatever happens next, a restart knows these ids exist and can clean
        // them.
        for record in records {
            record.save(&self.layout.record(record.id))?;
        }
        // The policies and map entries go in before the programs, so the very first packet is
        // counted and policed.
        for ((record, key), policy) in records.iter().zip(keys).zip(policies) {
            self.reset_counters(record.id)?;
            if let Some(policy) = policy {
                self.install_policy(record.id, policy)?;
            }
            self.attachments
                .insert(key, &record.id, 0)
                .map_err(|e| map_err(maps::ATTACHMENTS, e))?;
        }
        // Before the first packet: a cached address of a freed device may be one of these now.
        self.bump_epoch()?;
        if self.mode == AttachMode::Tcx {
            for record in records {
                let dir = self.layout.link_dir(record.id);
                fs::create_dir_all(&dir).map_err(|e| DataplaneError::io("creating", &dir, e))?;
            }
        }
        let targets: Vec<attach::Target<'_>> = records
            .iter()
            .map(|record| attach::Target {
                netns: &record.netns,
                ifname: &record.ifname,
                ifindex: record.ifindex,
                id: record.id,
            })
            .collect();
        let errors = attach::attach_all(&mut self.ebpf, &self.layout, self.mode, &targets)?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(flatten(errors))
        }
    }

    /// Detaches attachment `id` and removes its pins, map entries and record. Keeps going past
    /// errors (a netns that is gone took its filters with it) and reports them all.
    pub fn detach(&mut self, id: u32) -> Result<()> {
        let record = self.attachment(id)?;
        let errors = self.teardown(&record);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(flatten(errors))
        }
    }

    pub(super) fn teardown(&mut self, record: &AttachmentRecord) -> Vec<DataplaneError> {
        let mut errors = Vec::new();
        match record.mode {
            AttachMode::Tcx => {
                errors.extend(attach::detach_pair(&self.layout, record.id, record.mode, 0));
            }
            AttachMode::Clsact => {
                let result = netns::run_in(&record.netns, || {
                    // A path that now names another namespace must not lose its filters.
                    let cookie = netns::current_cookie().map_err(|e| {
                        DataplaneError::io("reading SO_NETNS_COOKIE in", &record.netns, e)
                    })?;
                    if cookie != record.netns_cookie {
                        return Ok(Vec::new());
                    }
                    Ok(attach::detach_pair(
                        &self.layout,
                        record.id,
                        record.mode,
                        record.ifindex,
                    ))
                });
                match result {
                    Ok(errs) => errors.extend(errs),
                    // The namespace is gone, and its interfaces and filters with it.
                    Err(DataplaneError::Netns { source, .. })
                        if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        let key = IfaceKey {
            netns_cookie: record.netns_cookie,
            ifindex: record.ifindex,
            pad: 0,
        };
        match self.attachments.remove(&key) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => errors.push(map_err(maps::ATTACHMENTS, e)),
        }
        if let Err(e) = self.bump_epoch() {
            errors.push(e);
        }
        if let Err(e) = self.forget_devices(|id| id == record.id) {
            errors.push(e);
        }
        // No program looks the id up any more: its policy and flows can go.
        if let Err(e) = self.remove_policy(record.id) {
            errors.push(e);
        }
        if let Err(e) = self.forget_flows(record.id) {
            errors.push(e);
        }
        let link_dir = self.layout.link_dir(record.id);
        match fs::remove_dir(&link_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(DataplaneError::io("removing", &link_dir, e)),
        }
        if errors.is_empty() {
            let path = self.layout.record(record.id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Never written (a batch rolled back), or its directory is not one: no record.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => errors.push(DataplaneError::io("removing", &path, e)),
            }
        }
        errors
    }

    /// The attachment ids the programs can currently find (from the kernel map, not the
    /// records).
    pub fn attached_ids(&self) -> Result<BTreeSet<u32>> {
        let mut ids = BTreeSet::new();
        for entry in &self.attachments {
            let (_, id) = entry.map_err(|e| map_err(maps::ATTACHMENTS, e))?;
            ids.insert(id);
        }
        Ok(ids)
    }

    /// Every attachment this dataplane knows, in id order.
    pub fn attachments(&self) -> Result<Vec<AttachmentRecord>> {
        Ok(AttachmentRecord::load_all(&self.layout.records())?.0)
    }

    /// The record of attachment `id`.
    pub fn attachment(&self, id: u32) -> Result<AttachmentRecord> {
        match AttachmentRecord::load(&self.layout.record(id)) {
            Err(DataplaneError::Io(e)) if e.source.kind() == io::ErrorKind::NotFound => {
                Err(DataplaneError::UnknownAttachment(id))
            }
            other => other,
        }
    }

    /// The counters of attachment `id`, summed over CPUs.
    pub fn counters(&self, id: u32) -> Result<InterfaceCounters> {
        if id == 0 || id >= self.sizing.max_attachments {
            return Err(DataplaneError::UnknownAttachment(id));
        }
        let mut out = counters::read(&self.counters, id)?;
        out.flows = self.flow_table_stats(id)?;
        Ok(out)
    }

    /// Sets the per-attachment rate limit of drop events (rate 0: no events).
    pub fn set_event_limit(&mut self, limit: events::EventLimit) -> Result<()> {
        self.event_config
            .set(0, &limit.to_config(), 0)
            .map_err(|e| map_err(maps::EVENT_CONFIG, e))
    }

    /// The drop event ring's reader; `None` once taken (there is one reader per ring).
    pub fn take_event_reader(&mut self) -> Option<events::EventReader> {
        self.events.take().map(events::EventReader::new)
    }

    /// Drop events of attachment `id` emitted, suppressed by the rate limit, and lost.
    pub fn event_counts(&self, id: u32) -> Result<events::EventCounts> {
        if id == 0 || id >= self.sizing.max_attachments {
            return Err(DataplaneError::UnknownAttachment(id));
        }
        let values = self
            .event_stats
            .get(&id, 0)
            .map_err(|e| map_err(maps::EVENT_STATS, e))?;
        let mut out = events::EventCounts::default();
        for cpu in values.iter() {
            out.emitted += cpu.emitted;
            out.suppressed += cpu.suppressed;
            out.lost += cpu.lost;
        }
        Ok(out)
    }

    fn reset_counters(&mut self, id: u32) -> Result<()> {
        let zeros = PerCpuValues::try_from(vec![EventStats::default(); self.nr_cpus])
            .map_err(|e| DataplaneError::io("sizing per-CPU values for", maps::EVENT_STATS, e))?;
        self.event_stats
            .set(id, zeros, 0)
            .map_err(|e| map_err(maps::EVENT_STATS, e))?;
        self.event_buckets
            .set(id, &EventBucket::default(), 0)
            .map_err(|e| map_err(maps::EVENT_BUCKETS, e))?;
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let zeros = PerCpuValues::try_from(vec![DirCounters::default(); self.nr_cpus])
                .map_err(|e| DataplaneError::io("sizing per-CPU values for", maps::COUNTERS, e))?;
            self.counters
                .set(counter_index(id, direction), zeros, 0)
                .map_err(|e| map_err(maps::COUNTERS, e))?;
        }
        Ok(())
    }

    /// Invalidates every entry of the programs' device cache (see `multus_common::DeviceEntry`).
    pub(crate) fn bump_epoch(&mut self) -> Result<()> {
        let now = self.epoch.get(&0, 0).map_err(|e| map_err(maps::EPOCH, e))?;
        self.epoch
            .set(0, &now.wrapping_add(1), 0)
            .map_err(|e| map_err(maps::EPOCH, e))
    }

    /// Removes the device cache entries of the ids `gone` selects.
    pub(crate) fn forget_devices(&mut self, gone: impl Fn(u32) -> bool) -> Result<()> {
        let mut stale = Vec::new();
        for entry in &self.devices {
            let (dev, value) = entry.map_err(|e| map_err(maps::DEVICES, e))?;
            if gone(value.id) {
                stale.push(dev);
            }
        }
        for dev in stale {
            match self.devices.remove(&dev) {
                Ok(()) => {}
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(map_err(maps::DEVICES, e)),
            }
        }
        Ok(())
    }

    /// `n` distinct ids that neither the attachment map nor a record uses, lowest first.
    fn allocate_ids(&self, n: usize) -> Result<Vec<u32>> {
        let mut used = BTreeSet::new();
        for entry in &self.attachments {
            let (_, id) = entry.map_err(|e| map_err(maps::ATTACHMENTS, e))?;
            used.insert(id);
        }
        if let Ok(entries) = fs::read_dir(self.layout.records()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(id) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    used.insert(id);
                }
            }
        }
        let ids: Vec<u32> = (1..self.sizing.max_attachments)
            .filter(|id| !used.contains(id))
            .take(n)
            .collect();
        if ids.len() < n {
            return Err(DataplaneError::IdsExhausted(self.sizing.max_attachments));
        }
        Ok(ids)
    }
}

/// A program attached with TCX, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcxProgram {
    /// `ingress` or `egress`.
    pub hook: String,
    /// The program's name.
    pub name: String,
    /// The kernel's program id.
    pub id: u32,
    /// Total run time while `kernel.bpf_stats_enabled` was on, in nanoseconds.
    pub run_time_ns: u64,
    /// Runs counted while `kernel.bpf_stats_enabled` was on.
    pub run_count: u64,
}

/// Every TCX program attached to `ifname` in `netns` (ours or not), ingress hook first: a check
/// that does not trust our own records, and the source of per-program run-time statistics.
pub fn tcx_programs(netns: &Path, ifname: &str) -> Result<Vec<TcxProgram>> {
    netns::run_in(netns, || {
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).map_err(|_| DataplaneError::NoInterface {
                ifname: ifname.to_owned(),
                netns: netns.to_owned(),
            })?;
        let mut programs = Vec::new();
        for (hook, name, dir) in attach::HOOKS {
            let (_, infos) =
                aya::programs::SchedClassifier::query_tcx(ifindex, hook).map_err(|source| {
                    DataplaneError::Program {
                        name,
                        source: Box::new(source),
                    }
                })?;
            programs.extend(infos.iter().map(|info| TcxProgram {
                hook: dir.to_owned(),
                name: info.name_as_str().unwrap_or_default().to_owned(),
                id: info.id(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                run_count: info.run_count(),
            }));
        }
        Ok(programs)
    })
}

/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;
/// `ARPHRD_LOOPBACK`: its frames carry an Ethernet header too (zero addresses).
const ARPHRD_LOOPBACK: u16 = 772;

/// The node-wide identity of `req`'s interface; runs inside `req.netns`.
fn locate(req: &AttachRequest<'_>) -> Result<IfaceKey> {
    let ifindex =
        nix::net::if_::if_nametoindex(req.ifname).map_err(|_| DataplaneError::NoInterface {
            ifname: req.ifname.to_owned(),
            netns: req.netns.to_owned(),
        })?;
    // Fail closed before anything exists: on another link type the programs would read every
    // packet at the wrong offsets.
    let hw_type = sys::hardware_type(req.ifname)
        .map_err(|e| DataplaneError::io("reading the hardware type in", req.netns, e))?;
    if hw_type != ARPHRD_ETHER && hw_type != ARPHRD_LOOPBACK {
        return Err(DataplaneError::NotEthernet {
            ifname: req.ifname.to_owned(),
            netns: req.netns.to_owned(),
            hw_type,
        });
    }
    let netns_cookie = netns::current_cookie()
        .map_err(|e| DataplaneError::io("reading SO_NETNS_COOKIE in", req.netns, e))?;
    Ok(IfaceKey {
        netns_cookie,
        ifindex,
        pad: 0,
    })
}

/// Every value, or every error.
fn all_or_errors<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    let mut values = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(v) => values.push(v),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(flatten(errors))
    }
}

/// Loads the embedded object, patched for the running kernel, with its maps pinned in (or taken
/// from) `maps_dir`, and has the kernel verify both programs.
fn load_programs(maps_dir: &Path, offsets: &btf::NetnsOffsets, sizing: &MapSizing) -> Result<Ebpf> {
    let object = kfunc::patch(EBPF_OBJECT, offsets.cast_to_kern_ctx)?;
    let mut loader = EbpfLoader::new();
    for (name, entries) in sizing.map_entries() {
        loader.map_max_entries(name, entries);
    }
    let mut ebpf = loader
        .default_map_pin_directory(maps_dir)
        .override_global(globals::SKB_DEV, &offsets.skb_dev, true)
        .override_global(globals::DEV_NET, &offsets.dev_net, true)
        .override_global(globals::NET_COOKIE, &offsets.net_cookie, true)
        .load(object.bytes())
        .map_err(|source| DataplaneError::Load {
            pin_dir: maps_dir.to_owned(),
            source: Box::new(source),
        })?;
    for (_, name, _) in attach::HOOKS {
        attach::program(&mut ebpf, name)?
            .load()
            .map_err(|source| DataplaneError::Program {
                name,
                source: Box::new(source),
            })?;
    }
    Ok(ebpf)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(|e| map_err(name, e))
}

/// Whether a map operation failed only because the key is not there: aya reports a lookup's miss
/// as `KeyNotFound`, a delete's as the syscall's ENOENT.
pub(crate) fn is_absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

pub(crate) fn map_err(name: &'static str, e: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Map {
        name,
        source: Box::new(e),
    }
}

fn flatten(mut errors: Vec<DataplaneError>) -> DataplaneError {
    if errors.len() == 1 {
        errors.remove(0)
    } else {
        DataplaneError::Multiple(errors)
    }
}
