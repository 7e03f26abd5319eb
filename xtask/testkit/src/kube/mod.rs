//! Kubernetes test fixtures (feature `kube`): a real kube-apiserver with etcd per test process
//! ([`KubeCluster`]), a namespace per test ([`TestNamespace`]), and a fault-injecting proxy
//! ([`FaultProxy`]) for the failures a healthy server does not produce on demand.
mod cluster;
mod plane;
mod proxy;
mod rbac;
mod relay;
mod rest;
mod tls;

pub use cluster::{
    KubeCluster, KubeconfigAuth, MULTUS_USER, TestNamespace, crd_established, read_yaml_documents,
};
pub use plane::{apiserver_command, etcd_command};
pub use proxy::{FaultProxy, Recorded, Stall};
pub use rbac::{
    Attributes, allows, attributes, attrs, checked_attributes, cluster_role_rules,
    cni_binary_attributes,
};
pub use relay::TcpRelay;
pub use rest::{Rest, collection_path};

pub use crate::wait::until;
