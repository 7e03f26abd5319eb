//! The networks and default-network annotations and CNI_ARGS: errors, never panics; what
//! parses is valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus_cni::{
    cni::{CniArgs, request::validate_ifname},
    network::{is_dns1123_label, parse_default_network, parse_networks},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(elements) = parse_networks(text, "pods") {
        for e in &elements {
            assert!(is_dns1123_label(&e.name));
            assert!(is_dns1123_label(e.namespace()));
            if let Some(ifname) = e.ifname() {
                assert!(validate_ifname(ifname).is_ok());
            }
        }
    }
    let _ = parse_default_network(text, "kube-system");
    if let Ok(args) = CniArgs::parse(text) {
        let _ = CniArgs::parse(&args.for_delegate());
    }
});
