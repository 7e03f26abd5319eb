//! Support for the project's root tests and benches: a loud root check, uniquely named network
//! namespaces and links that remove themselves on drop, bpffs directories, a two-pod macvlan
//! topology on documentation addresses, and CNI invocations run like a runtime runs them.
//!
//! Everything is built from `ip` and friends on purpose: the tests check the product's netlink and
//! eBPF code against the system's own tools.
pub mod cache;
pub mod cmd;
pub mod cni_run;
pub mod conf;
pub mod enter;
pub mod inside;
pub mod ipam;
#[cfg(feature = "kube")]
pub mod kube;
pub mod netns;
pub mod objects;
pub mod ping;
pub mod raw_bpf;
pub mod root;
pub mod tap;
pub mod topology;
pub mod traffic;
pub mod wait;

pub use cmd::{CmdError, run, run_ok};
pub use cni_run::CniRun;
pub use netns::{BpffsDir, Netns, unique_name};
pub use ping::Ping;
pub use root::require_root;
pub use tap::{Frame, PacketTap};
pub use topology::{MacvlanPods, Pod};
pub use wait::{PATIENCE, until};
