//! `e2e.artifacts` over artifact directories made in the test: intact, missing, changed, damaged.

use std::path::Path;

use cvm_core::check::Status;

use super::verify;

/// Writes two artifacts and a manifest recording them, then applies `damage` to the directory.
#[track_caller]
fn check(damage: impl FnOnce(&Path), expect: Status, detail_has: &str, remediation_has: &str) {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("cvm-base");
    std::fs::create_dir(&artifacts).unwrap();
    std::fs::write(artifacts.join("uki.efi"), b"MZ not really a UKI").unwrap();
    std::fs::write(artifacts.join("firmware.fd"), vec![0u8; 4096]).unwrap();
    let mut entries = serde_json::Map::new();
    for name in ["uki.efi", "firmware.fd"] {
        let (sha256, size) = cvm_core::hash::sha256_file(&artifacts.join(name)).unwrap();
        entries.insert(
            name.to_owned(),
            serde_json::json!({"sha256": sha256, "size": size}),
        );
    }
    let manifest =
        serde_json::json!({"schema": 1, "name": "cvm-base", "tee": "snp", "artifacts": entries});
    std::fs::write(artifacts.join("manifest.json"), manifest.to_string()).unwrap();
    damage(&artifacts);
    let result = verify(&artifacts);
    assert_eq!(result.id, "e2e.artifacts");
    assert_eq!(result.status, expect, "{}", result.detail);
    assert!(
        result.detail.contains(detail_has),
        "{detail_has:?} not in {:?}",
        result.detail
    );
    assert!(
        result.remediation.contains(remediation_has),
        "{remediation_has:?} not in {:?}",
        result.remediation
    );
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(path, manifest.to_string()).unwrap();
}

#[test]
fn intact_artifacts_pass() {
    check(|_| {}, Status::Pass, "2 artifact(s), 4115 bytes, match", "");
}

#[test]
fn missing_directory_fails_with_the_build_command() {
    check(
        |dir| std::fs::remove_dir_all(dir).unwrap(),
        Status::Fail,
        "does not exist",
        "cargo xtask guest build",
    );
}

#[test]
fn missing_manifest_fails() {
    check(
        |dir| std::fs::remove_file(dir.join("manifest.json")).unwrap(),
        Status::Fail,
        "manifest.json",
        "cargo xtask guest build",
    );
}

#[test]
fn changed_content_of_the_same_size_fails() {
    check(
        |dir| std::fs::write(dir.join("uki.efi"), b"MZ not really a UK!").unwrap(),
        Status::Fail,
        "1 of 2 artifact(s) differ",
        "rebuild them: cargo xtask guest build",
    );
}

#[test]
fn truncated_artifact_fails_on_size_and_digest() {
    check(
        |dir| std::fs::write(dir.join("firmware.fd"), vec![0u8; 100]).unwrap(),
        Status::Fail,
        "firmware.fd: size 100, manifest says 4096; firmware.fd: sha256",
        "cargo xtask guest build",
    );
}

#[test]
fn deleted_artifact_fails() {
    check(
        |dir| std::fs::remove_file(dir.join("uki.efi")).unwrap(),
        Status::Fail,
        "uki.efi: opening",
        "cargo xtask guest build",
    );
}

#[test]
fn paths_outside_the_directory_are_refused() {
    check(
        |dir| {
            edit_manifest(dir, |manifest| {
                manifest["artifacts"]["../../etc/passwd"] =
                    serde_json::json!({"sha256": "00", "size": 1});
            })
        },
        Status::Fail,
        "../../etc/passwd: not a path inside the artifacts directory",
        "",
    );
}

#[test]
fn other_schema_or_empty_list_fails() {
    check(
        |dir| edit_manifest(dir, |manifest| manifest["schema"] = 2.into()),
        Status::Fail,
        "has schema 2",
        "",
    );
    check(
        |dir| {
            edit_manifest(dir, |manifest| {
                manifest["artifacts"] = serde_json::json!({})
            })
        },
        Status::Fail,
        "lists no artifacts",
        "",
    );
    check(
        |dir| std::fs::write(dir.join("manifest.json"), "{").unwrap(),
        Status::Fail,
        "is not a schema-1 manifest",
        "",
    );
}
