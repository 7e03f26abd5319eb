//! Where the agent's dataplane keeps its state: bpffs pins for maps and links, and one JSON
//! record per attachment in a state directory (bpffs holds only BPF objects).
//!
//! ```text
//! <bpffs root>/maps/MULTUS_ATTACH, MULTUS_COUNTERS, ...   maps, shared by every loader
//! <bpffs root>/links/<id>/ingress, egress                 TCX links, keep enforcing without us
//! <state dir>/attachments/<id>.json                       what each id is attached to
//! ```
//!
//! The agent pins and writes here; the shim's DEL fallback unpins a container's links here when
//! the agent is down; `multus-agent status` reads here.
use std::path::{Path, PathBuf};

/// Default bpffs directory of the agent's dataplane pins.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/multus";
/// Default directory of the agent's dataplane records (tmpfs).
pub const DEFAULT_DATAPLANE_STATE_DIR: &str = "/run/multus/dataplane";
/// Pin name of an attachment's ingress link, in its link directory.
pub const INGRESS_LINK: &str = "ingress";
/// Pin name of an attachment's egress link, in its link directory.
pub const EGRESS_LINK: &str = "egress";
/// Every link pin of an attachment.
pub const LINK_DIRECTIONS: [&str; 2] = [INGRESS_LINK, EGRESS_LINK];

/// Paths of one dataplane instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
    state: PathBuf,
}

impl PinLayout {
    /// A layout under the bpffs directory `root` with records under `state`.
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state: state.into(),
        }
    }

    /// The bpffs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the pinned maps.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Directory of all pinned links.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Directory of one attachment's links.
    pub fn link_dir(&self, id: u32) -> PathBuf {
        self.links().join(id.to_string())
    }

    /// Pin path of one attachment's link for a direction (`ingress` or `egress`).
    pub fn link(&self, id: u32, direction: &str) -> PathBuf {
        self.link_dir(id).join(direction)
    }

    /// Directory of the attachment records.
    pub fn records(&self) -> PathBuf {
        self.state.join("attachments")
    }

    /// Record file of one attachment.
    pub fn record(&self, id: u32) -> PathBuf {
        self.records().join(format!("{id}.json"))
    }
}

impl Default for PinLayout {
    /// The agent's default directories.
    fn default() -> Self {
        Self::new(DEFAULT_BPFFS_DIR, DEFAULT_DATAPLANE_STATE_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = PinLayout::new("/b", "/s");
        assert_eq!(l.link(7, "egress"), Path::new("/b/links/7/egress"));
        assert_eq!(l.maps(), Path::new("/b/maps"));
        assert_eq!(l.record(7), Path::new("/s/attachments/7.json"));
        assert_eq!(PinLayout::default().root(), Path::new(DEFAULT_BPFFS_DIR));
    }
}
