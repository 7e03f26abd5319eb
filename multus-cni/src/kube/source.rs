//! [`KubeSource`]: the engine's pods and NADs read from the API server, one GET each.
use std::sync::Arc;

use multus_kube::ErrorKind;

use super::{Cluster, convert};
use crate::network::{NetworkAttachmentDefinition, NetworkSource, PodInfo, PodKey, SourceError};

/// Pods and NADs from the API server. A pod that is not visible yet is waited for briefly
/// (`Cluster::pod`); one that does not exist, or a missing NAD, is `None`. API failures map to
/// code 11 when the server is unreachable and to a clear code 7 for refused credentials or
/// permissions.
#[derive(Debug, Clone)]
pub struct KubeSource {
    cluster: Arc<Cluster>,
}

impl KubeSource {
    /// A source reading through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

impl NetworkSource for KubeSource {
    fn pod(&self, pod: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        Ok(self.cluster.pod(pod)?.as_ref().map(convert::pod_info))
    }

    fn network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, SourceError> {
        match self.cluster.api()?.get_nad(namespace, name) {
            Ok(nad) => Ok(Some(convert::nad_info(&nad))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(convert::source_error(
                format!("network {namespace}/{name}"),
                &e,
            )),
        }
    }
}
