//! `azs-csp-operator catalog check` on the example catalog and on every malformation: needs no
//! cluster, so it runs in the plain `cargo test`.

mod malformed_catalogs;

use malformed_catalogs::{CATALOG, malformed_catalogs};

fn catalog_check(path: &std::path::Path) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
        .args(["catalog", "check"])
        .arg(path)
        .output()
        .expect("run catalog check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn catalog_check_rejects_every_malformation_with_a_precise_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, CATALOG).unwrap();
    let (code, out, err) = catalog_check(&good);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("valid"), "{out}");

    for (what, content, needles) in malformed_catalogs() {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &content).unwrap();
        let (code, out, err) = catalog_check(&path);
        assert_eq!(code, Some(1), "{what}: {out}{err}");
        assert!(err.contains("invalid catalog"), "{what}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
        }
        eprintln!("{what}: {}", err.trim());
    }
    let (code, _, err) = catalog_check(&dir.path().join("missing.yaml"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read the catalog file"), "{err}");
}
