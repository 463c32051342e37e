//! Profile loading: the bundled profile, files, and one line of bad input per malformed profile.

use std::path::Path;

use cvm_core::error::is_bad_input;
use expect_test::expect_file;

use super::{compare_versions, load, numeric_version, parse, BUNDLED};

fn data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-profiles")
}

#[test]
fn bundled_profile_holds_the_validated_environment() {
    let profile = load("xe7745").unwrap();
    assert_eq!(profile.platform.product, "PowerEdge XE7745");
    assert!(profile.platform.uefi);
    assert_eq!(profile.cpu.model, "AMD EPYC 9555");
    assert!(profile.cpu.generation.contains("Turin"));
    assert_eq!(
        (
            profile.cpu.sockets,
            profile.cpu.cores_per_socket,
            profile.cpu.threads
        ),
        (2, 64, 256)
    );
    assert_eq!(
        (
            profile.gpu.pci_id.as_str(),
            profile.gpu.count,
            profile.gpu.memory_gb
        ),
        ("10de:2bb5", 8, 96)
    );
    assert_eq!(profile.memory.usable_gib, 1511);
    assert_eq!(profile.memory.tolerance_percent, 1.0);
    let nics: Vec<(&str, u32)> = profile
        .nic
        .iter()
        .map(|nic| (nic.pci_id.as_str(), nic.count))
        .collect();
    assert_eq!(nics, [("15b3:a2dc", 1), ("15b3:101f", 1), ("15b3:1021", 4)]);
    assert_eq!(profile.host_os.version_id, "25.10");
    assert_eq!(profile.qemu.validated, "9.2.1");
    assert_eq!(profile.kernel.validated, "6.14.0-37-generic");
}

#[test]
fn every_bundled_profile_loads_by_name() {
    for (name, _) in BUNDLED {
        assert_eq!(load(name).unwrap().name, *name);
    }
}

#[test]
fn a_profile_file_loads_by_path() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/xe7745.toml");
    assert_eq!(
        load(path.to_str().unwrap()).unwrap(),
        load("xe7745").unwrap()
    );
}

#[test]
fn an_unknown_name_is_one_line_of_bad_input() {
    let err = load("xe9999").unwrap_err();
    assert!(is_bad_input(&err));
    let message = format!("{err:#}");
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with(
            "--profile xe9999: not a bundled profile (xe7745) and not a readable file"
        ),
        "{message}"
    );
}

#[test]
fn every_bad_profile_is_one_line_of_bad_input() {
    let mut names: Vec<_> = std::fs::read_dir(data())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 9);
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse(&text, name).expect_err(name);
        assert!(is_bad_input(&err), "{name}: not bad input");
        let message = format!("{err:#}\n");
        assert_eq!(message.lines().count(), 1, "{name}: {message}");
        expect_file![path.with_extension("err")].assert_eq(&message);
    }
}

#[test]
fn versions_compare_numerically() {
    #[track_caller]
    fn check(left: &str, right: &str, expect: std::cmp::Ordering) {
        assert_eq!(compare_versions(left, right), expect, "{left} vs {right}");
    }
    use std::cmp::Ordering::*;
    check("9.2.1", "9.2.1", Equal);
    check("10.1.0", "9.2.1", Greater);
    check("8.2.2", "9.2.1", Less);
    check("6.14.0-37-generic", "6.14", Equal);
    check("6.8.0-60-generic", "6.14", Less);
    check("6.17.0-5-generic", "6.14", Greater);
    assert_eq!(numeric_version("6.14.0-37-generic"), [6, 14, 0]);
    assert!(numeric_version("generic").is_empty());
}
