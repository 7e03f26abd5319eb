//! Standalone mode's policy inputs: the documents of the local source directory (the same
//! files the engine reads networks from). `NetworkAttachmentDefinition` documents carry the
//! policy annotation; `MultiNetworkPolicy` (`v1beta1` or `v1beta2`), `Pod` (labels, container
//! ports) and `Namespace` (labels) documents feed MultiNetworkPolicies. Every reload is a full
//! listing of each kind, so a document removed is an object gone. A file that stops parsing
//! keeps the objects it had (the last valid version stays in force); the source watcher
//! reports it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use multus_kube::crd::{self, v1beta1, v1beta2};
use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::changes::{self, Change, Kind};
use crate::policy::{FieldError, MnpEntry, ObjectError, ObjectKey};

/// A file's changes, for one (size, mtime).
#[derive(Debug)]
struct Parsed {
    stamp: (u64, Option<SystemTime>),
    changes: Vec<Change>,
}

/// Reads the directory's documents, parsing a file again only when it changed.
#[derive(Debug)]
pub struct LocalPolicyFiles {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Parsed>,
}

impl LocalPolicyFiles {
    /// A reader of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
        }
    }

    /// A full listing: for each kind, [`Change::Relist`], every object, [`Change::Listed`].
    pub fn load(&mut self) -> Vec<Change> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                })
                .collect(),
            Err(e) => {
                // Listing failed: keep everything as it was.
                warn!(dir = %self.dir.display(), "listing the local source: {e}");
                self.files.keys().cloned().collect()
            }
        };
        paths.sort();
        let mut next = BTreeMap::new();
        for path in paths {
            let stamp = match std::fs::metadata(&path) {
                Ok(m) => (m.len(), m.modified().ok()),
                Err(_) => continue,
            };
            match self.files.remove(&path) {
                Some(old) if old.stamp == stamp => {
                    next.insert(path, old);
                }
                old => match read_file(&path) {
                    Ok(changes) => {
                        next.insert(path, Parsed { stamp, changes });
                    }
                    Err(e) => {
                        debug!(file = %path.display(), "keeping its previous objects: {e}");
                        if let Some(old) = old {
                            next.insert(path, old);
                        }
                    }
                },
            }
        }
        self.files = next;
        let mut out = Vec::new();
        for kind in Kind::ALL {
            out.push(Change::Relist(kind));
            out.extend(
                self.files
                    .values()
                    .flat_map(|p| &p.changes)
                    .filter(|c| c.object().is_some_and(|(k, _)| k == kind))
                    .cloned(),
            );
            out.push(Change::Listed(kind));
        }
        out
    }
}

/// Every document of a file (JSON: one, YAML: one or more) as the change it makes.
fn read_file(path: &Path) -> Result<Vec<Change>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let docs: Vec<Value> = if path.extension().is_some_and(|e| e == "json") {
        vec![serde_json::from_str(&text).map_err(|e| e.to_string())?]
    } else {
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        docs
    };
    Ok(docs
        .into_iter()
        .filter_map(|doc| document(path, doc))
        .collect())
}

/// The change one document makes; `None` for kinds policy does not read (or a Pod or
/// Namespace that does not read as one, logged).
fn document(path: &Path, doc: Value) -> Option<Change> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let skipped = |e: &dyn std::fmt::Display| {
        warn!(file = %path.display(), %kind, "document skipped: {e}");
        None
    };
    match kind.as_str() {
        "NetworkAttachmentDefinition" => match crd::nad_from_value(doc) {
            Ok(nad) => Some(changes::nad_typed(&nad)),
            Err(e) => skipped(&e),
        },
        "MultiNetworkPolicy" => Some(mnp_document(doc, &version)),
        "Pod" => match serde_json::from_value::<Pod>(doc) {
            Ok(pod) => Some(changes::pod(&pod)),
            Err(e) => skipped(&e),
        },
        "Namespace" => match serde_json::from_value::<Namespace>(doc) {
            Ok(ns) => Some(changes::namespace(&ns)),
            Err(e) => skipped(&e),
        },
        _ => None,
    }
}

