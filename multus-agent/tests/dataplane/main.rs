//! The dataplane with real eBPF programs on real interfaces in test namespaces: attaching in
//! batches, counters, drop events, policy enforcement and what cannot bypass it, and the
//! NetworkPolicy truth-table suite. Root tests; they say why they skip without root.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod batch;
mod bypass;
#[path = "../common/mod.rs"]
mod common;
mod counters;
mod events;
mod policy;
#[path = "../policy_fixture/mod.rs"]
mod policy_fixture;
mod truth_table;
