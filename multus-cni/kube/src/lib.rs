//! The Kubernetes side of multus: the CRD types (NetworkAttachmentDefinition,
//! MultiNetworkPolicy), a client that follows rotated service-account tokens, a small blocking
//! API facade for the synchronous CNI engine, and kubelet's PodResources lookup of device IDs.
//!
//! This library enables no k8s-openapi version feature: the binaries choose the Kubernetes
//! API version once for the whole build.
pub mod access;
pub mod api;
pub mod client;
pub mod crd;
pub mod error;
pub mod podresources;

pub use api::{
    ApiOptions, ContainerPort, EventTarget, EventType, KubeApi, NETWORK_STATUS_ANNOTATION, NadInfo,
    PodInfo,
};
pub use client::{ClientOptions, ClientSource, SERVICE_ACCOUNT_DIR, build_client};
pub use error::{Error, ErrorKind};
