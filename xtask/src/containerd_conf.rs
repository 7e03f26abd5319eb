//! The configuration of a containerd of the xtask's own: root, state, sockets and the opt plugin
//! all below one directory, so it clashes with no other containerd on the machine.
use std::path::Path;

/// The config's common part for a containerd whose files are all below `dir`, serving `sock`;
/// without `cri` the CRI plugin is off (it would want CNI and a network of its own).
pub fn private(dir: &Path, sock: &Path, cri: bool) -> String {
    let cri_off = if cri {
        ""
    } else {
        r#""io.containerd.grpc.v1.cri", "#
    };
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{cri_off}"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = sock.display(),
        // Not the default /opt/containerd: nothing of the runtime outside `dir`.
        opt = dir.join("opt").display(),
    )
}
