//! Garbage collection of attachments whose interface is gone.
//!
//! A pod's namespace can disappear without a CNI DEL reaching us (node reboot of the runtime,
//! crashed agent): its interfaces go with it, and pinned TCX links stay behind, defunct. `gc`
//! finds such attachments and removes everything they left: pins, map entries, policy, flows and
//! the record. It also sweeps map entries, policies and link pins that no record accounts for.
use std::{collections::BTreeSet, fs, io};

use super::{
    AttachMode, Dataplane,
    attach::{self, HOOKS},
    error::{DataplaneError, Result},
    is_absent, map_err, netns,
    record::AttachmentRecord,
    sys,
};

/// What [`Dataplane::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Attachments removed because their interface is gone.
    pub removed: Vec<u32>,
    /// Problems met; the attachments concerned were left as they were.
    pub errors: Vec<DataplaneError>,
}

impl Dataplane {
    /// Removes every attachment whose namespace is gone (or whose namespace path now names another
    /// namespace), whose interface no longer exists, or whose TCX link is defunct; then removes
    /// leftovers of ids that have no record.
    pub fn gc(&mut self) -> GcReport {
        let mut report = GcReport::default();
        let records = match AttachmentRecord::load_all(&self.layout.records()) {
            Ok((records, errors)) => {
                report.errors.extend(errors);
                records
            }
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };
        let mut keep = BTreeSet::new();
        for record in records {
            match self.is_alive(&record) {
                Ok(true) => {
                    keep.insert(record.id);
                }
                Ok(false) => {
                    let errors = self.teardown(&record);
                    if errors.is_empty() {
                        report.removed.push(record.id);
                    } else {
                        report.errors.extend(errors);
                        keep.insert(record.id);
                    }
                }
                Err(e) => {
                    report.errors.push(e);
                    keep.insert(record.id);
                }
            }
        }
        if let Err(e) = self.sweep(&keep) {
            report.errors.push(e);
        }
        report
    }

    /// Whether `record` still stands as recorded: its namespace file opens to the same
    /// namespace (cookie), its interface name has the recorded index, and (TCX) both link pins
    /// still hold a live link on that index.
    pub fn is_alive(&self, record: &AttachmentRecord) -> Result<bool> {
        let probe = netns::run_in(&record.netns, || {
            let cookie = netns::current_cookie()
                .map_err(|e| DataplaneError::io("reading SO_NETNS_COOKIE in", &record.netns, e))?;
            let present = nix::net::if_::if_nametoindex(record.ifname.as_str())
                .is_ok_and(|index| index == record.ifindex);
            Ok((cookie, present))
        });
        match probe {
            Ok((cookie, present)) if cookie == record.netns_cookie && present => {}
            Ok(_) => return Ok(false),
            Err(DataplaneError::Netns { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        if record.mode == AttachMode::Tcx {
            for (_, _, dir) in HOOKS {
                let pin = self.layout.link(record.id, dir);
                match sys::tcx_link_ifindex(&pin) {
                    Ok(ifindex) if ifindex == record.ifindex => {}
                    // Defunct (0), or the pin is missing: the attachment is broken either way.
                    Ok(_) => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(DataplaneError::io("querying link", pin, e)),
                }
            }
        }
        Ok(true)
    }

    /// Removes map entries, policies, flows and link pins of ids outside `keep`.
    fn sweep(&mut self, keep: &BTreeSet<u32>) -> Result<()> {
        let mut stale = Vec::new();
        for entry in &self.attachments {
            let (key, id) = entry.map_err(|e| map_err(multus_common::maps::ATTACHMENTS, e))?;
            if !keep.contains(&id) {
                stale.push(key);
            }
        }
        for key in stale {
            match self.attachments.remove(&key) {
                Ok(()) => {}
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(map_err(multus_common::maps::ATTACHMENTS, e)),
            }
        }
        self.bump_epoch()?;
        self.forget_devices(|id| !keep.contains(&id))?;
        for id in (1..self.sizing.max_attachments).filter(|id| !keep.contains(id)) {
            self.remove_policy(id)?;
            self.forget_flows(id)?;
        }
        let links = self.layout.links();
        let entries = match fs::read_dir(&links) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(DataplaneError::io("listing", &links, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| DataplaneError::io("listing", &links, e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if keep.contains(&id) {
                continue;
            }
            for (_, _, dir) in HOOKS {
                attach::release(&self.layout.link(id, dir))?;
            }
            let dir = self.layout.link_dir(id);
            fs::remove_dir(&dir).map_err(|e| DataplaneError::io("removing", &dir, e))?;
        }
        Ok(())
    }
}
