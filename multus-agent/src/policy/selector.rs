//! Kubernetes label selectors: `matchLabels` AND `matchExpressions` (In, NotIn, Exists,
//! DoesNotExist), checked once when a policy is read and then matched against label maps.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::error::FieldError;

/// The label every namespace carries with its own name (set by Kubernetes 1.21 and newer, and
/// assumed here for namespaces of older clusters and local files).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A checked label selector; all requirements must hold. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Checks `selector` (at `path`, for errors).
    pub fn parse(selector: &LabelSelector, path: &str) -> Result<Self, FieldError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            if key.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.matchLabels"),
                    "empty label key",
                ));
            }
            requirements.push(Requirement {
                key: key.clone(),
                op: Op::In(BTreeSet::from([value.clone()])),
            });
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            if expr.key.is_empty() {
                return Err(FieldError::new(format!("{at}.key"), "empty label key"));
            }
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} needs at least one value", expr.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} takes no values", expr.operator),
                    ));
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(FieldError::new(
                        format!("{at}.operator"),
                        format!(
                            "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                        ),
                    ));
                }
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                op,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement. `NotIn` and `DoesNotExist` hold for a label
    /// that is absent, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(|key| labels.get(key).map(String::as_str))
    }

    /// Whether a namespace with these labels matches, counting its name label as present.
    pub fn matches_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(|key| match labels.get(key) {
            Some(value) => Some(value.as_str()),
            None if key == NAMESPACE_NAME_LABEL => Some(name),
            None => None,
        })
    }

    fn matches_by<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            match &r.op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::parse(
            &LabelSelector {
                match_labels: Some(labels(match_labels)),
                match_expressions: Some(exprs),
            },
            "s",
        )
        .unwrap()
    }

    #[test]
    fn operators_follow_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            (selector(&[], vec![]), [true, true, true]),
            (selector(&[("app", "web")], vec![]), [true, false, false]),
            (
                selector(&[], vec![expr("app", "In", &["web", "db"])]),
                [true, true, false],
            ),
            (
                selector(&[], vec![expr("app", "NotIn", &["web"])]),
                [false, true, true],
            ),
            (
                selector(&[], vec![expr("tier", "Exists", &[])]),
                [true, false, false],
            ),
            (
                selector(&[], vec![expr("tier", "DoesNotExist", &[])]),
                [false, true, true],
            ),
            (
                selector(&[("app", "web")], vec![expr("tier", "NotIn", &["back"])]),
                [true, false, false],
            ),
        ];
        for (i, (sel, want)) in cases.iter().enumerate() {
            let got = [sel.matches(&web), sel.matches(&db), sel.matches(&none)];
            assert_eq!(&got, want, "case {i}: {sel:?}");
        }
    }

    #[test]
    fn namespaces_match_by_name_label() {
        let sel = selector(&[(NAMESPACE_NAME_LABEL, "prod")], vec![]);
        assert!(sel.matches_namespace("prod", &labels(&[])));
        assert!(!sel.matches_namespace("dev", &labels(&[])));
    }

    #[test]
    fn bad_selectors_name_the_field() {
        let cases = [
            (
                expr("a", "In", &[]),
                "s.matchExpressions[0].values: operator In needs at least one value",
            ),
            (
                expr("a", "Exists", &["x"]),
                "s.matchExpressions[0].values: operator Exists takes no values",
            ),
            (
                expr("a", "Equals", &["x"]),
                "s.matchExpressions[0].operator: unknown operator \"Equals\" (expected In, \
                 NotIn, Exists or DoesNotExist)",
            ),
            (
                expr("", "Exists", &[]),
                "s.matchExpressions[0].key: empty label key",
            ),
        ];
        for (e, want) in cases {
            let err = Selector::parse(
                &LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![e]),
                },
                "s",
            )
            .unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