/// A MultiNetworkPolicy document; one whose fields do not read is an invalid policy (it may
/// apply to any pod of its namespace), not a missing one.
fn mnp_document(doc: Value, version: &str) -> Change {
    let key = ObjectKey::new(
        doc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default"),
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let read = if version.ends_with("/v1beta1") {
        serde_json::from_value::<v1beta1::MultiNetworkPolicy>(doc).map(|p| changes::mnp_v1beta1(&p))
    } else {
        serde_json::from_value::<v1beta2::MultiNetworkPolicy>(doc).map(|p| changes::mnp(&p))
    };
    read.unwrap_or_else(|e| {
        let error = ObjectError::MultiNetworkPolicy {
            policy: key.clone(),
            field: FieldError::new("", e.to_string()),
        };
        Change::Mnp(
            key.clone(),
            Some(changes::MnpObject {
                entry: MnpEntry {
                    key,
                    networks: None,
                    target: None,
                    rules: Err(error),
                },
                uid: None,
                resource_version: None,
                api_version: version.to_owned(),
            }),
        )
    })
}

/// Sends a full listing of `dir` now and after every change the source watcher reports,
/// until either side is gone.
pub async fn run(dir: PathBuf, mut changes: watch::Receiver<u64>, tx: mpsc::Sender<Change>) {
    let mut files = LocalPolicyFiles::new(dir);
    loop {
        let batch = match tokio::task::spawn_blocking(move || {
            let batch = files.load();
            (files, batch)
        })
        .await
        {
            Ok((back, batch)) => {
                files = back;
                batch
            }
            Err(e) => {
                warn!("reading the local policy documents failed: {e}");
                return;
            }
        };
        for change in batch {
            if tx.send(change).await.is_err() {
                return;
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .filter_map(Change::object)
            .map(|(k, n)| format!("{k} {n}"))
            .collect()
    }

    #[test]
    fn every_kind_is_listed_and_broken_files_keep_their_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n\
             metadata: {name: blue, namespace: ns, annotations: {multus-rs.io/policy: '{}'}}\n\
             spec: {config: '{}'}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, labels: {app: x}}\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns, labels: {team: a}}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
                "metadata": {"name": "m", "namespace": "ns",
                             "annotations": {"k8s.v1.cni.cncf.io/policy-for": "blue"}},
                "spec": {"podSelector": {}, "ingress": [{}]}}"#,
        )
        .unwrap();
        let mut files = LocalPolicyFiles::new(dir.path());
        let first = files.load();
        assert_eq!(
            objects(&first),
            ["pod ns/p", "namespace ns", "nad ns/blue", "mnp ns/m"]
        );
        assert_eq!(first.first(), Some(&Change::Relist(Kind::Pod)));
        assert_eq!(first.last(), Some(&Change::Listed(Kind::Mnp)));
        let Some(Change::Mnp(_, Some(m))) = first.iter().find(|c| matches!(c, Change::Mnp(..)))
        else {
            panic!("no policy");
        };
        assert_eq!(m.api_version, "k8s.cni.cncf.io/v1beta1");
        assert!(m.entry.error().is_none(), "{:?}", m.entry.error());

        // Broken YAML: the file's objects stay; a removed file's objects go.
        std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
        std::fs::remove_file(dir.path().join("b.json")).unwrap();
        assert_eq!(
            objects(&files.load()),
            ["pod ns/p", "namespace ns", "nad ns/blue"]
        );
    }

    #[test]
    fn a_policy_that_does_not_read_is_invalid_not_missing() {
        let change = mnp_document(
            serde_json::json!({"apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
                               "metadata": {"name": "m", "namespace": "ns"},
                               "spec": {"podSelector": 7}}),
            "k8s.cni.cncf.io/v1beta2",
        );
        let Change::Mnp(key, Some(m)) = change else {
            panic!("not a policy: {change:?}");
        };
        assert_eq!(key, ObjectKey::new("ns", "m"));
        let err = m.entry.error().unwrap().to_string();
        assert!(err.starts_with("MultiNetworkPolicy ns/m: "), "{err}");
    }
}
