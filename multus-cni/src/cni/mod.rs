//! The CNI protocol itself: spec versions, the runtime's request (environment and `CNI_ARGS`),
//! the error reply and its codes, and results with their conversion between spec versions.
pub mod args;
pub mod error;
pub mod request;
pub mod result;
pub mod version;

pub use args::CniArgs;
pub use error::{ErrorReply, code};
pub use request::{Command, Request};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;
