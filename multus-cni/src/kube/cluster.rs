//! The cluster connection of one multus-cni run: the API facade, built on first use (DEL,
//! CHECK, GC and STATUS never need it, so a broken or unreachable cluster cannot block them),
//! and the pod it last read, which the device lookup and the status write reuse.
use std::{
    sync::{Mutex, OnceLock, PoisonError},
    time::Duration,
};

use multus_kube::{ApiOptions, ClientOptions, ClientSource, ErrorKind, KubeApi, PodInfo};

use super::convert::source_error;
use crate::{
    config::NetConf,
    network::{PodKey, SourceError},
};

/// Longest single attempt of an API call.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);
/// Longest connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// How long a pod that is not visible yet is waited for (Multus: 2.5 s).
const POD_WAIT: Duration = Duration::from_secs(3);

/// A lazily connected cluster.
pub struct Cluster {
    client: ClientSource,
    opts: ApiOptions,
    api: OnceLock<Result<KubeApi, String>>,
    last_pod: Mutex<Option<PodInfo>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("client", &self.client)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster reached through `client`, with the facade's bounds `opts`. Nothing connects yet.
    pub fn new(client: ClientSource, opts: ApiOptions) -> Self {
        Self {
            client,
            opts,
            api: OnceLock::new(),
            last_pod: Mutex::new(None),
        }
    }

    /// The cluster a configuration names, by Multus's rule: `kubeconfig` when set, else the
    /// in-cluster service account when `KUBERNETES_SERVICE_HOST`/`_PORT` are set, else none.
    /// Every API call is bounded by `apiTimeoutSeconds`, retries included.
    pub fn from_conf(conf: &NetConf) -> Option<Self> {
        let client = ClientSource::from_multus_kubeconfig(conf.kubeconfig.as_deref())?;
        Some(Self::new(client, api_options(conf.api_timeout_seconds)))
    }

    /// The API facade, built on the first call.
    pub fn api(&self) -> Result<&KubeApi, SourceError> {
        let api = self.api.get_or_init(|| {
            KubeApi::new(&self.client, self.opts.clone()).map_err(|e| e.to_string())
        });
        api.as_ref().map_err(|reason| SourceError::Invalid {
            what: "the Kubernetes client".to_owned(),
            reason: reason.clone(),
        })
    }

    /// Reads the pod (waiting briefly while it is not visible yet); `None` when it does not
    /// exist. The pod read is remembered for [`Cluster::known_pod`].
    pub fn pod(&self, key: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        let what = || format!("pod {}/{}", key.namespace, key.name);
        let pod = match self.api()?.get_pod(&key.namespace, &key.name) {
            Ok(pod) => pod,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(pod = %what(), "the pod does not exist; it gets no annotation networks");
                return Ok(None);
            }
            Err(e) => return Err(source_error(what(), &e)),
        };
        *self.last_pod.lock().unwrap_or_else(PoisonError::into_inner) = Some(pod.clone());
        Ok(Some(pod))
    }

    /// The pod `namespace/name` if this connection has read it.
    pub fn known_pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        self.last_pod
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|p| p.namespace == namespace && p.name == name)
            .cloned()
    }
}

/// The facade's bounds for a total of `seconds` per call.
pub fn api_options(seconds: u64) -> ApiOptions {
    let budget = Duration::from_secs(seconds.max(1));
    ApiOptions {
        client: ClientOptions {
            connect_timeout: CONNECT_LIMIT.min(budget),
            read_timeout: ATTEMPT_LIMIT.min(budget),
            write_timeout: ATTEMPT_LIMIT.min(budget),
        },
        attempt_timeout: ATTEMPT_LIMIT.min(budget),
        retry_budget: budget,
        pod_wait: POD_WAIT.min(budget),
        ..ApiOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_timeout() {
        let short = api_options(2);
        assert_eq!(short.retry_budget, Duration::from_secs(2));
        assert_eq!(short.attempt_timeout, Duration::from_secs(2));
        assert_eq!(short.client.connect_timeout, Duration::from_secs(2));
        let long = api_options(60);
        assert_eq!(long.attempt_timeout, ATTEMPT_LIMIT);
        assert_eq!(long.pod_wait, POD_WAIT);
    }

    #[test]
    fn a_broken_kubeconfig_is_a_clear_error_at_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.kubeconfig");
        let cluster = Cluster::new(ClientSource::Kubeconfig(path), api_options(1));
        let err = cluster.api().unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("missing.kubeconfig"), "{err}");
    }
}
