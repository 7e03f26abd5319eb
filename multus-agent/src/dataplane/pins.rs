//! Where the dataplane keeps its state: the layout is part of the thick-mode contract (the shim's
//! DEL fallback and `multus-agent status` read it too), so it lives in
//! [`multus_cni::thick::layout`].
pub use multus_cni::thick::layout::{EGRESS_LINK, INGRESS_LINK, PinLayout};
