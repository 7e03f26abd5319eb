//! `cargo xtask manifests`: regenerates the manifests in `deploy/` that come from another
//! source: the CRD YAML from the Rust types, and the agent's ConfigMap from
//! `deploy/config/agent-config.json`. Tests fail when the committed files differ.
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::shell::{Cmd, note, step};

/// The agent configuration file the ConfigMap carries.
pub const AGENT_CONFIG: &str = "deploy/config/agent-config.json";
/// The ConfigMap manifest.
pub const AGENT_CONFIG_MAP: &str = "deploy/20-agent-config.yaml";
/// The key of the configuration in the ConfigMap (the file name the agent reads).
const CONFIG_KEY: &str = "agent-config.json";

/// Writes every generated manifest.
pub fn run() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))?;
    step("CRD manifests");
    Cmd::new("cargo")
        .args([
            "run",
            "--quiet",
            "--package",
            "multus-kube",
            "--example",
            "crdgen",
            "--",
        ])
        .args([root.join("deploy")])
        .run()?;
    step("the agent's ConfigMap");
    let source = root.join(AGENT_CONFIG);
    let json = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let target = root.join(AGENT_CONFIG_MAP);
    std::fs::write(&target, config_map(&json)?)
        .with_context(|| format!("writing {}", target.display()))?;
    note(&format!("wrote {}", target.display()));
    Ok(())
}

/// The ConfigMap holding `json` (the agent configuration) under [`CONFIG_KEY`], as a YAML
/// literal block so the file's bytes arrive unchanged.
fn config_map(json: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("{AGENT_CONFIG} is not JSON"))?;
    if !value.is_object() {
        bail!("{AGENT_CONFIG} is not a JSON object");
    }
    if !json.ends_with('\n') || json.ends_with("\n\n") {
        bail!("{AGENT_CONFIG} must end with exactly one newline (a YAML literal block keeps one)");
    }
    let header = [
        format!("# Generated from {AGENT_CONFIG} by `cargo xtask manifests`."),
        "# Do not edit: a test fails when this file differs from it.".to_owned(),
        "apiVersion: v1".to_owned(),
        "kind: ConfigMap".to_owned(),
        "metadata:".to_owned(),
        "  name: multus-agent-config".to_owned(),
        "  namespace: kube-system".to_owned(),
        "  labels:".to_owned(),
        "    app.kubernetes.io/name: multus-agent".to_owned(),
        "    app.kubernetes.io/part-of: multus-rs".to_owned(),
        "data:".to_owned(),
        format!("  {CONFIG_KEY}: |"),
    ];
    let mut out = header.join("\n");
    out.push('\n');
    for line in json.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_committed_config_map_is_generated_from_the_config_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let json = std::fs::read_to_string(root.join(AGENT_CONFIG)).unwrap();
        let have = std::fs::read_to_string(root.join(AGENT_CONFIG_MAP)).unwrap();
        assert!(
            have == config_map(&json).unwrap(),
            "{AGENT_CONFIG_MAP} is out of date: run `cargo xtask manifests` and commit the result"
        );
    }
}
