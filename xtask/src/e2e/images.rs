//! The images the cluster runs, written with the project's OCI writer (no registry is
//! reachable): the pause image of every pod sandbox and the test pods' image, both Debian's static
//! busybox alone (its shell runs its applets without links), and the product's image as
//! `cargo xtask image` makes it, under the reference the run sets on the DaemonSets.
use std::{collections::BTreeMap, path::Path, path::PathBuf};

use anyhow::Context as _;

use crate::{
    image,
    oci::{self, Image, ImageFile},
    shell::note,
    static_build,
};

/// The test pods' image: busybox (sh, sleep, ping, ip).
pub const BUSYBOX_IMAGE: &str = "multus-rs.local/busybox:e2e";
/// The reference the product's image is imported under and set on the DaemonSets.
pub const AGENT_IMAGE: &str = "multus-rs.local/multus-rs:e2e";
/// Debian's busybox-static, and where the images have it.
const BUSYBOX: &str = "/bin/busybox";

/// The archives.
#[derive(Debug)]
pub struct Images {
    /// The pause image.
    pub pause: PathBuf,
    /// The test pods' image.
    pub busybox: PathBuf,
    /// The product's image.
    pub agent: PathBuf,
}

fn busybox_image(reference: &str, entrypoint: &[&str]) -> anyhow::Result<Image> {
    Ok(Image {
        reference: reference.to_owned(),
        architecture: oci::architecture(std::env::consts::ARCH).to_owned(),
        files: vec![
            ImageFile::from_disk(BUSYBOX, Path::new(BUSYBOX)).context("Debian's busybox-static")?,
        ],
        entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
        labels: BTreeMap::new(),
    })
}

/// Writes the three archives into `dir`.
pub fn build(dir: &Path) -> anyhow::Result<Images> {
    std::fs::create_dir_all(dir)?;
    // The sandbox's process only has to exist until the sandbox is removed (SIGKILL).
    let pause = oci::write_archive(
        &busybox_image(super::node::PAUSE_IMAGE, &[BUSYBOX, "sleep", "2147483647"])?,
        &dir.join("pause.oci.tar"),
    )?;
    let busybox = oci::write_archive(
        &busybox_image(BUSYBOX_IMAGE, &[BUSYBOX, "sh"])?,
        &dir.join("busybox.oci.tar"),
    )?;
    let bin_dir = static_build::build(image::PACKAGES, image::BINARIES)?;
    let mut agent = image::image(&bin_dir)?;
    note(&format!(
        "the product's image ({}) imported as {AGENT_IMAGE}",
        agent.reference
    ));
    agent.reference = AGENT_IMAGE.to_owned();
    let agent = oci::write_archive(&agent, &dir.join("multus-rs.oci.tar"))?;
    Ok(Images {
        pause: pause.path,
        busybox: busybox.path,
        agent: agent.path,
    })
}
