//! The agent's `/metrics` text, read back: samples by name and labels, and the metric families
//! it declares (a family without series yet has only its `# TYPE` line).
use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's name (`multus_interface_receive_packets_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// The line as the agent wrote it.
    pub line: String,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Every family named by a `# TYPE` line.
    pub families: Vec<String>,
}

impl Scrape {
    /// Parses OpenMetrics (or Prometheus) text; lines that do not parse are an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(family) = rest.split_whitespace().next() {
                    out.families.push(family.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            out.samples.push(
                parse_sample(line).ok_or_else(|| anyhow::anyhow!("unreadable line {line:?}"))?,
            );
        }
        Ok(out)
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of the samples [`Scrape::matching`] finds (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether `name` is a sample of this scrape, or a series of a declared family
    /// (`<family>_total`, `_bucket`, `_count`, `_sum`, `_info`, or the family itself).
    #[cfg_attr(not(test), expect(dead_code, reason = "the demo's test uses it"))]
    pub fn knows(&self, name: &str) -> bool {
        if self.samples.iter().any(|s| s.name == name) {
            return true;
        }
        let base = ["_total", "_bucket", "_count", "_sum", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        self.families.iter().any(|f| f == base || f == name)
    }
}

/// `name{a="x",b="y"} value` or `name value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
        line: line.to_owned(),
    })
}

/// `a="x",b="y"`, with `\"` and `\\` escapes in values.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next()?.1),
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end + 1..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn samples_labels_and_families() {
        let text = "# TYPE multus_agent_errors counter\n\
                    # TYPE multus_interface_receive_packets counter\n\
                    multus_interface_receive_packets_total{namespace=\"default\",pod=\"p\\\"1\",network_name=\"default/m\"} 7\n\
                    multus_agent_attached_interfaces 2\n# EOF\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(
            s.sum(
                "multus_interface_receive_packets_total",
                &[("pod", "p\"1"), ("network_name", "default/m")]
            ),
            7.0
        );
        assert_eq!(s.sum("multus_agent_attached_interfaces", &[]), 2.0);
        assert_eq!(
            s.sum("multus_agent_attached_interfaces", &[("pod", "x")]),
            0.0
        );
        assert!(s.knows("multus_agent_errors_total"));
        assert!(!s.knows("multus_agent_nothing_total"));
        assert!(Scrape::parse("garbage").is_err());
    }
}
