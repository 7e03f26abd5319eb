//! The images the cluster runs, built here (no registry is reachable): the pause image of every
//! pod sandbox and the test pods' image, both from Debian's static busybox, and the product's
//! image.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{run, run_out};
use crate::shell::{Cmd, note, target_dir};

/// The test pods' image: busybox (sh, sleep, ping, ip, wget).
pub const BUSYBOX_IMAGE: &str = "multus-rs.local/busybox:e2e";
/// The reference the product's image is imported under and set on the DaemonSet.
pub const AGENT_IMAGE: &str = "multus-rs.local/multus-rs:e2e";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "ping", "ip", "wget", "cat", "ls", "nc", "kill",
];

/// The archives, in `dir`.
#[derive(Debug)]
pub struct Images {
    /// The pause image.
    pub pause: PathBuf,
    /// The test pods' image.
    pub busybox: PathBuf,
    /// The product's image.
    pub agent: PathBuf,
}

/// Builds the three archives into `dir`.
pub fn build(dir: &Path) -> anyhow::Result<Images> {
    std::fs::create_dir_all(dir)?;
    let busybox_root = dir.join("busybox-root");
    busybox_rootfs(&busybox_root)?;
    // The sandbox's process only has to exist until the sandbox is removed (SIGKILL).
    let pause = dir.join("pause.oci.tar");
    oci_archive(
        super::node::PAUSE_IMAGE,
        &busybox_root,
        &["/bin/sleep", "2147483647"],
        &pause,
    )?;
    let busybox = dir.join("busybox.oci.tar");
    oci_archive(BUSYBOX_IMAGE, &busybox_root, &["/bin/sh"], &busybox)?;
    let agent = dir.join("multus-rs.oci.tar");
    agent_image(dir, &agent)?;
    Ok(Images {
        pause,
        busybox,
        agent,
    })
}

fn busybox_rootfs(root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))
        .with_context(|| format!("copying {BUSYBOX} (Debian's busybox-static)"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    Ok(())
}

/// TEMPORARY, until `cargo xtask image` is on main: the product's image from the workspace's
/// debug binaries and the shared libraries they link (the image proper is static). Switch this
/// one function over to `cargo xtask image` when it lands.
fn agent_image(dir: &Path, archive: &Path) -> anyhow::Result<()> {
    crate::shell::step("building multus-agent and multus-cni for the image");
    Cmd::new("cargo")
        .args([
            "build",
            "--package",
            "multus-agent",
            "--package",
            "multus-cni",
        ])
        .run()?;
    let root = dir.join("agent-root");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let usr_bin = root.join("usr/bin");
    std::fs::create_dir_all(&usr_bin)?;
    for bin in ["multus-agent", "multus-cni"] {
        let from = target_dir("debug").join(bin);
        std::fs::copy(&from, usr_bin.join(bin))
            .with_context(|| format!("copying {}", from.display()))?;
        for lib in shared_libraries(&from)? {
            let to = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
        }
    }
    for d in ["tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    oci_archive(AGENT_IMAGE, &root, &["/usr/bin/multus-agent"], archive)
}

/// The shared libraries `ldd` resolves for `binary` (the loader included).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = run_out("ldd", &[&binary.to_string_lossy()])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = run_out("sha256sum", &[&path.to_string_lossy()])?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no digest from sha256sum {}", path.display()))
}

/// Stores `path` as a blob of `layout`; returns its descriptor.
fn blob(layout: &Path, path: &Path, media_type: &str) -> anyhow::Result<Value> {
    let digest = sha256(path)?;
    let size = std::fs::metadata(path)?.len();
    let to = layout.join("blobs/sha256").join(&digest);
    std::fs::rename(path, &to).with_context(|| format!("storing {}", to.display()))?;
    Ok(json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": size}))
}

fn json_blob(layout: &Path, value: &Value, media_type: &str) -> anyhow::Result<Value> {
    let tmp = layout.join("blob.json");
    std::fs::write(&tmp, value.to_string())?;
    blob(layout, &tmp, media_type)
}

/// TEMPORARY, until the OCI writer of `cargo xtask image` is on main: an OCI image layout
/// archive of one uncompressed layer (`rootfs`, entries sorted, owned by root, mtime 0) named
/// `name` for `ctr images import`.
fn oci_archive(
    name: &str,
    rootfs: &Path,
    entrypoint: &[&str],
    archive: &Path,
) -> anyhow::Result<()> {
    let layout = archive.with_extension("layout");
    if layout.exists() {
        std::fs::remove_dir_all(&layout)?;
    }
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let layer = layout.join("layer.tar");
    run(
        "tar",
        &[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            &rootfs.to_string_lossy(),
            "-cf",
            &layer.to_string_lossy(),
            ".",
        ],
    )?;
    let diff_id = format!("sha256:{}", sha256(&layer)?);
    let layer = blob(&layout, &layer, "application/vnd.oci.image.layer.v1.tar")?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = json_blob(&layout, &config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = json_blob(
        &layout,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    )?;
    let Some((_, tag)) = name.rsplit_once(':') else {
        bail!("image name {name} has no tag");
    };
    manifest["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    std::fs::write(
        layout.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [manifest]}).to_string(),
    )?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    run(
        "tar",
        &[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            &layout.to_string_lossy(),
            "-cf",
            &archive.to_string_lossy(),
            "oci-layout",
            "index.json",
            "blobs",
        ],
    )?;
    std::fs::remove_dir_all(&layout)?;
    note(&format!("image {name}: {}", archive.display()));
    Ok(())
}
