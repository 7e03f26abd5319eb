//! The subnets a network's CNI config assigns addresses from, for the `isolate` shorthand.
//!
//! Read from the `ipam` section of the config (or of each plugin of a conflist), whatever the
//! IPAM plugin's type:
//! - host-local: `ranges[][].subnet`, and the older single `subnet`;
//! - static: the prefixes of `addresses[].address`;
//! - whereabouts: `range` (also in its `first-last/len` form) and `ipRanges[].range`.
use ipnet::IpNet;
use serde_json::Value;

/// The network's subnets (host bits cleared, sorted, without duplicates); empty when the config
/// names none (DHCP, addresses given at run time). Fails on a config that is not JSON or on an
/// address field that does not parse.
pub fn subnets(config: &str) -> Result<Vec<IpNet>, String> {
    let config: Value =
        serde_json::from_str(config).map_err(|e| format!("the CNI config is not JSON: {e}"))?;
    let mut out = Vec::new();
    match config.get("plugins").and_then(Value::as_array) {
        Some(plugins) => {
            for (i, plugin) in plugins.iter().enumerate() {
                if let Some(ipam) = plugin.get("ipam") {
                    from_ipam(ipam, &format!("plugins[{i}].ipam"), &mut out)?;
                }
            }
        }
        None => {
            if let Some(ipam) = config.get("ipam") {
                from_ipam(ipam, "ipam", &mut out)?;
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn from_ipam(ipam: &Value, path: &str, out: &mut Vec<IpNet>) -> Result<(), String> {
    for (i, set) in array(ipam, "ranges").enumerate() {
        for (j, range) in set.as_array().into_iter().flatten().enumerate() {
            if let Some(subnet) = range.get("subnet") {
                out.push(cidr(subnet, &format!("{path}.ranges[{i}][{j}].subnet"))?);
            }
        }
    }
    if let Some(subnet) = ipam.get("subnet") {
        out.push(cidr(subnet, &format!("{path}.subnet"))?);
    }
    for (i, address) in array(ipam, "addresses").enumerate() {
        if let Some(address) = address.get("address") {
            out.push(cidr(address, &format!("{path}.addresses[{i}].address"))?);
        }
    }
    if let Some(range) = ipam.get("range") {
        out.push(cidr(range, &format!("{path}.range"))?);
    }
    for (i, range) in array(ipam, "ipRanges").enumerate() {
        if let Some(range) = range.get("range") {
            out.push(cidr(range, &format!("{path}.ipRanges[{i}].range"))?);
        }
    }
    Ok(())
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn cidr(v: &Value, path: &str) -> Result<IpNet, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{path}: expected a CIDR string, found {v}"))?;
    // Whereabouts also takes `first-last/len`: the prefix is what matters here.
    let text = s.rsplit_once('-').map_or(s, |(_, last)| last);
    text.trim()
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{path}: {s:?} is not a CIDR"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn every_ipam_shape() {
        let cases = [
            (
                r#"{"type":"macvlan","ipam":{"type":"host-local",
                    "ranges":[[{"subnet":"192.0.2.0/24","rangeStart":"192.0.2.10"}],
                              [{"subnet":"2001:db8:1::/64"}]]}}"#,
                nets(&["192.0.2.0/24", "2001:db8:1::/64"]),
            ),
            (
                r#"{"ipam":{"type":"host-local","subnet":"198.51.100.0/25"}}"#,
                nets(&["198.51.100.0/25"]),
            ),
            (
                r#"{"ipam":{"type":"static","addresses":[{"address":"203.0.113.7/24"},
                    {"address":"2001:db8::7/64"}]}}"#,
                nets(&["203.0.113.0/24", "2001:db8::/64"]),
            ),
            (
                r#"{"ipam":{"type":"whereabouts","range":"192.0.2.192/27"}}"#,
                nets(&["192.0.2.192/27"]),
            ),
            (
                r#"{"ipam":{"type":"whereabouts","range":"192.0.2.225-192.0.2.230/28"}}"#,
                nets(&["192.0.2.224/28"]),
            ),
            (
                r#"{"ipam":{"type":"whereabouts","ipRanges":[{"range":"192.0.2.0/24"},
                    {"range":"2001:db8::/64"}]}}"#,
                nets(&["192.0.2.0/24", "2001:db8::/64"]),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"x","plugins":[
                    {"type":"bridge","ipam":{"type":"host-local","subnet":"192.0.2.0/24"}},
                    {"type":"tuning"}]}"#,
                nets(&["192.0.2.0/24"]),
            ),
            (r#"{"ipam":{"type":"dhcp"}}"#, vec![]),
            (r#"{"type":"macvlan"}"#, vec![]),
        ];
        for (config, want) in cases {
            assert_eq!(subnets(config).unwrap(), want, "{config}");
        }
    }

    #[test]
    fn bad_configs_say_where() {
        assert_eq!(
            subnets(r#"{"ipam":{"ranges":[[{"subnet":"nope"}]]}}"#).unwrap_err(),
            r#"ipam.ranges[0][0].subnet: "nope" is not a CIDR"#
        );
        assert_eq!(
            subnets(r#"{"plugins":[{"ipam":{"subnet":7}}]}"#).unwrap_err(),
            "plugins[0].ipam.subnet: expected a CIDR string, found 7"
        );
        assert!(
            subnets("{")
                .unwrap_err()
                .starts_with("the CNI config is not JSON")
        );
    }
}
