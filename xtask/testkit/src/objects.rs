//! Kubernetes objects as the tests write them, to the test API server or to the local files a
//! standalone network source reads: NetworkAttachmentDefinitions and pods.
use std::path::Path;

use serde_json::{Value, json};

/// The networks annotation a pod asks for its networks with.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// NetworkAttachmentDefinition `name` with `config` as its `spec.config` (a string, as the CRD
/// has it) and `annotations` (`{}` for none). Without a namespace: the API server's test
/// namespace or [`write_local`] adds it.
pub fn nad(name: &str, config: &Value, annotations: Value) -> Value {
    let mut nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name},
        "spec": {"config": config.to_string()},
    });
    nad["metadata"]["annotations"] = annotations;
    nad
}

/// Pod `name` with `annotations` and nothing else (what a local pod file needs).
pub fn pod(name: &str, annotations: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}});
    pod["metadata"]["annotations"] = annotations;
    pod
}

/// [`pod`] bound to `node` without a scheduler, for the API server: one placeholder container,
/// no service-account token (nothing runs it).
pub fn bound_pod(name: &str, node: &str, annotations: Value) -> Value {
    let mut pod = pod(name, annotations);
    pod["spec"] = json!({
        "nodeName": node,
        "automountServiceAccountToken": false,
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}]
    });
    pod
}

/// Writes `object` (a [`nad`] or a [`pod`]) in `namespace`, with `uid` when given, into `dir`
/// as a local network source reads it: `nad-<namespace>-<name>.json` or
/// `pod-<namespace>-<name>.json`.
#[track_caller]
pub fn write_local(dir: &Path, namespace: &str, uid: Option<&str>, mut object: Value) {
    object["metadata"]["namespace"] = json!(namespace);
    if let Some(uid) = uid {
        object["metadata"]["uid"] = json!(uid);
    }
    let prefix = match object["kind"].as_str() {
        Some("Pod") => "pod",
        Some("NetworkAttachmentDefinition") => "nad",
        other => panic!("not a pod or a NAD: {other:?}"),
    };
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let path = dir.join(format!("{prefix}-{namespace}-{name}.json"));
    if let Err(e) = std::fs::write(&path, object.to_string()) {
        panic!("writing {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn local_files_are_named_and_namespaced_as_the_local_source_reads_them() {
        let dir = tempfile_dir();
        let config = json!({"cniVersion": "1.0.0", "type": "macvlan"});
        write_local(&dir, "ns", None, nad("net", &config, json!({})));
        write_local(&dir, "ns", Some("u1"), pod("p", json!({NETWORKS: "net"})));
        assert_eq!(
            bound_pod("q", "node-a", json!({}))["spec"]["nodeName"],
            "node-a"
        );
        let read = |f: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
        };
        let n = read("nad-ns-net.json");
        assert_eq!(n["metadata"]["namespace"], "ns");
        assert_eq!(n["spec"]["config"], config.to_string());
        let p = read("pod-ns-p.json");
        assert_eq!(p["metadata"]["uid"], "u1");
        assert_eq!(p["metadata"]["annotations"][NETWORKS], "net");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(crate::unique_name("objects"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
