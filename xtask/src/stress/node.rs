//! The stress node: an [`AgentNode`] with the two secondary networks every stress pod asks for,
//! an agent tuned for bursts, and the checks that nothing was left behind.
use serde_json::{Value, json};

pub use crate::agent_node::{AgentNode as StressNode, Outcome, Source};
use multus_testkit::Netns;

/// The secondary networks every stress pod asks for.
pub const NETWORKS: &str = "mv,br";

/// The stress node for run `tag` (IPv4 only).
pub fn new(bin: std::path::PathBuf, tag: &str) -> anyhow::Result<StressNode> {
    let mut node = StressNode::new(bin, &format!("stress-{tag}"), "snd", false)?;
    // Temp files of killed writers are swept every second.
    node.agent_keys
        .insert("reconcileIntervalSeconds".into(), json!(1));
    // Bursts of 80: let more of them run at once than the default 4.
    node.agent_keys
        .insert("requestConcurrency".into(), json!(8));
    Ok(node)
}

/// What the stress run asks of its node beyond running the binaries.
pub trait StressChecks {
    /// The two secondary networks: a macvlan on `vpar` and a bridge of its own.
    fn nad_configs(&self) -> [(&'static str, Value); 2];
    /// Everything a pod could leave behind on this node, as readable lines; empty when clean.
    /// `base_links` are the node's own links (the parent, the bridge once created).
    fn leftovers(&self, base_links: &[String]) -> Vec<String>;
    /// host-local leases (files named like an address).
    fn leases(&self) -> Vec<String>;
}

impl StressChecks for StressNode {
    fn nad_configs(&self) -> [(&'static str, Value); 2] {
        [
            (
                "mv",
                json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                       "mode": "bridge", "ipam": self.ipam("192.0.2.0/24")}),
            ),
            (
                "br",
                json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "sbr1",
                       "ipam": self.ipam("198.51.100.0/24")}),
            ),
        ]
    }

    fn leftovers(&self, base_links: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for lease in self.leases() {
            out.push(format!("lease {lease}"));
        }
        for link in node_links(&self.netns) {
            if !base_links.contains(&link) {
                out.push(format!("link {link} in the node"));
            }
        }
        for pin in self.bpffs.entries() {
            if !pin.starts_with("maps") {
                out.push(format!("pin {}", pin.display()));
            }
        }
        for (dir, what) in [
            (self.path("cache"), "cache"),
            (self.path("cache").join("results"), "cache result"),
            (self.state.join("attachments"), "record or temp file"),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(format!("{what} {}", e.path().display()));
                }
            }
        }
        if self.agent_pid().is_some() {
            match self.metric("multus_agent_attached_interfaces") {
                Ok(n) if n > 0.0 => out.push(format!("{n} map entries (attached interfaces)")),
                Ok(_) => {}
                Err(e) => out.push(format!("scrape: {e}")),
            }
        }
        out
    }

    fn leases(&self) -> Vec<String> {
        let mut out: Vec<String> = multus_testkit::ipam::host_local_leases(&self.path("ipam"))
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        out.sort();
        out
    }
}

/// Link names in a namespace.
pub fn node_links(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "link", "show"]);
    let mut names: Vec<String> = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}
