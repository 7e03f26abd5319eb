//! The files the demo writes: the node's cluster network, and the quickstart's objects from
//! deploy/examples as the standalone agent's local source reads them.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::runtime::file_name;

/// Writes the cluster network's configuration (a bridge with host-local, what a primary CNI
/// such as flannel would install) as `10-cluster.conflist` in `conf_dir`.
pub fn cluster_network(conf_dir: &Path, ipam_dir: &Path) -> anyhow::Result<PathBuf> {
    let file = conf_dir.join("10-cluster.conflist");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "203.0.113.0/24"}]],
                "dataDir": ipam_dir,
            },
        }],
    });
    std::fs::write(&file, format!("{}\n", serde_json::to_string_pretty(&conf)?))
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

/// The example NAD at `path`, in namespace `default`, with host-local's leases kept in
/// `ipam_dir` instead of the machine's /var/lib/cni.
pub fn example_nad(path: &Path, ipam_dir: &Path) -> anyhow::Result<Value> {
    let mut nad = only_document(path, "NetworkAttachmentDefinition")?;
    let text = nad["spec"]["config"]
        .as_str()
        .with_context(|| format!("{}: no spec.config", path.display()))?;
    let mut config: Value =
        serde_json::from_str(text).with_context(|| format!("{}: spec.config", path.display()))?;
    config["ipam"]["dataDir"] = json!(ipam_dir);
    nad["spec"]["config"] = json!(serde_json::to_string_pretty(&config)?);
    nad["metadata"]["namespace"] = json!("default");
    Ok(nad)
}

/// The example pod at `path` as pod `namespace/name` with `uid`.
pub fn example_pod(path: &Path, namespace: &str, name: &str, uid: &str) -> anyhow::Result<Value> {
    let mut pod = only_document(path, "Pod")?;
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["uid"] = json!(uid);
    Ok(pod)
}

fn only_document(path: &Path, kind: &str) -> anyhow::Result<Value> {
    let docs =
        multus_testkit::kube::read_yaml_documents(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    match docs.as_slice() {
        [doc] if doc["kind"] == kind => Ok(doc.clone()),
        _ => bail!("{}: expected one {kind}", path.display()),
    }
}

/// Replaces `path` with `value` (JSON) in one rename, so the agent's watch never reads half a
/// file. The temporary file's name is one the local source ignores.
pub fn write_atomically(path: &Path, value: &Value) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(".{}.tmp", file_name(path)));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
