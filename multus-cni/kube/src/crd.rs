//! The custom resources multus reads, derived with kube: NetworkAttachmentDefinition
//! (`k8s.cni.cncf.io/v1`) and MultiNetworkPolicy (`k8s.cni.cncf.io` v1beta1 and v1beta2).
//!
//! Names, versions and schemas follow the NPWG spec and k8snetworkplumbingwg/multi-networkpolicy,
//! so objects written for Multus work unchanged.
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{CustomResource, CustomResourceExt as _, core::crd::merge_crds};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NAD annotation naming the device-plugin resource whose device IDs the delegate gets.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// MultiNetworkPolicy annotation listing the networks (`[ns/]nad`, comma separated) it applies to.
pub const POLICY_FOR_ANNOTATION: &str = "k8s.v1.cni.cncf.io/policy-for";
/// The MultiNetworkPolicy version the API server stores (a superset of v1beta1).
pub const MNP_STORAGE_VERSION: &str = "v1beta2";

// The spec is optional (NPWG §3.4.1): a NAD without one names a config file on disk. The CRD
// schema allows that (see `network_attachment_definition_crd`); readers that must accept such
// objects go through `nad_from_value`, since the derived type requires `spec`. The doc line
// below becomes the schema's description.
/// A secondary network; without `config`, the CNI config file of the same name on the node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "nad",
    shortname = "net-attach-def",
    namespaced,
    derive = "Default",
    derive = "PartialEq"
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration (conf or conflist) as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// A NetworkAttachmentDefinition from its JSON form, with a missing `spec` read as empty.
pub fn nad_from_value(
    mut value: serde_json::Value,
) -> Result<NetworkAttachmentDefinition, serde_json::Error> {
    if let Some(obj) = value.as_object_mut() {
        obj.entry("spec")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    serde_json::from_value(value)
}

/// One port (or port range with `endPort`) a rule matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiNetworkPolicyPort {
    /// TCP, UDP or SCTP; TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A port number or a named container port; all ports when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// The last port of a range starting at `port` (numeric `port` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// A CIDR with optional excluded sub-ranges.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpBlock {
    /// The allowed range, e.g. `192.0.2.0/24`.
    pub cidr: String,
    /// Ranges inside `cidr` that are not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
}

/// A rule peer: pods by label (optionally in namespaces by label), or an address block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiNetworkPolicyPeer {
    /// Pods selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// An address block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// Traffic allowed into the selected pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiNetworkPolicyIngressRule {
    /// Ports matched; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<MultiNetworkPolicyPort>>,
    /// Sources matched; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<MultiNetworkPolicyPeer>>,
}

/// Traffic allowed out of the selected pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiNetworkPolicyEgressRule {
    /// Ports matched; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<MultiNetworkPolicyPort>>,
    /// Destinations matched; all when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<MultiNetworkPolicyPeer>>,
}

/// Declares the MultiNetworkPolicy type of one API version; the versions differ only in name.
macro_rules! multi_network_policy_version {
    ($(#[$doc:meta])* $module:ident, $version:literal) => {
        $(#[$doc])*
        pub mod $module {
            use super::{
                CustomResource, Deserialize, JsonSchema, LabelSelector,
                MultiNetworkPolicyEgressRule, MultiNetworkPolicyIngressRule, Serialize,
            };

            /// A NetworkPolicy for the secondary networks named in its `policy-for` annotation.
            #[derive(
                CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
            )]
            #[kube(
                group = "k8s.cni.cncf.io",
                version = $version,
                kind = "MultiNetworkPolicy",
                plural = "multi-networkpolicies",
                singular = "multi-networkpolicy",
                shortname = "multi-policy",
                namespaced,
                derive = "PartialEq"
            )]
            #[serde(rename_all = "camelCase")]
            pub struct MultiNetworkPolicySpec {
                /// The pods the policy applies to (all in the namespace when empty).
                pub pod_selector: LabelSelector,
                /// Allowed incoming traffic.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub ingress: Option<Vec<MultiNetworkPolicyIngressRule>>,
                /// Allowed outgoing traffic.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub egress: Option<Vec<MultiNetworkPolicyEgressRule>>,
                /// `Ingress` and/or `Egress`.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub policy_types: Option<Vec<String>>,
            }
        }
    };
}

multi_network_policy_version!(
    /// MultiNetworkPolicy `k8s.cni.cncf.io/v1beta2`, the storage version (has `endPort`).
    v1beta2,
    "v1beta2"
);

multi_network_policy_version!(
    /// MultiNetworkPolicy `k8s.cni.cncf.io/v1beta1`. Its ports accept `endPort` too, as the
    /// upstream Go module (v1.0.1) and multi-networkpolicy-iptables do; without it the API
    /// server would silently prune ranges from existing v1beta1 manifests.
    v1beta1,
    "v1beta1"
);

/// The NetworkAttachmentDefinition CRD. `spec` is made optional in the schema (the derive
/// would require it), matching NPWG §3.2 and Multus's own CRD.
pub fn network_attachment_definition_crd() -> CustomResourceDefinition {
    let mut crd = NetworkAttachmentDefinition::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            && let Some(required) = schema.required.as_mut()
        {
            required.retain(|r| r != "spec");
            if required.is_empty() {
                schema.required = None;
            }
        }
    }
    crd
}

/// The MultiNetworkPolicy CRD with both versions served and v1beta2 stored.
pub fn multi_network_policy_crd() -> CustomResourceDefinition {
    // Both inputs are single-version CRDs of the same group and kind, the only case merge_crds
    // rejects otherwise; the fallback keeps the storage version rather than panicking.
    merge_crds(
        vec![
            v1beta1::MultiNetworkPolicy::crd(),
            v1beta2::MultiNetworkPolicy::crd(),
        ],
        MNP_STORAGE_VERSION,
    )
    .unwrap_or_else(|_| v1beta2::MultiNetworkPolicy::crd())
}

/// Every CRD with the file name it is kept under in `deploy/` (the `00-` prefix has
/// `kubectl apply -f deploy/` create them first).
pub fn all_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "00-crd-network-attachment-definitions.yaml",
            network_attachment_definition_crd(),
        ),
        (
            "00-crd-multi-networkpolicies.yaml",
            multi_network_policy_crd(),
        ),
    ]
}

/// The YAML text of a CRD as committed in `deploy/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated from the types in multus-cni/kube/src/crd.rs by `cargo xtask manifests`.\n\
         # Do not edit: a test fails when this file differs from what the types generate.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn nad_without_spec_deserializes() {
        let nad = nad_from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf"}}))
        .unwrap();
        assert_eq!(nad.metadata.name.as_deref(), Some("macvlan-conf"));
        assert_eq!(nad.spec.config, None);
        let crd = network_attachment_definition_crd();
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["nad".to_owned(), "net-attach-def".to_owned()][..])
        );
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        assert!(
            schema
                .required
                .as_ref()
                .is_none_or(|r| !r.iter().any(|x| x == "spec"))
        );
    }

    #[test]
    fn mnp_has_both_versions_one_stored() {
        let crd = multi_network_policy_crd();
        let mut versions: Vec<(&str, bool, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        versions.sort_unstable();
        assert_eq!(
            versions,
            vec![("v1beta1", true, false), ("v1beta2", true, true)]
        );
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["multi-policy".to_owned()])
        );
        assert_eq!(crd.spec.scope, "Namespaced");
    }
}
