//! The `multus-agent` command line as an operator uses it, and the policy documents it takes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod commands;
mod policy_files;
