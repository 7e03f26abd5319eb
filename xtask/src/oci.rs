//! OCI image archives written without a container engine: a tar of an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) holding one image of one layer, which
//! `ctr images import`, `podman load` and `docker load` (25 and newer) read.
//!
//! The same inputs give the same bytes: entries sorted, one mtime for all of them (taken from
//! `SOURCE_DATE_EPOCH`, else 0), owner 0:0 without user or group names, an uncompressed layer (no
//! compressor version in the digest), JSON written by one serializer in a fixed key order.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

/// One regular file of the image.
pub struct ImageFile {
    /// Absolute path inside the image, such as `/usr/bin/multus-agent`.
    pub path: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
    /// Permission bits: 0o755 for programs, 0o644 for data.
    pub mode: u32,
}

impl ImageFile {
    /// `source` read from disk, to be put at `path`: mode 0o755 when any execute bit is set on
    /// disk, else 0o644 (the disk's own bits depend on the umask of whoever built it).
    pub fn from_disk(path: &str, source: &Path) -> anyhow::Result<Self> {
        let contents =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let disk_mode = std::fs::metadata(source)
            .with_context(|| format!("stat {}", source.display()))?
            .permissions()
            .mode();
        let mode = if disk_mode & 0o111 != 0 { 0o755 } else { 0o644 };
        Ok(Self {
            path: path.to_owned(),
            contents,
            mode,
        })
    }
}

/// An image to write: files, how it starts, how it is named.
pub struct Image {
    /// Full reference with a tag, such as `ghcr.io/multus-rs/multus-rs:0.1.0`: the name an
    /// import gives the image.
    pub reference: String,
    /// OCI architecture of the files' programs (`amd64`, `arm64`); see [`architecture`].
    pub architecture: String,
    /// The files; their parent directories are added (mode 0o755).
    pub files: Vec<ImageFile>,
    /// The config's `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// The config's `Labels`.
    pub labels: BTreeMap<String, String>,
}

/// What [`write_archive`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The archive.
    pub path: PathBuf,
    /// `sha256:<hex>` of the image manifest: the digest `ctr images ls` and registries show.
    pub digest: String,
}

/// OCI's name for a Rust architecture (`std::env::consts::ARCH`, a target triple's first part).
pub fn architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64le" => "ppc64le",
        other => other,
    }
}

/// The mtime of every entry: `SOURCE_DATE_EPOCH` when set (reproducible-builds.org), else 0.
pub fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(0),
    }
}

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Writes `image` as an OCI archive at `out` (through a temporary file renamed into place),
/// with every mtime set to [`source_date_epoch`].
pub fn write_archive(image: &Image, out: &Path) -> anyhow::Result<Written> {
    let mtime = source_date_epoch()?;
    let tag = tag_of(&image.reference)?;
    ensure!(
        !image.entrypoint.is_empty(),
        "{}: an image needs an entrypoint",
        image.reference
    );

    let layer = layer_tar(&image.files, mtime)?;
    let layer_digest = sha256(&layer);
    let config = to_json(&json!({
        "created": rfc3339(mtime),
        "architecture": image.architecture,
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": image.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": rfc3339(mtime), "created_by": "cargo xtask"}],
    }))?;
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &config),
        "layers": [descriptor(LAYER_TYPE, &layer)],
    }))?;
    let digest = sha256(&manifest);
    let mut manifest_descriptor = descriptor(MANIFEST_TYPE, &manifest);
    manifest_descriptor["platform"] = json!({"architecture": image.architecture, "os": "linux"});
    // containerd names the image from the first annotation; OCI's own names only the tag.
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": image.reference,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [manifest_descriptor],
    }))?;

    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for dir in ["blobs/", "blobs/sha256/"] {
        entries.insert(dir.to_owned(), Entry::Dir);
    }
    for blob in [&layer, &config, &manifest] {
        let hex = hex(&ring::digest::digest(&ring::digest::SHA256, blob));
        entries.insert(
            format!("blobs/sha256/{hex}"),
            Entry::File(blob.as_slice(), 0o644),
        );
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    entries.insert("oci-layout".to_owned(), Entry::File(layout, 0o644));
    entries.insert("index.json".to_owned(), Entry::File(&index, 0o644));

    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    write_tar(&mut w, &entries, mtime).with_context(|| format!("writing {}", tmp.display()))?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(Written {
        path: out.to_owned(),
        digest,
    })
}

/// The tag of `name:tag` (a port in the registry host is not a tag).
fn tag_of(reference: &str) -> anyhow::Result<&str> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rsplit_once(':') {
        Some((name, tag)) if !name.is_empty() && !tag.is_empty() && !reference.contains('@') => {
            Ok(tag)
        }
        _ => bail!("image reference {reference:?} has no tag (expected name:tag)"),
    }
}

