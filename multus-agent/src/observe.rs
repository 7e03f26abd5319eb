//! Drop events in the running agent and `multus-agent observe`: a reader thread drains the
//! dataplane's event ring into a bounded log (and the event metrics); the socket's `GET
//! /events` serves the log as JSON lines, filtered; the command fetches and prints them.
use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use tracing::{debug, warn};

use crate::{
    dataplane::{
        AttachmentRecord, PinLayout,
        events::{self, DropRecord, EventLog, EventReader, EventStatsReader},
    },
    metrics::AgentMetrics,
};

/// The socket endpoint serving the event log.
pub const EVENTS_ENDPOINT: &str = "/events";

/// How often the kernel's suppressed and lost counters are read into the metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Which events to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod name.
    pub pod: Option<String>,
    /// Network (`namespace/name`, or just the name).
    pub network: Option<String>,
    /// `ingress` or `egress`.
    pub direction: Option<String>,
    /// A drop reason label (`policy_deny`, `default_deny`, `spoofed`, ...).
    pub reason: Option<String>,
    /// Only the last N that match.
    pub last: Option<usize>,
    /// Only records logged after this sequence number (`--follow`).
    pub after: Option<u64>,
    /// Only drops at or after this time, milliseconds since the Unix epoch (`--since`).
    pub since_ms: Option<u64>,
}

impl Filter {
    /// Whether `r` passes the filter.
    pub fn matches(&self, r: &DropRecord) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let network = self.network.as_deref().is_none_or(|w| {
            r.network == w
                || r.network
                    .rsplit_once('/')
                    .is_some_and(|(_, name)| name == w)
        });
        is(&self.namespace, &r.namespace)
            && is(&self.pod, &r.pod)
            && network
            && is(&self.direction, &r.direction)
            && is(&self.reason, &r.reason)
            && self.after.is_none_or(|seq| r.seq > seq)
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
    }

    /// The filter as a query string.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        for (key, value) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("network", &self.network),
            ("direction", &self.direction),
            ("reason", &self.reason),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", encode(v)));
            }
        }
        if let Some(n) = self.last {
            parts.push(format!("last={n}"));
        }
        if let Some(n) = self.after {
            parts.push(format!("after={n}"));
        }
        if let Some(t) = self.since_ms {
            parts.push(format!("since={t}"));
        }
        parts.join("&")
    }

    /// Parses a query string; unknown keys are an error.
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or_else(|| format!("bad escape in {key}"))?;
            match key {
                "namespace" => f.namespace = Some(value),
                "pod" => f.pod = Some(value),
                "network" => f.network = Some(value),
                "direction" => f.direction = Some(value),
                "reason" => f.reason = Some(value),
                "last" => {
                    f.last = Some(value.parse().map_err(|_| format!("last={value:?}"))?);
                }
                "after" => {
                    f.after = Some(value.parse().map_err(|_| format!("after={value:?}"))?);
                }
                "since" => {
                    f.since_ms = Some(value.parse().map_err(|_| format!("since={value:?}"))?);
                }
                other => return Err(format!("unknown filter {other:?}")),
            }
        }
        Ok(f)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The log's records `filter` selects, as JSON lines.
