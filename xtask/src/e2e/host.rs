//! What the cluster changes on the host, and how it is put back: links carrying the
//! cluster's addresses, the node directories the product and the runtime write into, mounts
//! under the cluster's directory, and the runtime's `cni-*` network namespaces.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::run;
use crate::shell::note;

/// A link of the host (with a /32 address when given), deleted on drop: one end of a veth pair
/// whose other end is up too, so the link has carrier (the kernel may lack the dummy type).
#[derive(Debug)]
pub struct HostLink {
    name: String,
}

impl HostLink {
    /// Creates `name` (replacing a leftover of an interrupted run) with `addr`, up.
    pub fn create(name: &str, addr: Option<Ipv4Addr>) -> anyhow::Result<Self> {
        let _ = run("ip", &["link", "del", name]);
        let peer = format!("{name}-p");
        run(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", &peer],
        )?;
        let link = Self {
            name: name.to_owned(),
        };
        if let Some(addr) = addr {
            run("ip", &["addr", "add", &format!("{addr}/32"), "dev", name])?;
        }
        run("ip", &["link", "set", name, "up"])?;
        run("ip", &["link", "set", &peer, "up"])?;
        Ok(link)
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["link", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A host directory the cluster may write into: on restore, what was not there before goes.
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    /// `None`: the directory did not exist (it is removed whole).
    before: Option<BTreeSet<String>>,
}

/// The host directories of a node, as they were before the cluster started.
#[derive(Debug, Default)]
pub struct HostDirs {
    tracked: Vec<Tracked>,
}

fn entries(path: &Path) -> Option<BTreeSet<String>> {
    let dir = std::fs::read_dir(path).ok()?;
    Some(
        dir.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect(),
    )
}

impl HostDirs {
    /// Remembers the entries of `path` now.
    pub fn track(&mut self, path: &str) {
        self.tracked.push(Tracked {
            path: PathBuf::from(path),
            before: entries(Path::new(path)),
        });
    }

    /// Removes what was added to every tracked directory (newest tracked first), and the
    /// directories that did not exist. Returns what it removed.
    pub fn restore(&mut self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for t in self.tracked.drain(..).rev() {
            let now = entries(&t.path).unwrap_or_default();
            match &t.before {
                None => {
                    if t.path.exists() {
                        remove(&t.path);
                        removed.push(t.path.clone());
                    }
                }
                Some(before) => {
                    for name in now.difference(before) {
                        let path = t.path.join(name);
                        remove(&path);
                        removed.push(path);
                    }
                }
            }
        }
        removed
    }
}

fn remove(path: &Path) {
    let result = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        eprintln!("cleanup: removing {}: {e}", path.display());
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Unmounts everything below `dir` (lazily: a process that still holds one cannot block the
/// tear-down); returns how many.
pub fn unmount_below(dir: &Path) -> usize {
    let mounts = mounts_below(dir);
    for m in &mounts {
        if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cleanup: unmounting {}: {e}", m.display());
        }
    }
    mounts.len()
}

/// The runtime's pod network namespaces (`/run/netns/cni-*`) now.
pub fn cni_netns() -> BTreeSet<String> {
    entries(Path::new("/run/netns"))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("cni-"))
        .collect()
}

/// Removes the `cni-*` namespaces that were not in `before`; returns their names.
pub fn remove_cni_netns(before: &BTreeSet<String>) -> Vec<String> {
    let left: Vec<String> = cni_netns().difference(before).cloned().collect();
    for name in &left {
        let path = Path::new("/run/netns").join(name);
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        if let Err(e) = std::fs::remove_file(&path) {
            eprintln!("cleanup: removing {}: {e}", path.display());
        }
    }
    left
}

/// Makes `/run/netns` a shared mount of its own, as `ip netns add` does: the agent mounts it with
/// HostToContainer propagation (pods' namespaces appear in it after the agent started), which
/// the runtime allows only on a shared or slave mount. Left in place, as iproute2 leaves it.
pub fn share_netns_dir() -> anyhow::Result<()> {
    let dir = Path::new("/run/netns");
    std::fs::create_dir_all(dir).context("creating /run/netns")?;
    if mounts_below(dir).iter().any(|m| m == dir) {
        return Ok(());
    }
    note("making /run/netns a shared mount (as `ip netns add` does)");
    run("mount", &["--bind", "/run/netns", "/run/netns"])?;
    run("mount", &["--make-shared", "/run/netns"])
}

/// Every file below `dir` (relative paths), empty when it does not exist.
pub fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Whether the root mount propagates (is shared) now.
fn root_shared() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines().any(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            fields.get(4) == Some(&"/")
                && fields
                    .iter()
                    .skip(6)
                    .take_while(|f| **f != "-")
                    .any(|f| f.starts_with("shared:"))
        })
    })
}

/// The root mount made shared, as systemd makes it on a user's node: the runtime mounts host
/// paths with HostToContainer propagation (the agent's /var/run/netns) only from a shared or
/// slave mount, and it looks the mount up without resolving /var/run. Made private again on
/// drop when it was private before. Not recursive: the mounts below / keep their propagation.
#[derive(Debug)]
pub struct SharedRoot {
    was_private: bool,
}

impl SharedRoot {
    /// Makes / shared unless it is.
    pub fn new() -> anyhow::Result<Self> {
        if root_shared() {
            return Ok(Self { was_private: false });
        }
        note("making / a shared mount (as systemd does on a node)");
        run("mount", &["--make-shared", "/"])?;
        Ok(Self { was_private: true })
    }
}

impl Drop for SharedRoot {
    fn drop(&mut self) {
        if self.was_private
            && let Err(e) = run("mount", &["--make-private", "/"])
        {
            eprintln!("cleanup: {e:#}");
        }
    }
}
