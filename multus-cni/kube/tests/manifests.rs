//! The committed CRD YAML in deploy/ must be exactly what the types generate.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut stale = Vec::new();
    for (file, crd) in multus_kube::crd::all_crds() {
        let want = multus_kube::crd::crd_yaml(&crd).unwrap();
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "CRD manifests are out of date ({}); run `cargo xtask manifests` and commit the result",
        stale.join("; ")
    );
}
