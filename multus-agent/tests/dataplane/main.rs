//! The dataplane with real eBPF programs on real interfaces in test namespaces: attaching in
//! batches, counters, drop events, policy enforcement and what cannot bypass it. Root tests;
//! they say why they skip without root. The truth-table suite stays a binary of its own: run
//! in one process with these tests, one of its cases saw a probe pass that its policy blocks.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod batch;
mod bypass;
#[path = "../common/mod.rs"]
mod common;
mod counters;
mod events;
mod flows;
mod memory;
mod policy;
#[path = "../policy_fixture/mod.rs"]
mod policy_fixture;
