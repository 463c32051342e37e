//! Unit tests for the bundle module's helpers.

use std::fs;

use super::*;

#[test]
fn root_paths_map_below_root() {
    assert_eq!(root_rel("/proc/cpuinfo"), "root/proc/cpuinfo");
    assert_eq!(root_rel("dev/sev"), "root/dev/sev");
}

#[test]
fn timestamps_are_rfc_3339_utc() {
    assert_eq!(collect::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(collect::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(collect::rfc3339(1_763_633_702), "2025-11-20T10:15:02Z");
}

#[test]
fn fact_combinators() {
    let present: Fact<&str> = Fact::Present("6");
    assert_eq!(present.clone().map(str::len), Fact::Present(1));
    assert_eq!(present.present(), Some("6"));
    let absent: Fact<&str> = Fact::Absent;
    assert_eq!(absent.and_then(|_| Fact::Present(1)), Fact::Absent);
    let skipped: Fact<u8> = Fact::NotCollected("why".into());
    assert_eq!(skipped.map(|v| v + 1), Fact::NotCollected("why".into()));
}

#[test]
fn collect_refuses_a_non_empty_output_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("keep"), "").expect("write");
    let err = collect(&CollectOptions::live(dir.path())).unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
    assert!(dir.path().join("keep").exists());
}

#[test]
fn collect_from_a_fake_root_records_absence() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("proc")).expect("mkdir");
    fs::write(root.path().join("proc/cmdline"), "ro quiet\n").expect("write");
    fs::create_dir_all(root.path().join("usr/share/ovmf")).expect("mkdir");
    fs::write(
        root.path().join("usr/share/ovmf/OVMF.amdsev.fd"),
        "firmware",
    )
    .expect("write");
    let meta = collect(&CollectOptions {
        out: out.path().join("facts"),
        host_root: root.path().to_owned(),
        redfish: None,
        markers: vec![
            "/usr/share/ovmf/OVMF.amdsev.fd".to_owned(),
            "/usr/share/OVMF/OVMF.inteltdx.fd".to_owned(),
        ],
    })
    .expect("collect");
    assert!(meta.absent.contains(&"root/dev/sev".to_owned()));
    assert!(meta
        .absent
        .contains(&"root/sys/kernel/iommu_groups".to_owned()));
    let bundle = Bundle::open(out.path().join("facts")).expect("open");
    assert_eq!(
        bundle.root_file("/proc/cmdline"),
        Fact::Present("ro quiet\n".to_owned())
    );
    assert_eq!(bundle.root_exists("/dev/sev"), Fact::Absent);
    assert_eq!(bundle.root_dir("/sys/kernel/iommu_groups"), Fact::Absent);
    // Extra markers record existence, not content.
    assert_eq!(
        bundle.root_file("/usr/share/ovmf/OVMF.amdsev.fd"),
        Fact::Present(String::new())
    );
    assert_eq!(
        bundle.root_exists("/usr/share/OVMF/OVMF.inteltdx.fd"),
        Fact::Absent
    );
}

#[test]
fn a_marker_outside_the_host_root_is_bad_input() {
    let out = tempfile::tempdir().expect("tempdir");
    for marker in ["relative/path", "/usr/../../escape"] {
        let err = collect(&CollectOptions {
            markers: vec![marker.to_owned()],
            ..CollectOptions::live(out.path().join("facts"))
        })
        .expect_err(marker);
        assert!(cvm_core::error::is_bad_input(&err), "{marker}: {err:#}");
    }
    assert!(!out.path().join("facts").exists(), "nothing is written");
}
