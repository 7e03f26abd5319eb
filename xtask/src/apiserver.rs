//! The real Kubernetes binaries the tests run: kube-apiserver for the Kubernetes tests, and the
//! node's kubelet, kube-controller-manager and kube-scheduler for `cargo xtask e2e`. Built once
//! from Debian's `kubernetes` source package (no registry ships a current binary) and cached
//! outside the tree, each as `<cache>/<name>-<version>/<name>`.
//!
//! Steps (idempotent; cached binaries that report the right version skip all of them):
//! a private apt sources list with deb-src lines, `apt-get source --download-only kubernetes`,
//! unpack, swap the vendored reflect2 1.0.1 (crashes under Go >= 1.18) for Debian's 1.0.2, and
//! one `make WHAT="cmd/..."` for every missing binary, offline against the vendor tree.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use multus_testkit::cache::{APISERVER_VERSION as VERSION, cache_dir, cached_apiserver};

use crate::shell::{Cmd, is_root, note, step};

/// Debian packages the build and the test cluster need.
const PACKAGES: &[&str] = &[
    "golang-go",
    "golang-github-modern-go-reflect2-dev",
    "dpkg-dev",
    "make",
    "rsync",
    // The test cluster: etcd, and openssl for its service-account signing key.
    "etcd-server",
    "openssl",
];
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

fn binary_ok(path: &Path) -> bool {
    Cmd::new(&path.to_string_lossy())
        .args(["--version"])
        .probe()
        .is_some_and(|v| v.trim() == format!("Kubernetes {VERSION}"))
}

/// The API server, for the Kubernetes tests.
pub const APISERVER: &str = "kube-apiserver";
/// The node's binaries `cargo xtask e2e` runs next to the API server.
pub const NODE: &[&str] = &["kubelet", "kube-controller-manager", "kube-scheduler"];

/// Where binary `name` (`kube-apiserver`, `kubelet`, ...) is cached.
pub fn cached(name: &str) -> PathBuf {
    if name == APISERVER {
        return cached_apiserver();
    }
    cache_dir().join(format!("{name}-{VERSION}")).join(name)
}

/// Makes sure the cached kube-apiserver exists (building it on the first run) and returns its path.
pub fn ensure() -> anyhow::Result<PathBuf> {
    step("kube-apiserver for the Kubernetes tests");
    ensure_binaries(&[APISERVER])?;
    Ok(cached_apiserver())
}

/// Makes sure the API server and the node's binaries are cached (one build for the missing ones);
/// returns the API server's path.
pub fn ensure_all() -> anyhow::Result<PathBuf> {
    step("Kubernetes binaries (built on the first run, then cached)");
    let mut names = vec![APISERVER];
    names.extend_from_slice(NODE);
    ensure_binaries(&names)?;
    Ok(cached_apiserver())
}

/// Makes sure every binary of `names` is cached, building the missing ones in one `make` (the
/// first run only; they share most of their packages, so one build is far cheaper than two).
pub fn ensure_binaries(names: &[&str]) -> anyhow::Result<()> {
    crate::prereqs::ensure_debian_packages(PACKAGES)?;
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !binary_ok(&cached(name)))
        .collect();
    for name in names.iter().filter(|n| !missing.contains(n)) {
        note(&format!("cached: {}", cached(name).display()));
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "building {} needs root (apt-get); run as root",
            missing.join(" ")
        );
    }
    note(&format!(
        "building {} {VERSION} from Debian's kubernetes source package \
         (first run only, about 6-10 minutes on 2 cores, 15-20 for all four)",
        missing.join(" ")
    ));
    let started = Instant::now();
    let work = cache_dir().join("build-kubernetes");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = fetch_source(&work)?;
    replace_reflect2(&tree)?;
    make(&tree, &work, &missing)?;
    for name in &missing {
        install(&tree.join("_output/local/go/bin").join(name), &cached(name))?;
    }
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    note(&format!(
        "built {} in {:.0?} (cached for later runs)",
        missing.join(" "),
        started.elapsed()
    ));
    Ok(())
}

/// Copies a built binary to its cache path (through a temporary name, so a half-copied file is
/// never taken for a cached one) and checks its version.
fn install(built: &Path, bin: &Path) -> anyhow::Result<()> {
    let dir = bin
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent", bin.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = bin.with_extension("tmp");
    std::fs::copy(built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, bin).with_context(|| format!("installing {}", bin.display()))?;
    if !binary_ok(bin) {
        bail!("{} does not report Kubernetes {VERSION}", bin.display());
    }
    Ok(())
}

/// Downloads and unpacks the source package with a private apt configuration (the machine's
/// sources have no deb-src lines; /etc/apt stays untouched). Returns the unpacked tree.
fn fetch_source(work: &Path) -> anyhow::Result<PathBuf> {
    let apt = work.join("apt");
    let lists = apt.join("lists");
    let cache = apt.join("cache");
    std::fs::create_dir_all(lists.join("partial"))?;
    std::fs::create_dir_all(cache.join("archives/partial"))?;
    let sources = apt.join("sources.list");
    std::fs::write(
        &sources,
        "deb-src http://deb.debian.org/debian bookworm main\n\
         deb-src http://deb.debian.org/debian-security bookworm-security main\n",
    )
    .with_context(|| format!("writing {}", sources.display()))?;
    let opts = [
        format!("-oDir::Etc::SourceList={}", sources.display()),
        "-oDir::Etc::SourceParts=/nonexistent".to_owned(),
        format!("-oDir::State::Lists={}", lists.display()),
        format!("-oDir::Cache={}", cache.display()),
        // The private dirs belong to root; apt's download sandbox user could not write them.
        "-oAPT::Sandbox::User=root".to_owned(),
    ];
    Cmd::new("apt-get")
        .args(&opts)
        .args(["update", "-q"])
        .run()?;
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    Cmd::new("sh")
        .args([
            "-c",
            &format!(
                "cd '{}' && apt-get {} source --download-only kubernetes && \
                 dpkg-source --no-check -x kubernetes_*.dsc tree",
                src.display(),
                opts.join(" ")
            ),
        ])
        .run()?;
    Ok(src.join("tree"))
}

fn replace_reflect2(tree: &Path) -> anyhow::Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    if !vendored.is_dir() {
        bail!("{} is missing from the source package", vendored.display());
    }
    std::fs::remove_dir_all(&vendored)?;
    Cmd::new("cp")
        .args(["-r", REFLECT2_DEBIAN])
        .args([&vendored])
        .run()
}

fn make(tree: &Path, work: &Path, names: &[&str]) -> anyhow::Result<()> {
    let home = work.join("home");
    std::fs::create_dir_all(&home)?;
    let what: Vec<String> = names.iter().map(|n| format!("cmd/{n}")).collect();
    Cmd::new("make")
        .args(["-C"])
        .args([tree])
        .args([format!("WHAT={}", what.join(" "))])
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=vendor")
        .env("KUBE_GIT_VERSION", VERSION)
        .env("KUBE_GIT_TREE_STATE", "clean")
        .env("HOME", &home)
        .env("GOCACHE", work.join("gocache"))
        .run()
}
