//! The policy compiler: the NAD annotation, MultiNetworkPolicy objects, the change index,
//! combining policies and NetworkPolicy semantics; the enforcer installing the compiled
//! policies in a real dataplane; and, end to end, the agent enforcing NAD annotations and
//! MultiNetworkPolicies on real traffic (those need root).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod annotation;
mod combine;
#[path = "../common/mod.rs"]
mod common;
mod e2e;
mod enforce;
mod enforcer;
mod index;
#[path = "../thick/kube_node.rs"]
mod kube_node;
mod objects;
#[path = "../policy_fixture/mod.rs"]
mod policy_fixture;
mod semantics;
#[path = "../thick/support.rs"]
mod support;
