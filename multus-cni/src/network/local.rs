//! A [`NetworkSource`] over a directory of Kubernetes-style YAML or JSON files, for use without
//! a cluster (thin mode, the demo, tests).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file in the directory (not recursive) may hold one or
//! more documents (`---`-separated). Documents of `kind: NetworkAttachmentDefinition` are
//! networks, `kind: Pod` documents give pods their uid and annotations; other kinds are
//! ignored. A missing `metadata.namespace` means `default`. The directory is listed on each
//! lookup, so files can change between calls; a file is parsed again only when its size or
//! modification time changed.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Deserialize;

use super::{
    nad::NetworkAttachmentDefinition,
    source::{NetworkSource, PodInfo, PodKey, SourceError},
};

/// The local-files source.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    dir: PathBuf,
    parsed: Arc<Mutex<HashMap<PathBuf, Parsed>>>,
}

/// A file's documents, or why it does not parse, for one (size, mtime).
#[derive(Debug, Clone)]
struct Parsed {
    stamp: (u64, Option<SystemTime>),
    docs: Result<Arc<Vec<Object>>, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Object {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    config: Option<String>,
}

impl LocalFiles {
    /// A source over `dir`. A directory that does not exist holds nothing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            parsed: Arc::default(),
        }
    }

    /// The documents of `path`, parsed again only when the file changed.
    fn documents(
        &self,
        path: &Path,
        what: &str,
    ) -> Result<Result<Arc<Vec<Object>>, String>, SourceError> {
        let io_err = |source| SourceError::Io {
            what: what.to_owned(),
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let stamp = (meta.len(), meta.modified().ok());
        if let Ok(cache) = self.parsed.lock()
            && let Some(p) = cache.get(path)
            && p.stamp == stamp
        {
            return Ok(p.docs.clone());
        }
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        let docs = parse_documents(path, &text).map(Arc::new);
        if let Ok(mut cache) = self.parsed.lock() {
            cache.insert(
                path.to_owned(),
                Parsed {
                    stamp,
                    docs: docs.clone(),
                },
            );
        }
        Ok(docs)
    }

    /// Drops what was parsed from files no longer in the directory: a node that sees a new pod
    /// file per pod must not keep every file it ever read.
    fn forget_all_but(&self, files: &[PathBuf]) {
        if let Ok(mut cache) = self.parsed.lock()
            && cache.len() > files.len()
        {
            cache.retain(|path, _| files.binary_search(path).is_ok());
        }
    }

    /// How many files' documents are held (for tests and memory checks).
    pub fn cached_files(&self) -> usize {
        self.parsed.lock().map_or(0, |c| c.len())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finds the first document of `kind` named `namespace/name`.
    fn find(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Object>, SourceError> {
        let what = format!("{kind} {namespace}/{name}");
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SourceError::Io {
                    what,
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        self.forget_all_but(&files);
        let mut broken = Vec::new();
        for path in files {
            let docs = match self.documents(&path, &what)? {
                Ok(docs) => docs,
                Err(e) => {
                    broken.push(e);
                    continue;
                }
            };
            for obj in docs.iter() {
                let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
                if obj.kind == kind && ns == namespace && obj.metadata.name == name {
                    return Ok(Some(obj.clone()));
                }
            }
        }
        if broken.is_empty() {
            Ok(None)
        } else {
            // The object might be in a file that does not parse: say so rather than "not found".
            Err(SourceError::Invalid {
                what,
                reason: format!(
                    "not found, and these files do not parse: {}",
                    broken.join("; ")
                ),
            })
        }
    }
}

/// Every document of a file: JSON files hold one, YAML files one or more.
fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(text)
            .map(|o| vec![o])
            .map_err(|e| err(&e));
    }
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        // Empty documents (a leading or trailing `---`) are allowed and hold nothing.
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(&e))?;
        if !value.is_null() {
            out.push(serde_yaml::from_value(value).map_err(|e| err(&e))?);
        }
    }
    Ok(out)
}

impl NetworkSource for LocalFiles {
    fn pod(&self, pod: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        Ok(self
            .find("Pod", &pod.namespace, &pod.name)?
            .map(|o| PodInfo {
                uid: o.metadata.uid,
                annotations: o.metadata.annotations.unwrap_or_default(),
            }))
    }

    fn network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, SourceError> {
        Ok(self
            .find("NetworkAttachmentDefinition", namespace, name)?
            .map(|o| NetworkAttachmentDefinition {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                annotations: o.metadata.annotations.unwrap_or_default(),
                config: o.spec.config.unwrap_or_default(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nads_and_pods_in_yaml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nets.yaml"),
            r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
  namespace: pods
  annotations:
    k8s.v1.cni.cncf.io/resourceName: example.com/sriov
spec:
  config: '{"cniVersion": "0.4.0", "type": "macvlan"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: empty
---
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pod.json"),
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "pods",
               "uid": "u-1", "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let src = LocalFiles::new(dir.path());
        let nad = src.network("pods", "macvlan-conf").unwrap().unwrap();
        assert_eq!(nad.resource_name(), Some("example.com/sriov"));
        assert!(nad.config.contains("macvlan"));
        let empty = src.network("default", "empty").unwrap().unwrap();
        assert_eq!(empty.config, "");
        assert!(src.network("other", "macvlan-conf").unwrap().is_none());
        let key = PodKey {
            namespace: "pods".into(),
            name: "p1".into(),
            uid: None,
        };
        let pod = src.pod(&key).unwrap().unwrap();
        assert_eq!(pod.uid.as_deref(), Some("u-1"));
        assert_eq!(pod.annotations.len(), 1);
        assert!(
            LocalFiles::new(dir.path().join("missing"))
                .pod(&key)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn forgets_files_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let src = LocalFiles::new(dir.path());
        let key = |name: &str| PodKey {
            namespace: "default".into(),
            name: name.into(),
            uid: None,
        };
        // Pod churn: each pod's file written, read, then deleted.
        for i in 0..50 {
            let file = dir.path().join(format!("pod-{i}.json"));
            std::fs::write(
                &file,
                format!(r#"{{"kind": "Pod", "metadata": {{"name": "p{i}"}}}}"#),
            )
            .unwrap();
            assert!(src.pod(&key(&format!("p{i}"))).unwrap().is_some());
            std::fs::remove_file(&file).unwrap();
        }
        assert!(src.pod(&key("p0")).unwrap().is_none());
        assert_eq!(src.cached_files(), 0);
    }

    #[test]
    fn broken_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [unclosed").unwrap();
        let err = LocalFiles::new(dir.path()).network("a", "b").unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }
}
