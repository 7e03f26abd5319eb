//! The Kubernetes side of the engine (feature `kube`): pods and NADs from the API server
//! ([`KubeSource`]), the network-status annotation and Events after ADD ([`KubePublisher`]),
//! device IDs from kubelet ([`PodResourcesDevices`]), and the conversions from multus-kube's
//! types to the engine's ([`convert`]), which the agent's watch caches can reuse.
mod cluster;
pub mod convert;
pub mod devices;
pub mod events;
mod publish;
mod source;

use std::sync::Arc;

pub use cluster::{Cluster, api_options};
pub use devices::PodResourcesDevices;
pub use publish::{KubePublisher, PodApi, StatusWritten};
pub use source::KubeSource;

use crate::{config::NetConf, engine::Engine};

/// The thin binary's engine for a configuration with a cluster (see [`Cluster::from_conf`]):
/// the Kubernetes source, kubelet's devices and the publisher. `None` without a cluster.
pub fn thin_engine(conf: &NetConf) -> Option<Engine> {
    let cluster = Arc::new(Cluster::from_conf(conf)?);
    let publisher = KubePublisher::new(Arc::clone(&cluster) as Arc<dyn PodApi>);
    Some(
        Engine::new(Arc::new(KubeSource::new(Arc::clone(&cluster))))
            .with_devices(Arc::new(PodResourcesDevices::new(
                &conf.kubelet_root_dir,
                &conf.device_info_dir,
                Some(Arc::clone(&cluster)),
            )))
            .with_publisher(Arc::new(publisher)),
    )
}
