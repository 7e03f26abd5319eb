//! `cargo xtask image`: the agent image as an OCI archive, made here with no container engine
//! and no network. It holds the static binaries where the DaemonSet runs them and where the
//! installer finds the shim (next to `multus-agent`), and the licences; nothing else, since
//! static binaries need no libc, loader or shell at run time.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};

use crate::{
    oci::{self, Image, ImageFile, Written},
    shell::{note, step},
    static_build,
};

#[cfg(test)]
mod containerd;
#[cfg(test)]
mod dockerfile;
#[cfg(test)]
mod podman;

/// The packages whose binaries the image holds.
pub const PACKAGES: &[&str] = &["multus-agent", "multus-cni"];
/// Those binaries.
pub const BINARIES: &[&str] = &["multus-agent", "multus-cni"];
/// Where they go: the DaemonSet runs `/usr/bin/multus-agent`, and the installer copies the
/// `multus-cni` next to the running executable onto the node.
pub const BIN_DIR: &str = "/usr/bin";
/// The licence texts of the repository, and where they go.
pub const LICENCES: &[&str] = &["LICENSE-APACHE", "LICENSE-MIT", "LICENSE-GPL2"];
/// Where the licences go.
pub const DOC_DIR: &str = "/usr/share/doc/multus-rs";
/// The image's entrypoint (the DaemonSet's containers set their own command).
pub const ENTRYPOINT: &str = "/usr/bin/multus-agent";
/// The version of this tree: the image's tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options of `cargo xtask image`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the archive [default: multus-rs-VERSION.oci.tar in the target directory's
    /// `oci/`].
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Builds the static binaries, writes the archive, prints its path and digest.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let bin_dir = static_build::build(PACKAGES, BINARIES)?;
    let out = args.output.clone().unwrap_or_else(default_output);
    let written = write(&bin_dir, &out)?;
    note(&format!(
        "import with `ctr -n k8s.io images import {0}`, `podman load -i {0}` or \
         `docker load -i {0}`",
        written.path.display()
    ));
    println!("{}", written.path.display());
    println!("{}", written.digest);
    Ok(())
}

/// `multus-rs-VERSION.oci.tar` under the target directory's `oci/`.
pub fn default_output() -> PathBuf {
    crate::shell::target_dir("oci").join(format!("multus-rs-{VERSION}.oci.tar"))
}

/// Writes the image of the binaries in `bin_dir` to `out`.
pub fn write(bin_dir: &Path, out: &Path) -> anyhow::Result<Written> {
    step(&format!("writing the image archive {}", out.display()));
    let image = image(bin_dir)?;
    note(&format!(
        "{} ({} files)",
        image.reference,
        image.files.len()
    ));
    let written = oci::write_archive(&image, out)?;
    note(&format!("digest {}", written.digest));
    Ok(written)
}

/// The image: the binaries of `bin_dir`, the licences, named by [`reference`].
pub fn image(bin_dir: &Path) -> anyhow::Result<Image> {
    let root = crate::shell::repo_root();
    let mut files = Vec::new();
    for bin in BINARIES {
        files.push(ImageFile::from_disk(
            &format!("{BIN_DIR}/{bin}"),
            &bin_dir.join(bin),
        )?);
    }
    for licence in LICENCES {
        let mut f = ImageFile::from_disk(&format!("{DOC_DIR}/{licence}"), &root.join(licence))?;
        f.mode = 0o644;
        files.push(f);
    }
    let labels = [
        ("org.opencontainers.image.title", "multus-rs"),
        ("org.opencontainers.image.version", VERSION),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
        (
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Ok(Image {
        reference: reference()?,
        architecture: oci::architecture(
            static_build::MUSL_TARGET
                .split('-')
                .next()
                .unwrap_or(static_build::MUSL_TARGET),
        )
        .to_owned(),
        files,
        entrypoint: vec![ENTRYPOINT.to_owned()],
        labels,
    })
}

/// The image name the DaemonSet's containers use, tagged with this tree's version (a test keeps
/// the manifests' tag equal to it).
pub fn reference() -> anyhow::Result<String> {
    let path = crate::shell::repo_root().join("deploy/30-daemonset.yaml");
    let docs = multus_testkit::kube::read_yaml_documents(&path).map_err(anyhow::Error::msg)?;
    let spec = &docs
        .first()
        .with_context(|| format!("{}: empty", path.display()))?["spec"]["template"]["spec"];
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let image = c["image"]
                .as_str()
                .with_context(|| format!("{}: a container without image", path.display()))?;
            let last = image.rsplit('/').next().unwrap_or(image);
            let name = match last.rsplit_once(':') {
                Some((_, tag)) => &image[..image.len() - tag.len() - 1],
                None => image,
            };
            names.push(name.to_owned());
        }
    }
    names.dedup();
    let [name] = names.as_slice() else {
        anyhow::bail!(
            "{}: expected one image name for all containers, found {names:?}",
            path.display()
        );
    };
    ensure!(!name.contains('@'), "{name}: a digest, not a name");
    Ok(format!("{name}:{VERSION}"))
}