/// A descriptor of `blob` with media type `media_type`.
fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(blob), "size": blob.len()})
}

fn to_json(v: &Value) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(v).context("serializing JSON")
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex(&ring::digest::digest(&ring::digest::SHA256, data))
    )
}

fn hex(d: &ring::digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `seconds` since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A tar entry: a directory, or a file with its bytes and mode.
enum Entry<'a> {
    Dir,
    File(&'a [u8], u32),
}

/// The layer: every file and its parent directories, relative to `/`, sorted.
fn layer_tar(files: &[ImageFile], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for f in files {
        let rel = f
            .path
            .strip_prefix('/')
            .with_context(|| format!("image path {:?} is not absolute", f.path))?;
        let parts: Vec<&str> = rel.split('/').collect();
        ensure!(
            parts
                .iter()
                .all(|p| !p.is_empty() && *p != "." && *p != ".."),
            "image path {:?} is not a plain absolute path",
            f.path
        );
        for i in 1..parts.len() {
            dirs.insert(format!("{}/", parts[..i].join("/")));
        }
        ensure!(
            f.mode & !0o7777 == 0,
            "{}: mode {:o} has more than permission bits",
            f.path,
            f.mode
        );
        if entries
            .insert(rel.to_owned(), Entry::File(&f.contents, f.mode))
            .is_some()
        {
            bail!("{} is listed twice", f.path);
        }
    }
    for dir in dirs {
        if entries.contains_key(dir.trim_end_matches('/')) {
            bail!(
                "{} is both a file and a directory",
                dir.trim_end_matches('/')
            );
        }
        entries.insert(dir, Entry::Dir);
    }
    let mut out = Vec::new();
    write_tar(&mut out, &entries, mtime)?;
    Ok(out)
}

const BLOCK: usize = 512;

/// Writes `entries` in their (sorted) order as a ustar archive, then the two zero blocks.
fn write_tar(
    w: &mut impl std::io::Write,
    entries: &BTreeMap<String, Entry<'_>>,
    mtime: u64,
) -> anyhow::Result<()> {
    for (name, entry) in entries {
        let (size, mode, kind, data) = match entry {
            Entry::Dir => (0, 0o755, b'5', &[][..]),
            Entry::File(data, mode) => (data.len() as u64, *mode, b'0', *data),
        };
        w.write_all(&header(name, size, mode, kind, mtime)?)?;
        w.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        w.write_all(&[0; BLOCK][..pad])?;
    }
    w.write_all(&[0; 2 * BLOCK])?;
    Ok(())
}

/// A ustar header; a name longer than 100 bytes goes into the 155-byte prefix field.
fn header(name: &str, size: u64, mode: u32, kind: u8, mtime: u64) -> anyhow::Result<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    let bytes = name.as_bytes();
    if bytes.len() <= 100 {
        h[..bytes.len()].copy_from_slice(bytes);
    } else {
        // Split at a '/' so that the prefix has at most 155 bytes and the rest at most 100.
        let split = name
            .char_indices()
            .filter(|&(i, c)| {
                c == '/' && i <= 155 && bytes.len() - i - 1 <= 100 && i + 1 < bytes.len()
            })
            .map(|(i, _)| i)
            .next()
            .with_context(|| format!("tar entry name too long for ustar: {name}"))?;
        h[345..345 + split].copy_from_slice(&bytes[..split]);
        h[..bytes.len() - split - 1].copy_from_slice(&bytes[split + 1..]);
    }
    octal(&mut h[100..108], u64::from(mode))?;
    octal(&mut h[108..116], 0)?; // uid
    octal(&mut h[116..124], 0)?; // gid
    octal(&mut h[124..136], size)?;
    octal(&mut h[136..148], mtime)?;
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname and gname stay empty; devmajor/devminor are zero for files and directories.
    octal(&mut h[329..337], 0)?;
    octal(&mut h[337..345], 0)?;
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let field = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(field.as_bytes());
    Ok(h)
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) -> anyhow::Result<()> {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    ensure!(s.len() == digits, "{value} does not fit a tar header field");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// Reading archives back, for tests.
#[cfg(test)]
pub mod read {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// One tar entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TarEntry {
        /// Type flag: b'0' file, b'5' directory.
        pub kind: u8,
        pub mode: u32,
        pub uid: u64,
        pub gid: u64,
        pub mtime: u64,
        pub uname: String,
        pub gname: String,
        pub data: Vec<u8>,
    }

    fn field(h: &[u8]) -> &str {
        let end = h.iter().position(|&b| b == 0).unwrap_or(h.len());
        std::str::from_utf8(&h[..end]).unwrap().trim()
    }

    fn number(h: &[u8]) -> u64 {
        let s = field(h);
        if s.is_empty() {
            0
        } else {
            u64::from_str_radix(s, 8).unwrap()
        }
    }

    /// The entries of a ustar archive in their order, checksums verified.
    pub fn tar(data: &[u8]) -> Vec<(String, TarEntry)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= data.len() {
            let h = &data[at..at + 512];
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(sum, number(&h[148..156]), "checksum at offset {at}");
            let prefix = field(&h[345..500]);
            let name = if prefix.is_empty() {
                field(&h[..100]).to_owned()
            } else {
                format!("{prefix}/{}", field(&h[..100]))
            };
            let size = usize::try_from(number(&h[124..136])).unwrap();
            let start = at + 512;
            let entry = TarEntry {
                kind: h[156],
                mode: u32::try_from(number(&h[100..108])).unwrap(),
                uid: number(&h[108..116]),
                gid: number(&h[116..124]),
                mtime: number(&h[136..148]),
                uname: field(&h[265..297]).to_owned(),
                gname: field(&h[297..329]).to_owned(),
                data: data[start..start + size].to_vec(),
            };
            out.push((name, entry));
            at = start + size.div_ceil(512) * 512;
        }
        out
    }

    /// An archive opened: its blobs by digest, its index, the one image's manifest, config and
    /// layer entries.
    pub struct Layout {
        pub entries: Vec<(String, TarEntry)>,
        pub index: Value,
        pub manifest: Value,
        pub config: Value,
        pub layer: Vec<(String, TarEntry)>,
    }

    impl Layout {
        /// The bytes of the blob `digest` (`sha256:<hex>`), its name checked against its content.
        pub fn blob(&self, digest: &str) -> &[u8] {
            let name = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
            let data = &self
                .entries
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no blob {name}"))
                .1
                .data;
            assert_eq!(super::sha256(data), digest, "blob content vs name");
            data
        }

        /// Paths of the layer's regular files, absolute.
        pub fn files(&self) -> BTreeMap<String, &TarEntry> {
            self.layer
                .iter()
                .filter(|(_, e)| e.kind == b'0')
                .map(|(n, e)| (format!("/{n}"), e))
                .collect()
        }
    }

    /// Opens the archive at `path`, checking every descriptor's digest and size.
    pub fn layout(path: &std::path::Path) -> Layout {
        let entries = tar(&std::fs::read(path).unwrap());
        let get = |name: &str| {
            entries
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no {name} in the archive"))
                .1
                .data
                .clone()
        };
        let layout: Value = serde_json::from_slice(&get("oci-layout")).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index: Value = serde_json::from_slice(&get("index.json")).unwrap();
        let mut this = Layout {
            entries,
            index,
            manifest: Value::Null,
            config: Value::Null,
            layer: Vec::new(),
        };
        let check = |this: &Layout, d: &Value| -> Vec<u8> {
            let blob = this.blob(d["digest"].as_str().unwrap()).to_vec();
            assert_eq!(d["size"].as_u64().unwrap(), blob.len() as u64, "{d}");
            blob
        };
        let manifests = this.index["manifests"].as_array().unwrap().clone();
        assert_eq!(manifests.len(), 1, "{}", this.index);
        let manifest: Value = serde_json::from_slice(&check(&this, &manifests[0])).unwrap();
        let config: Value = serde_json::from_slice(&check(&this, &manifest["config"])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let layer_bytes = check(&this, &layers[0]);
        // The diff ID is the digest of the uncompressed layer, which this layer is.
        assert_eq!(config["rootfs"]["diff_ids"][0], super::sha256(&layer_bytes));
        this.layer = tar(&layer_bytes);
        this.manifest = manifest;
        this.config = config;
        this
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn image() -> Image {
        Image {
            reference: "registry.example:5000/team/tool:1.2.3".to_owned(),
            architecture: "amd64".to_owned(),
            files: vec![
                ImageFile {
                    path: "/usr/bin/tool".to_owned(),
                    contents: b"\x7fELF not really".to_vec(),
                    mode: 0o755,
                },
                ImageFile {
                    path: "/usr/share/doc/tool/LICENSE".to_owned(),
                    contents: vec![b'x'; 1025],
                    mode: 0o644,
                },
                ImageFile {
                    path: format!("/{}/{}/deep", "a".repeat(60), "b".repeat(60)),
                    contents: Vec::new(),
                    mode: 0o600,
                },
            ],
            entrypoint: vec!["/usr/bin/tool".to_owned(), "--flag".to_owned()],
            labels: BTreeMap::from([("org.opencontainers.image.version".into(), "1.2.3".into())]),
        }
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_archive(&image(), &dir.path().join("a.tar")).unwrap();
        let b = write_archive(&image(), &dir.path().join("b.tar")).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
        let mut other = image();
        other.files[0].contents.push(b'!');
        let c = write_archive(&other, &dir.path().join("c.tar")).unwrap();
        assert_ne!(a.digest, c.digest, "a changed file changes the digest");
    }

    #[test]
    fn the_archive_is_an_oci_layout_of_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_archive(&image(), &dir.path().join("img.tar")).unwrap();
        let l = read::layout(&written.path);
        let names: Vec<&str> = l.entries.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "entries are sorted");
        assert_eq!(names.len(), 7, "{names:?}"); // 2 dirs, 3 blobs, index, layout
        assert_eq!(l.index["manifests"][0]["digest"], written.digest.as_str());
        let ann = &l.index["manifests"][0]["annotations"];
        assert_eq!(
            ann["io.containerd.image.name"],
            "registry.example:5000/team/tool:1.2.3"
        );
        assert_eq!(ann["org.opencontainers.image.ref.name"], "1.2.3");
        assert_eq!(l.manifest["mediaType"], MANIFEST_TYPE);
        assert_eq!(l.manifest["layers"][0]["mediaType"], LAYER_TYPE);
        assert_eq!(l.config["architecture"], "amd64");
        assert_eq!(l.config["os"], "linux");
        assert_eq!(
            l.config["config"]["Entrypoint"],
            json!(["/usr/bin/tool", "--flag"])
        );
        assert_eq!(l.config["created"], "1970-01-01T00:00:00Z");

        // The layer: parents before children, owner 0:0 without names, one mtime.
        let layer: Vec<(&str, u8, u32)> = l
            .layer
            .iter()
            .map(|(n, e)| (n.as_str(), e.kind, e.mode))
            .collect();
        let a = format!("{}/", "a".repeat(60));
        let ab = format!("{a}{}/", "b".repeat(60));
        let deep = format!("{ab}deep");
        assert_eq!(
            layer,
            vec![
                (a.as_str(), b'5', 0o755),
                (ab.as_str(), b'5', 0o755),
                (deep.as_str(), b'0', 0o600),
                ("usr/", b'5', 0o755),
                ("usr/bin/", b'5', 0o755),
                ("usr/bin/tool", b'0', 0o755),
                ("usr/share/", b'5', 0o755),
                ("usr/share/doc/", b'5', 0o755),
                ("usr/share/doc/tool/", b'5', 0o755),
                ("usr/share/doc/tool/LICENSE", b'0', 0o644),
            ]
        );
        for (name, e) in l.layer.iter().chain(l.entries.iter()) {
            assert_eq!(
                (e.uid, e.gid, e.uname.as_str(), e.gname.as_str(), e.mtime),
                (0, 0, "", "", 0),
                "{name}"
            );
        }
        assert_eq!(
            l.files()["/usr/share/doc/tool/LICENSE"].data,
            vec![b'x'; 1025]
        );
    }

    #[test]
    fn system_tar_reads_the_archive_and_its_layer() {
        // GNU tar as an independent reader of the same bytes.
        let dir = tempfile::tempdir().unwrap();
        let written = write_archive(&image(), &dir.path().join("img.tar")).unwrap();
        let out = std::process::Command::new("tar")
            .args(["-xf"])
            .arg(&written.path)
            .arg("-C")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let l = read::layout(&written.path);
        let layer = dir.path().join(format!(
            "blobs/sha256/{}",
            l.manifest["layers"][0]["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
        ));
        let list = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&layer)
            .output()
            .unwrap();
        assert!(list.status.success(), "{list:?}");
        let text = String::from_utf8(list.stdout).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(" usr/bin/tool")),
            "{text}"
        );
        assert!(text.contains(&format!("{}/deep", "b".repeat(60))), "{text}");
    }

    #[test]
    fn bad_images_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.tar");
        let mut untagged = image();
        untagged.reference = "registry.example:5000/team/tool".to_owned();
        let err = write_archive(&untagged, &out).unwrap_err().to_string();
        assert!(err.contains("has no tag"), "{err}");
        let mut relative = image();
        relative.files[0].path = "usr/bin/tool".to_owned();
        let err = write_archive(&relative, &out).unwrap_err().to_string();
        assert!(err.contains("not absolute"), "{err}");
        let mut dotdot = image();
        dotdot.files[0].path = "/usr/../etc/passwd".to_owned();
        assert!(write_archive(&dotdot, &out).is_err());
        let mut twice = image();
        twice.files[1].path = "/usr/bin/tool".to_owned();
        let err = write_archive(&twice, &out).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let mut clash = image();
        clash.files[1].path = "/usr/bin/tool/LICENSE".to_owned();
        let err = write_archive(&clash, &out).unwrap_err().to_string();
        assert!(err.contains("both a file and a directory"), "{err}");
        assert!(!out.exists(), "nothing is left behind");
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
