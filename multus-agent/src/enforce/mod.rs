//! Policy enforcement: the compiler's inputs ([`crate::changes`]) kept current from the cluster (watches) or the
//! local directory (standalone), the node's attachments registered as ADD makes them, and each
//! attachment's compiled policy installed in the dataplane: at ADD, before the pod runs, and
//! again within a second of any change that affects it.
//!
//! - [`controller`]: the [`Enforcer`], which owns the snapshot and installs policies.
//! - [`kube`]: the watches of pods (all namespaces) and MultiNetworkPolicies; NADs and
//!   namespaces come from the agent's own caches ([`crate::source::kube`]).
//! - [`local`]: standalone mode's directory of NAD, MultiNetworkPolicy, Pod and Namespace
//!   documents.
//! - [`interface`]: an interface's MAC and addresses, for anti-spoofing.
//! - [`report`]: Events on invalid policy objects.
pub mod controller;
pub mod interface;
pub mod kube;
pub mod local;
pub mod report;

pub use self::controller::{Enforcer, NewAttachment, Peers, PrepareError, Prepared};
pub use crate::changes::{Change, Kind, PodLookup};

/// Changes waiting for the enforcer before their senders wait (watch tasks then pause
/// reading, which bounds the memory a burst takes).
pub const CHANGE_QUEUE: usize = 1024;
