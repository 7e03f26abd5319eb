//! Empty library target: cargo needs one so the workspace can lint the crate on the host.
#![no_std]