/// The archive the tests share: the static binaries built once, written to the default output.
#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests")]
fn built() -> &'static (PathBuf, Written) {
    static BUILT: std::sync::OnceLock<(PathBuf, Written)> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let bin_dir = static_build::build(PACKAGES, BINARIES).expect("static build");
        let written = write(&bin_dir, &default_output()).expect("writing the image");
        (bin_dir, written)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn image_digest_is_the_same_on_a_second_build() {
        let (_, first) = built();
        // A second build: cargo again (nothing to rebuild), the archive written anew elsewhere.
        let bin_dir = static_build::build(PACKAGES, BINARIES).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let second = write(&bin_dir, &dir.path().join("again.tar")).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            oci::sha256(&std::fs::read(&first.path).unwrap()),
            oci::sha256(&std::fs::read(&second.path).unwrap()),
            "the archives differ byte for byte"
        );
    }

    #[test]
    fn image_holds_static_binaries_and_licences() {
        let (bin_dir, written) = built();
        for bin in BINARIES {
            let linkage = static_build::check_static(&bin_dir.join(bin)).unwrap();
            // The shim is started for every CNI call: nothing to relocate at start.
            if *bin == "multus-cni" {
                assert!(linkage.position_dependent, "{bin}: {linkage}");
            }
        }
        // The agent's build script embedded the eBPF object in the musl build too: an ELF of
        // machine EM_BPF (247) inside the agent's bytes.
        let agent = std::fs::read(bin_dir.join("multus-agent")).unwrap();
        let embedded = agent.windows(20).skip(1).any(|w| {
            w.starts_with(b"\x7fELF\x02\x01") && u16::from_le_bytes([w[18], w[19]]) == 247
        });
        assert!(embedded, "no eBPF object in the static multus-agent");
        let layout = oci::read::layout(&written.path);
        let files = layout.files();
        let listed: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            listed,
            [
                "/usr/bin/multus-agent",
                "/usr/bin/multus-cni",
                "/usr/share/doc/multus-rs/LICENSE-APACHE",
                "/usr/share/doc/multus-rs/LICENSE-GPL2",
                "/usr/share/doc/multus-rs/LICENSE-MIT",
            ]
        );
        for bin in BINARIES {
            let entry = files[&format!("{BIN_DIR}/{bin}")];
            assert_eq!(entry.mode, 0o755);
            assert_eq!(entry.data, std::fs::read(bin_dir.join(bin)).unwrap());
        }
        let index = &layout.index["manifests"][0];
        assert_eq!(index["digest"], written.digest.as_str());
        assert_eq!(
            index["annotations"]["io.containerd.image.name"],
            format!("ghcr.io/multus-rs/multus-rs:{VERSION}")
        );
        assert_eq!(
            layout.config["config"]["Entrypoint"],
            serde_json::json!([ENTRYPOINT])
        );
    }

    #[test]
    fn the_reference_is_the_manifests_image() {
        assert_eq!(
            reference().unwrap(),
            format!("ghcr.io/multus-rs/multus-rs:{VERSION}")
        );
    }
}
