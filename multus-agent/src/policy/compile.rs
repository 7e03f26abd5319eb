//! One attachment's policy from everything that applies to it: its network's NAD annotation
//! and the MultiNetworkPolicies for that network that select its pod. A packet must pass both.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Policy;
use super::{
    canonical::canonical,
    combine::intersect,
    error::CompileError,
    inputs::{AttachmentKey, LocalAttachment, ObjectKey},
    resolve::mnp_policy,
    snapshot::Snapshot,
};

/// Where an attachment's policy comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicySource {
    /// The NAD whose policy annotation applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nad: Option<ObjectKey>,
    /// The MultiNetworkPolicies that select the attachment, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ObjectKey>,
}

impl PolicySource {
    /// `nad`, `mnp` or `nad+mnp`: a label value of bounded cardinality.
    pub fn kind(&self) -> &'static str {
        match (self.nad.is_some(), self.policies.is_empty()) {
            (true, true) => "nad",
            (false, _) => "mnp",
            (true, false) => "nad+mnp",
        }
    }
}

impl fmt::Display for PolicySource {
    /// `nad:prod/blue`, `mnp:prod/web,prod/db`, or both joined by `+`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(nad) = &self.nad {
            parts.push(format!("nad:{nad}"));
        }
        if !self.policies.is_empty() {
            let names: Vec<String> = self.policies.iter().map(ToString::to_string).collect();
            parts.push(format!("mnp:{}", names.join(",")));
        }
        f.write_str(&parts.join("+"))
    }
}

impl std::str::FromStr for PolicySource {
    type Err = InvalidPolicySource;

    /// Reads what [`fmt::Display`] writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPolicySource(s.to_owned());
        let mut out = Self::default();
        for part in s.split('+') {
            let key = |k: &str| ObjectKey::parse(k).ok_or_else(invalid);
            match part.split_once(':') {
                Some(("nad", nad)) if out.nad.is_none() && out.policies.is_empty() => {
                    out.nad = Some(key(nad)?);
                }
                Some(("mnp", list)) if out.policies.is_empty() => {
                    out.policies = list.split(',').map(key).collect::<Result<_, _>>()?;
                }
                _ => return Err(invalid()),
            }
        }
        if out.nad.is_none() && out.policies.is_empty() {
            return Err(invalid());
        }
        Ok(out)
    }
}

/// A policy source text that [`PolicySource`]'s display did not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a policy source: {0:?} (expected nad:<ns>/<name>, mnp:<ns>/<name>,... or both joined by +)"
)]
pub struct InvalidPolicySource(pub String);

/// A compiled policy and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    /// What to install.
    pub policy: Policy,
    /// Which objects made it.
    pub source: PolicySource,
}

/// Compiles the policy of a local attachment. `Ok(None)`: nothing applies (count only, allow
/// everything). Fails when a policy object that applies (or may apply) is invalid: the caller
/// keeps the previous policy in force.
pub fn compile(
    snapshot: &Snapshot,
    key: &AttachmentKey,
) -> Result<Option<CompiledPolicy>, CompileError> {
    let local = snapshot
        .local(key)
        .ok_or_else(|| CompileError::UnknownAttachment(key.clone()))?;
    compile_attachment(snapshot, local)
}

/// [`compile`] for an attachment given directly (it need not be in the snapshot).
pub fn compile_attachment(
    snapshot: &Snapshot,
    local: &LocalAttachment,
) -> Result<Option<CompiledPolicy>, CompileError> {
    let key = local.key();
    let pod = snapshot
        .pod(&local.pod)
        .ok_or_else(|| CompileError::UnknownPod {
            attachment: key.clone(),
        })?;
    let mut errors = Vec::new();
    let nad = match snapshot.nad(&local.network).and_then(|n| n.policy.as_ref()) {
        Some(Ok(policy)) => Some(policy),
        Some(Err(e)) => {
            errors.push(e.clone());
            None
        }
        None => None,
    };
    let mut applying = Vec::new();
    for entry in snapshot.mnps_in(&pod.key.namespace) {
        if !entry.may_apply(&local.network, pod) {
            continue;
        }
        match &entry.rules {
            Ok(rules) => applying.push((entry, rules)),
            Err(e) => errors.push(e.clone()),
        }
    }
    if !errors.is_empty() {
        return Err(CompileError::InvalidObjects {
            attachment: key,
            errors,
        });
    }
    let source = PolicySource {
        nad: nad.map(|_| local.network.clone()),
        policies: applying.iter().map(|(e, _)| e.key.clone()).collect(),
    };
    let from_nad = nad.map(|p| p.policy_for(local));
    let from_mnps = mnp_policy(snapshot, pod, &local.network, &applying);
    let policy = match (from_nad, from_mnps) {
        (None, None) => return Ok(None),
        (Some(p), None) | (None, Some(p)) => p,
        (Some(nad), Some(mnps)) => intersect(&nad, &mnps),
    };
    let policy = canonical(policy);
    policy
        .validate()
        .map_err(|source| CompileError::Uninstallable {
            attachment: key,
            source,
        })?;
    Ok(Some(CompiledPolicy { policy, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_back_what_they_display() {
        let both = PolicySource {
            nad: Some(ObjectKey::new("infra", "storage")),
            policies: vec![ObjectKey::new("prod", "web"), ObjectKey::new("prod", "db")],
        };
        let text = both.to_string();
        assert_eq!(text, "nad:infra/storage+mnp:prod/web,prod/db");
        assert_eq!(text.parse::<PolicySource>().unwrap(), both);
        assert_eq!(both.kind(), "nad+mnp");
        let nad: PolicySource = "nad:a/b".parse().unwrap();
        assert_eq!(nad.kind(), "nad");
        let mnp: PolicySource = "mnp:a/b".parse().unwrap();
        assert_eq!(mnp.kind(), "mnp");
        for bad in [
            "",
            "nad:",
            "nad:a",
            "x:a/b",
            "mnp:a/b+nad:c/d",
            "nad:a/b+nad:c/d",
        ] {
            assert!(bad.parse::<PolicySource>().is_err(), "{bad:?}");
        }
    }
}
