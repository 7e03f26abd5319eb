//! `/metrics`, scraped as Prometheus does: from the agent pod's address and its `metrics` port.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use super::{agent::running_pod, quickstart::NETWORK};
use crate::{demo::scrape::Scrape, e2e::Cluster, shell::note};

/// Scrapes the running agent pod.
pub fn scrape(cluster: &Cluster) -> anyhow::Result<Scrape> {
    let pod = running_pod(cluster)?.context("no ready agent pod")?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .context("agent pod without podIP")?;
    let port = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["ports"].as_array())
        .flatten()
        .find(|p| p["name"] == "metrics")
        .and_then(|p| p["containerPort"].as_u64())
        .context("agent pod without a metrics port")?;
    let text = http_get(&format!("{ip}:{port}"), "/metrics")?;
    Scrape::parse(&text)
}

fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The labels of samplepod-1's net1 series.
pub fn a_labels() -> [(&'static str, &'static str); 4] {
    [
        ("pod", "samplepod-1"),
        ("namespace", "default"),
        ("network_name", NETWORK),
        ("interface", "net1"),
    ]
}

/// Checks the per-interface series and the drops of the policy steps; returns the scrape.
pub fn check(cluster: &mut Cluster) -> anyhow::Result<Scrape> {
    let scrape = scrape(cluster)?;
    let labels = a_labels();
    for name in [
        "multus_interface_receive_packets_total",
        "multus_interface_transmit_packets_total",
        "multus_interface_receive_bytes_total",
    ] {
        let value = scrape.sum(name, &labels);
        ensure!(
            scrape.matching(name, &labels).count() == 1 && value > 0.0,
            "no {name} for samplepod-1's net1 (or zero)"
        );
        note(&format!(
            "{name}{{pod=samplepod-1,interface=net1}} = {value}"
        ));
    }
    for pod in ["samplepod-2", "samplepod-3"] {
        let labels = [
            ("pod", pod),
            ("namespace", "default"),
            ("network_name", NETWORK),
        ];
        ensure!(
            scrape
                .matching("multus_interface_receive_packets_total", &labels)
                .count()
                == 1,
            "no series for {pod}'s net1"
        );
    }
    let drops = scrape.sum(
        "multus_policy_drop_packets_total",
        &[("pod", "samplepod-1"), ("direction", "ingress")],
    );
    ensure!(
        drops > 0.0,
        "no ingress drops counted on samplepod-1 after the denied pings"
    );
    note(&format!(
        "multus_policy_drop_packets_total{{pod=samplepod-1,direction=ingress}} = {drops}"
    ));
    Ok(scrape)
}
