//! The delegates' device-information files (`CNIDeviceInfoFile`, NPWG Device Information spec):
//! `<deviceInfoDir>/cni/<network>-<containerID>_<ifname>` for every delegate with a device id.
//! Before the delegate's ADD it holds what the device plugin published (when it did); the
//! delegate may rewrite it; after ADD its content is the network-status `device-info`; DEL
//! removes it.
use std::{
    fs,
    io::{ErrorKind, Write as _},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};
use tracing::warn;

use crate::{
    error::{Error, Result},
    files::{Atomic, remove_if_exists, write_atomic},
};

/// The runtimeConfig key (and capability) naming the file.
pub const KEY: &str = "CNIDeviceInfoFile";
/// Where the delegates' files live, below `deviceInfoDir`.
pub const SUBDIR: &str = "cni";

/// The file of `network`'s attachment `ifname` of `container_id` (`/` turned into `-`, as
/// Multus names it).
pub fn path(device_info_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    let name = format!("{network}-{container_id}_{ifname}").replace('/', "-");
    device_info_dir.join(SUBDIR).join(name)
}

/// The device-info file in `runtime_config` when it is the one made for this attachment
/// (named `*-<containerID>_<ifname>`): only such a file is removed on DEL.
pub fn owned(
    runtime_config: &Map<String, Value>,
    container_id: &str,
    ifname: &str,
) -> Option<PathBuf> {
    let file = PathBuf::from(runtime_config.get(KEY)?.as_str()?);
    let suffix = format!("-{container_id}_{ifname}");
    file.file_name()?
        .to_str()?
        .ends_with(&suffix)
        .then_some(file)
}

/// Writes `info` to `file` (temp file and rename: a reader sees all of it or nothing).
pub fn write(file: &Path, info: &Value) -> Result<()> {
    let err = |e| Error::io("writing the device information for the delegate", file, e);
    let dir = file.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(err)?;
    let how = Atomic {
        mode: 0o644,
        durable: false,
    };
    write_atomic(file, how, |f| f.write_all(info.to_string().as_bytes())).map_err(err)
}

/// The JSON object in `file`, if there is one (a delegate may have written or rewritten it).
pub fn read(file: &Path) -> Option<Value> {
    match fs::read(file) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) | Err(_) => {
                warn!(file = %file.display(), "device information is not a JSON object; ignored");
                None
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            warn!(file = %file.display(), error = %e, "device information unreadable; ignored");
            None
        }
    }
}

/// Removes `file`; a file already gone is no error.
pub fn remove(file: &Path) -> Result<()> {
    remove_if_exists(file)
        .map(drop)
        .map_err(|e| Error::io("removing the delegate's device information", file, e))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn named_like_multus_and_owned_only_when_it_is_this_attachments() {
        let dir = Path::new("/run/devinfo");
        let file = path(dir, "pods/sriov-net", "c1", "net1");
        assert_eq!(file, Path::new("/run/devinfo/cni/pods-sriov-net-c1_net1"));
        let rc = |f: &str| json!({ KEY: f }).as_object().cloned().unwrap();
        assert_eq!(owned(&rc(file.to_str().unwrap()), "c1", "net1"), Some(file));
        assert_eq!(
            owned(&rc("/run/devinfo/cni/other-c2_net1"), "c1", "net1"),
            None
        );
        assert_eq!(owned(&Map::new(), "c1", "net1"), None);
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "ns/n", "c1", "net1");
        let info =
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.2"}});
        write(&file, &info).unwrap();
        assert_eq!(read(&file), Some(info));
        assert_eq!(
            fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
        fs::write(&file, "[1]").unwrap();
        assert_eq!(read(&file), None, "not an object");
        remove(&file).unwrap();
        remove(&file).unwrap();
        assert_eq!(read(&file), None);
    }
}
