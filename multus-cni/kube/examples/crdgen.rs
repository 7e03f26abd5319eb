//! Writes the CRD YAML generated from the types into a directory (`cargo xtask manifests` runs
//! this with `deploy`), one file per CRD.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: crdgen <output directory>")?;
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in multus_kube::crd::all_crds() {
        let path = dir.join(file);
        std::fs::write(&path, multus_kube::crd::crd_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
