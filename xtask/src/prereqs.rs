//! The idempotent prerequisite step: checks first, installs only what is missing, says what it
//! does. A prepared machine passes through in well under a second.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::shell::{Cmd, is_root, note, step};

/// The Rust toolchain pinned in rust-toolchain.toml; bpf-linker must use the same LLVM major.
pub const TOOLCHAIN: &str = "1.98.0";
/// The LLVM major version of that toolchain, which bpf-linker is built against.
pub const LLVM_MAJOR: &str = "22";
/// The bpf-linker release installed.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build, the tests and the demo use.
const PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22 (the same major as rustc 1.98).
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // Real delegate plugins (into /usr/lib/cni) and the network tools tests drive.
    "containernetworking-plugins",
    "iproute2",
    "iputils-ping",
    "iperf3",
    "iptables",
    "bpftool",
    "jq",
    // The build records the commit for --version (`unknown` without git).
    "git",
    // Static binaries: musl-gcc for the crates with C parts; `file` to check the result.
    "musl-tools",
    "file",
    // The image tests import the image into a containerd of their own (and run it with runc),
    // and load it with podman.
    "containerd",
    "runc",
    "podman",
];

/// Makes sure everything is in place.
pub fn ensure() -> anyhow::Result<()> {
    step("prerequisites");
    let mut done = Vec::new();
    if ensure_debian_packages(PACKAGES)? {
        done.push("Debian packages".to_owned());
    }
    ensure_kubectl(&mut done)?;
    ensure_components(&mut done)?;
    ensure_musl_target(&mut done)?;
    ensure_bpf_linker(&mut done)?;
    ensure_bpffs(&mut done)?;
    if done.is_empty() {
        note("all present");
    } else {
        note(&format!("installed or set up: {}", done.join(", ")));
    }
    Ok(())
}

/// Installs those of `packages` that are missing; returns whether it installed any.
pub fn ensure_debian_packages(packages: &[&str]) -> anyhow::Result<bool> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            Cmd::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Abbrev}", p])
                .probe()
                .is_none_or(|s| !s.starts_with("ii"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run `cargo xtask setup` as root (or apt-get install them)",
            missing.join(" ")
        );
    }
    note(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    Cmd::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Ok(true)
}

/// kubectl renders and applies the manifests in tests (`kubectl kustomize`, `apply -k`): any
/// kubectl on PATH does, else Debian's kubernetes-client (1.20, whose kustomize is v2: the base
/// and the example overlay are written for it and for current kustomize alike).
fn ensure_kubectl(done: &mut Vec<String>) -> anyhow::Result<()> {
    let present = Cmd::new("kubectl")
        .args(["version", "--client"])
        .probe()
        .is_some();
    if !present && ensure_debian_packages(&["kubernetes-client"])? {
        done.push("kubectl (kubernetes-client)".to_owned());
    }
    Ok(())
}

fn ensure_components(done: &mut Vec<String>) -> anyhow::Result<()> {
    // rustup installs the pinned toolchain (with rust-toolchain.toml's components) on first use;
    // this catches a toolchain that was installed earlier without them.
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", TOOLCHAIN])
        .probe()
        .context("rustup is needed (https://rustup.rs)")?;
    for component in ["rust-src", "clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            note(&format!("adding {component} to toolchain {TOOLCHAIN}"));
            Cmd::new("rustup")
                .args(["component", "add", component, "--toolchain", TOOLCHAIN])
                .run()?;
            done.push(component.to_owned());
        }
    }
    Ok(())
}

/// The musl target of the static builds, for the pinned toolchain.
fn ensure_musl_target(done: &mut Vec<String>) -> anyhow::Result<()> {
    let target = crate::static_build::MUSL_TARGET;
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed", "--toolchain", TOOLCHAIN])
        .probe()
        .context("rustup is needed (https://rustup.rs)")?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    note(&format!("adding target {target} to toolchain {TOOLCHAIN}"));
    Cmd::new("rustup")
        .args(["target", "add", target, "--toolchain", TOOLCHAIN])
        .run()?;
    done.push(target.to_owned());
    Ok(())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn bpf_linker_ok(path: &Path) -> bool {
    // The linker must load LLVM 22 at run time (and so be built against it).
    Cmd::new(&path.to_string_lossy())
        .args(["--version"])
        .probe()
        .is_some()
        && Cmd::new("ldd").args([path]).probe().is_some_and(|out| {
            out.contains(&format!("libLLVM.so.{LLVM_MAJOR}"))
                || out.contains(&format!("libLLVM-{LLVM_MAJOR}"))
        })
}

fn ensure_bpf_linker(done: &mut Vec<String>) -> anyhow::Result<()> {
    let path = cargo_bin().join("bpf-linker");
    if bpf_linker_ok(&path) {
        return Ok(());
    }
    note(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about 2 minutes)"
    ));
    let llvm_bin = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin");
    let path_var = std::env::var("PATH").unwrap_or_default();
    Cmd::new("cargo")
        .args([
            &format!("+{TOOLCHAIN}"),
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ])
        .env("PATH", format!("{llvm_bin}:{path_var}"))
        .run()?;
    if !bpf_linker_ok(&path) {
        bail!(
            "bpf-linker at {} still does not run against LLVM {LLVM_MAJOR}",
            path.display()
        );
    }
    done.push("bpf-linker".to_owned());
    Ok(())
}

fn ensure_bpffs(done: &mut Vec<String>) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    });
    if mounted {
        return Ok(());
    }
    if !is_root() {
        note("bpffs is not mounted at /sys/fs/bpf (root tests will mount it)");
        return Ok(());
    }
    note("mounting bpffs at /sys/fs/bpf");
    Cmd::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .run()?;
    done.push("bpffs".to_owned());
    Ok(())
}
