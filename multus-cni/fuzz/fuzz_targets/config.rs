//! The plugin configuration and every delegate configuration in it: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus_cni::{NetConf, delegate::DelegateConf};

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = NetConf::parse(data) {
        for (i, d) in conf.delegates.iter().enumerate() {
            if let Ok(dc) =
                DelegateConf::from_value(d.clone(), Some("fuzz"), &format!("delegates[{i}]"))
            {
                let bytes = dc.to_json_string();
                // What is cached for DEL must parse back to the same configuration.
                let again = DelegateConf::from_bytes(bytes.as_bytes(), None, "cache");
                assert_eq!(again.ok().as_ref(), Some(&dc));
                for p in 0..dc.plugin_types().len() {
                    let _ = dc.plugin_stdin(p, &conf.runtime_config, None, &Default::default());
                }
            }
        }
    }
    let _ = DelegateConf::from_bytes(data, Some("fuzz"), "fuzz");
});