pub fn json_lines(log: &EventLog, filter: &Filter) -> String {
    let mut out = String::new();
    for r in log.select(|r| filter.matches(r), filter.last) {
        if let Ok(line) = serde_json::to_string(&r) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Starts the thread that drains `reader` into `log` until the process ends.
pub fn spawn_reader(
    mut reader: EventReader,
    layout: PinLayout,
    log: Arc<EventLog>,
    metrics: AgentMetrics,
) -> anyhow::Result<()> {
    let stats = EventStatsReader::open(&layout).context("opening the drop event counters")?;
    std::thread::Builder::new()
        .name("drop-events".to_owned())
        .spawn(move || {
            let boot = events::boot_time();
            let mut last_counts: HashMap<u32, events::EventCounts> = HashMap::new();
            let mut last_stats = Instant::now();
            loop {
                if let Err(e) = reader.wait(Duration::from_secs(1)) {
                    warn!("waiting for drop events: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                let raw = reader.drain();
                // One record read per attachment and batch: ids are reused after a detach.
                let mut records: HashMap<u32, Option<AttachmentRecord>> = HashMap::new();
                for ev in &raw {
                    let record = records.entry(ev.attach_id).or_insert_with(|| {
                        AttachmentRecord::load(&layout.record(ev.attach_id)).ok()
                    });
                    let r = events::resolve(ev, record.as_ref(), boot);
                    debug!(
                        pod = %format!("{}/{}", r.namespace, r.pod),
                        interface = %r.interface,
                        direction = %r.direction,
                        reason = %r.reason,
                        rule = %r.rule,
                        "drop"
                    );
                    log.push(r);
                }
                metrics.drop_events(raw.len() as u64, 0, 0);
                if last_stats.elapsed() >= STATS_INTERVAL {
                    last_stats = Instant::now();
                    let (suppressed, lost) = stats_delta(&stats, &layout, &mut last_counts);
                    metrics.drop_events(0, suppressed, lost);
                }
            }
        })
        .context("starting the drop event reader")?;
    Ok(())
}

/// Suppressed and lost events since the last call, over the current attachments (a counter
/// that went backwards belongs to a new attachment under a reused id: all of it is new).
fn stats_delta(
    stats: &EventStatsReader,
    layout: &PinLayout,
    last: &mut HashMap<u32, events::EventCounts>,
) -> (u64, u64) {
    let Ok((records, _)) = AttachmentRecord::load_all(&layout.records()) else {
        return (0, 0);
    };
    let mut seen = HashMap::new();
    let (mut suppressed, mut lost) = (0, 0);
    for record in records {
        let Ok(now) = stats.counts(record.id) else {
            continue;
        };
        let before = last.get(&record.id).copied().unwrap_or_default();
        suppressed += now
            .suppressed
            .checked_sub(before.suppressed)
            .unwrap_or(now.suppressed);
        lost += now.lost.checked_sub(before.lost).unwrap_or(now.lost);
        seen.insert(record.id, now);
    }
    *last = seen;
    (suppressed, lost)
}

/// Fetches the events `filter` selects from the agent listening in `socket_dir`.
pub fn fetch(socket_dir: &Path, filter: &Filter) -> anyhow::Result<Vec<DropRecord>> {
    let path = multus_cni::thick::socket_path(socket_dir);
    let mut stream = UnixStream::connect(&path)
        .with_context(|| format!("connecting to the agent at {}", path.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .context("setting a read timeout")?;
    let query = filter.to_query();
    write!(
        stream,
        "GET {EVENTS_ENDPOINT}?{query} HTTP/1.1\r\nHost: multus-agent\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("writing to {}", path.display()))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading from {}", path.display()))?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("a response without headers from {}", path.display());
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("the agent answered {status}: {}", body.trim());
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("an event line: {l}")))
        .collect()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// A table of drop records, one per line, oldest first; each column as wide as its widest cell.
pub fn table(records: &[DropRecord]) -> String {
    const HEADER: [&str; 8] = [
        "TIME",
        "POD",
        "IFACE",
        "DIR",
        "PROTO",
        "SOURCE -> DESTINATION",
        "REASON",
        "RULE",
    ];
    let endpoint = |addr: Option<std::net::IpAddr>, port: Option<u16>| match (addr, port) {
        (Some(std::net::IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "-".to_owned(),
    };
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            let mut flow = format!(
                "{} -> {}",
                endpoint(r.src, r.sport),
                endpoint(r.dst, r.dport)
            );
            if let Some((t, c)) = r.icmp {
                flow.push_str(&format!(" type {t} code {c}"));
            }
            let reason = if r.audit {
                format!("{} (audit)", r.reason)
            } else {
                r.reason.clone()
            };
            [
                time_text(r.time_ms),
                format!("{}/{}", r.namespace, r.pod),
                r.interface.clone(),
                r.direction.clone(),
                r.protocol.clone(),
                flow,
                reason,
                r.rule.clone(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$} ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of milliseconds since the epoch (UTC).
fn time_text(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `--since`: an RFC 3339 time (`2026-12-03T09:00:00Z`), or a duration back from `now`
/// (`90s`, `5m`, `1h30m`), as milliseconds since the epoch.
pub fn since_ms(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    let at = if let Ok(t) = text.parse::<jiff::Timestamp>() {
        t
    } else {
        let back: jiff::SignedDuration = text.parse().map_err(|_| {
            format!(
                "--since {text:?}: neither a time (2026-12-03T09:00:00Z) nor a duration (5m, 1h30m)"
            )
        })?;
        if back.is_negative() {
            return Err(format!(
                "--since {text:?}: a duration back in time cannot be negative"
            ));
        }
        let now = jiff::Timestamp::try_from(now).map_err(|e| format!("the clock: {e}"))?;
        now.checked_sub(back)
            .map_err(|e| format!("--since {text:?}: {e}"))?
    };
    u64::try_from(at.as_millisecond()).map_err(|_| format!("--since {text:?}: before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_survives_the_query_string() {
        let f = Filter {
            namespace: Some("infra".into()),
            network: Some("infra/storage net".into()),
            reason: Some("policy_deny".into()),
            last: Some(7),
            ..Filter::default()
        };
        assert_eq!(Filter::from_query(&f.to_query()).unwrap(), f);
        assert!(Filter::from_query("colour=red").is_err());
        assert!(Filter::from_query("pod=%zz").is_err());
    }

    #[test]
    fn the_table_aligns_long_cells() {
        let record = |src: &str, rule: &str| DropRecord {
            seq: 1,
            time_ms: 0,
            attachment: 1,
            namespace: "default".into(),
            pod: "samplepod-1".into(),
            network: "default/macvlan-conf".into(),
            interface: "net1".into(),
            direction: "ingress".into(),
            reason: "policy_deny".into(),
            audit: false,
            protocol: "icmp".into(),
            src: Some(src.parse().unwrap()),
            dst: Some("198.51.100.200".parse().unwrap()),
            sport: None,
            dport: None,
            icmp: Some((8, 0)),
            len: 98,
            rule: rule.into(),
        };
        let table = table(&[record("198.51.100.201", "a"), record("2001:db8::1", "b")]);
        let at: Vec<usize> = table
            .lines()
            .map(|l| l.find("REASON").or_else(|| l.find("policy_deny")).unwrap())
            .collect();
        assert!(at.iter().all(|a| *a == at[0]), "{table}");
        assert!(
            table.contains("198.51.100.201 -> 198.51.100.200 type 8 code 0 "),
            "{table}"
        );
    }

    #[test]
    fn civil_time_of_known_instants() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_text(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(since_ms("2000-02-29T00:00:00.5Z", now), Ok(951_782_400_500));
        assert_eq!(since_ms("90s", now), Ok(951_782_310_000));
        assert_eq!(since_ms("1h30m", now), Ok(951_777_000_000));
        for bad in ["yesterday", "", "-5m", "2000-02-30T00:00:00Z"] {
            assert!(since_ms(bad, now).is_err(), "{bad:?}");
        }
        let f = Filter {
            since_ms: Some(951_782_310_000),
            ..Filter::default()
        };
        assert_eq!(Filter::from_query(&f.to_query()).unwrap(), f);
    }
}
