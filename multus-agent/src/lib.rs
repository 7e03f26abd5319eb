//! The multus node agent: serves the CNI engine over a unix socket, owns the eBPF dataplane and
//! exports per-interface metrics.
pub mod dataplane;
pub mod policy;
