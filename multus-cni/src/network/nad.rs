//! The NetworkAttachmentDefinition (k8s.cni.cncf.io/v1): namespace, name, annotations and the
//! CNI configuration string in `spec.config`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The NAD annotation naming the device-plugin resource that backs the network.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// A NetworkAttachmentDefinition, as much of it as the engine needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachmentDefinition {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Annotations (`k8s.v1.cni.cncf.io/resourceName`, policy annotations, ...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `spec.config`: a CNI configuration or conflist as a JSON string; empty means "look in
    /// confDir for a configuration with this name".
    #[serde(default)]
    pub config: String,
}

impl NetworkAttachmentDefinition {
    /// `namespace/name`, the name used in network-status and errors.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The device-plugin resource name, if annotated.
    pub fn resource_name(&self) -> Option<&str> {
        self.annotations
            .get(RESOURCE_NAME_ANNOTATION)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}
