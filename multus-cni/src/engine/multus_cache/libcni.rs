//! libcni's result cache, as Multus uses it: Multus hands libcni its `cniDir` as the cache
//! directory, so each delegate ADD leaves `<cniDir>/results/<network>-<containerID>-<ifname>`,
//! where `<network>` is the `name` inside the delegate's configuration.
//!
//! The file (libcni's `cachedInfo`, kind `cniCacheV1`) holds `containerId`, `config` (the
//! configuration bytes, base64), `ifName`, `networkName`, `netns`, `cniArgs` (a list of
//! `[key, value]` pairs), `capabilityArgs` (what libcni filtered into each plugin's
//! `runtimeConfig`) and `result` (the chain's final result, as the last plugin printed it).
//! Older libcni wrote the bare result instead; libcni still reads that, and so does [`read`].
use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// libcni's cache kind.
pub const KIND: &str = "cniCacheV1";

/// What libcni recorded for one attachment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedAttachment {
    /// `containerId`.
    pub container_id: Option<String>,
    /// `ifName`.
    pub ifname: Option<String>,
    /// `netns` at ADD time.
    pub netns: Option<PathBuf>,
    /// `cniArgs`, the `CNI_ARGS` pairs the delegate got at ADD.
    pub cni_args: Option<Vec<(String, String)>>,
    /// `capabilityArgs`.
    pub capability_args: Map<String, Value>,
    /// `result`, the delegate's ADD result.
    pub result: Option<Value>,
}

/// The cache file of `network`'s attachment `ifname` of `container_id` under `cni_dir`; `None`
/// when libcni would not have written one (it needs all three).
pub fn path(cni_dir: &Path, network: &str, container_id: &str, ifname: &str) -> Option<PathBuf> {
    if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
        return None;
    }
    Some(
        cni_dir
            .join("results")
            .join(format!("{network}-{container_id}-{ifname}")),
    )
}

/// Reads the cache file at `path`; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<CachedAttachment>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading libcni's result cache", path, e)),
    };
    let what = || format!("libcni's result cache {}", path.display());
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| Error::decode(what(), e))?;
    let Value::Object(obj) = value else {
        return Err(Error::decode(what(), "not a JSON object"));
    };
    if obj.get("kind").and_then(Value::as_str) != Some(KIND) {
        // The format before cniCacheV1: the result alone.
        return if obj.contains_key("cniVersion") {
            Ok(Some(CachedAttachment {
                result: Some(Value::Object(obj)),
                ..CachedAttachment::default()
            }))
        } else {
            Err(Error::decode(what(), format!("kind is not {KIND}")))
        };
    }
    let string = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let cni_args = match obj.get("cniArgs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(pairs)) => Some(
            pairs
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
                    _ => Err(Error::decode(
                        what(),
                        "cniArgs has an entry that is not a pair",
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(Error::decode(what(), "cniArgs is not a list")),
    };
    let capability_args = match obj.get("capabilityArgs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(Error::decode(what(), "capabilityArgs is not an object")),
    };
    Ok(Some(CachedAttachment {
        container_id: string("containerId"),
        ifname: string("ifName"),
        netns: string("netns").map(PathBuf::from),
        cni_args,
        capability_args,
        result: obj.get("result").filter(|r| r.is_object()).cloned(),
    }))
}

/// Removes the cache file at `path` (missing is fine).
pub fn remove(path: &Path) -> Result<()> {
    crate::files::remove_if_exists(path)
        .map(drop)
        .map_err(|e| Error::io("removing libcni's result cache", path, e))
}

/// The `ifName` libcni recorded for `network`'s attachment of `container_id`: the first file
/// `<network>-<container_id>-*` under `cni_dir/results` whose contents name that container.
/// GC needs it for Multus's entries, which do not record the runtime's `CNI_IFNAME`.
pub fn find_ifname(cni_dir: &Path, network: &str, container_id: &str) -> Option<String> {
    let prefix = format!("{network}-{container_id}-");
    let mut names: Vec<String> = fs::read_dir(cni_dir.join("results"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let cached = read(&cni_dir.join("results").join(&n)).ok()??;
        let ifname = cached.ifname?;
        (cached.container_id.as_deref() == Some(container_id) && n == format!("{prefix}{ifname}"))
            .then_some(ifname)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_like_libcni() {
        let dir = Path::new("/var/lib/cni/multus");
        assert_eq!(
            path(dir, "macvlan-conf", "c1", "net1").unwrap(),
            Path::new("/var/lib/cni/multus/results/macvlan-conf-c1-net1")
        );
        assert_eq!(path(dir, "", "c1", "net1"), None);
        assert_eq!(path(dir, "n", "c1", ""), None);
    }

    #[test]
    fn reads_v1_and_legacy_files() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        fs::create_dir(&results).unwrap();
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}],
            "ips": [{"address": "192.0.2.10/24", "interface": 0}]});
        let v1 = json!({"kind": "cniCacheV1", "containerId": "c1",
            "config": "eyJjbmlWZXJzaW9uIjoiMS4wLjAifQ==", "ifName": "net1",
            "networkName": "macvlan-conf", "netns": "/var/run/netns/p1",
            "cniArgs": [["IgnoreUnknown", "true"], ["K8S_POD_NAMESPACE", "pods"]],
            "capabilityArgs": {"ips": ["192.0.2.10/24"]}, "result": result});
        let p = results.join("macvlan-conf-c1-net1");
        fs::write(&p, v1.to_string()).unwrap();
        let got = read(&p).unwrap().unwrap();
        assert_eq!(got.container_id.as_deref(), Some("c1"));
        assert_eq!(got.ifname.as_deref(), Some("net1"));
        assert_eq!(got.netns, Some(PathBuf::from("/var/run/netns/p1")));
        assert_eq!(
            got.cni_args.unwrap(),
            vec![
                ("IgnoreUnknown".to_owned(), "true".to_owned()),
                ("K8S_POD_NAMESPACE".to_owned(), "pods".to_owned())
            ]
        );
        assert_eq!(got.capability_args["ips"], json!(["192.0.2.10/24"]));
        assert_eq!(got.result, Some(result.clone()));
        assert_eq!(
            find_ifname(dir.path(), "macvlan-conf", "c1").as_deref(),
            Some("net1")
        );
        assert_eq!(find_ifname(dir.path(), "macvlan-conf", "c2"), None);

        let legacy = results.join("old-c1-eth0");
        fs::write(&legacy, result.to_string()).unwrap();
        assert_eq!(read(&legacy).unwrap().unwrap().result, Some(result));

        assert_eq!(read(&results.join("missing")).unwrap(), None);
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn corrupt_files_are_decode_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        for bad in [
            "{",
            "[]",
            r#"{"kind": "other"}"#,
            r#"{"kind": "cniCacheV1", "cniArgs": "x"}"#,
            r#"{"kind": "cniCacheV1", "cniArgs": [["only-key"]]}"#,
            r#"{"kind": "cniCacheV1", "capabilityArgs": []}"#,
        ] {
            fs::write(&p, bad).unwrap();
            assert_eq!(read(&p).unwrap_err().code(), 6, "{bad}");
        }
    }
}
