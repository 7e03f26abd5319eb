//! CNI results in any version: errors, never panics; conversion round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus_cni::cni::{CniResult, CniVersion};

fuzz_target!(|data: &[u8]| {
    let Ok(result) = CniResult::parse(data) else {
        return;
    };
    let newest = result.to_value(CniVersion::LATEST);
    for v in CniVersion::ALL {
        let converted = result.to_value(v);
        let back = CniResult::from_value(converted).expect("a converted result parses");
        assert_eq!(back.to_value(v), result.to_value(v));
    }
    let again = CniResult::from_value(newest.clone()).expect("the newest form parses");
    assert_eq!(again.to_value(CniVersion::LATEST), newest);
});
