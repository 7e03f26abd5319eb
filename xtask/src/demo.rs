//! `cargo xtask demo`: until the full quickstart demo lands, a short real smoke run of the
//! dataplane: two pods on a macvlan segment, the programs attached to one of them by the
//! `multus-agent` binary, a known number of pings, and the counters it reads back.
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use multus_testkit::{BpffsDir, MacvlanPods};

use crate::shell::{Cmd, build_agent, is_root, note, step};

const PINGS: u32 = 10;

/// Runs the demo; exits with an error if any step did not behave as shown.
pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads eBPF programs: run it as root");
    }
    let agent = build_agent()?;

    step("two pods (network namespaces) with net1 on one macvlan segment");
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    note(&format!("{}: net1 {} ({})", a.netns.name(), a.ip4, a.mac));
    note(&format!("{}: net1 {} ({})", b.netns.name(), b.ip4, b.mac));
    let bpffs = BpffsDir::new("demo");
    let state = std::env::temp_dir().join(format!("multus-demo-{}", std::process::id()));
    let _state_guard = RemoveDir(state.clone());
    let common = |cmd: &str| {
        Cmd::new(&agent.to_string_lossy()).args([
            cmd,
            "--bpffs",
            &bpffs.path().to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
        ])
    };

    step("attaching the TC programs to net1 of the first pod");
    let netns = a.netns.path();
    common("attach")
        .args([
            "--netns",
            &netns.to_string_lossy(),
            "--interface",
            &a.ifname,
        ])
        .run()?;

    step(&format!(
        "{PINGS} pings from {} to {}",
        a.netns.name(),
        b.ip4
    ));
    let replies = a.ping(IpAddr::V4(b.ip4), PINGS);
    note(&format!("{replies}/{PINGS} replies"));

    step("counters read back from the eBPF maps");
    let json = common("counters")
        .args(["--json"])
        .probe()
        .context("reading counters")?;
    common("counters").run()?;
    let expect = format!("\"packets\":{PINGS}");
    if replies != PINGS || json.matches(&expect).count() < 2 {
        bail!("expected {PINGS} packets each way, got: {json}");
    }

    step("detaching and cleaning up");
    common("detach").args(["--all"]).run()?;
    Ok(())
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
