//! Uniquely named network namespaces and bpffs directories that clean up after themselves.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::cmd::{CmdError, run, run_ok};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `prefix` + pid + a per-process counter, short enough for an interface name (15 bytes) when the
/// prefix has at most 4 characters.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id())
}

/// A network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `prefix<pid><n>` with its loopback up.
    #[track_caller]
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        run_ok("ip", ["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, as a runtime passes it in `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, CmdError> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", full)
    }

    /// Runs `ip ARGS` inside the namespace; a failure stops the test.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok("ip", full)
    }

    /// Sets a sysctl inside the namespace.
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        if let Err(e) = self.exec("sysctl", &["-qw", &format!("{key}={value}")]) {
            panic!("{e}");
        }
    }

    /// Turns IPv6 off in the namespace: no neighbour or MLD chatter spoils exact counts.
    #[track_caller]
    pub fn disable_ipv6(&self) {
        self.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        self.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    }

    /// Adds the veth pair `vpar`/`vpeer`, both up: the parent of a test node's macvlans, which
    /// leads nowhere outside the namespace.
    #[track_caller]
    pub fn add_veth_parent(&self) {
        self.ip(&[
            "link", "add", "vpar", "type", "veth", "peer", "name", "vpeer",
        ]);
        self.ip(&["link", "set", "vpar", "up"]);
        self.ip(&["link", "set", "vpeer", "up"]);
    }

    /// The names of the namespace's links, sorted.
    #[track_caller]
    pub fn link_names(&self) -> Vec<String> {
        let out = self.ip(&["-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`ip -j link show` in {}: {e}: {out}", self.name));
        let mut names: Vec<String> = links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", ["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A directory of our own on bpffs, removed with everything pinned in it on drop.
#[derive(Debug)]
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    /// Creates `/sys/fs/bpf/<prefix><pid><n>`, mounting bpffs first if it is not mounted.
    #[track_caller]
    pub fn new(prefix: &str) -> Self {
        let base = Path::new("/sys/fs/bpf");
        if !is_bpffs(base) {
            run_ok("mount", ["-t", "bpf", "bpf", "/sys/fs/bpf"]);
        }
        let path = base.join(unique_name(prefix));
        if let Err(e) = std::fs::create_dir(&path) {
            panic!("creating {}: {e}", path.display());
        }
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file (pin) below the directory, relative to it.
    pub fn entries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path, &self.path, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_owned());
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next();
            f.next() == path.to_str() && f.next() == Some("bpf")
        })
    })
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}
