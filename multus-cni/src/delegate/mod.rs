//! Running delegate plugins: finding the binary, the environment and stdin each plugin of a
//! configuration gets, chaining conflists through `prevResult`, and reading what they return.
pub mod conf;
pub mod exec;
pub mod invoke;

pub use conf::{ConfKind, DelegateConf};
pub use exec::{ChrootExec, CountingExec, Exec, ExecOutput, ProcessExec, find_plugin};
pub use invoke::{Invoker, Target};
