//! Multus's scratch cache (what DEL reads for pods Multus set up): errors, never panics; every
//! delegate read keeps its configuration bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus_cni::engine::multus_cache::scratch;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if !scratch::is_scratch(&value) {
        return;
    }
    if let Ok(delegates) = scratch::parse(&value) {
        assert!(delegates.iter().all(|d| !d.config.is_empty()));
    }
});
