//! The profile's facts over host-setup's bundle: what is present, absent or not collected, and why.

use std::path::Path;

use cvm_core::error::is_bad_input;

use super::{Bundle, Fact, NodeFacts};

/// A bundle of `files`; an empty facts.json unless `files` gives one.
fn bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("facts.json"), r#"{"schema": 1}"#).unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn absent_unreadable_failed_and_missing_are_told_apart() {
    let dir = bundle(&[(
        "facts.json",
        r#"{"schema": 1, "absent": ["root/sys/module/kvm_amd/parameters/sev_snp"],
            "unreadable": {"cmd/dmidecode": "permission denied"},
            "failed": {"cmd/qemu-version": "qemu-system-x86_64: not found"}}"#,
    )]);
    let bundle = Bundle::open(dir.path()).unwrap();
    let facts = NodeFacts::new(&bundle);
    assert_eq!(facts.kvm_amd_parameter("sev_snp"), Fact::Absent);
    assert_eq!(
        facts.system_product(),
        Fact::NotCollected("cmd/dmidecode was unreadable: permission denied".to_owned())
    );
    assert_eq!(
        facts.qemu_version(),
        Fact::NotCollected(
            "cmd/qemu-version could not be collected: qemu-system-x86_64: not found".to_owned()
        )
    );
    assert_eq!(
        facts.cpu_model(),
        Fact::NotCollected("cmd/lscpu was not collected".to_owned())
    );
    assert_eq!(
        facts.uefi_boot(),
        Fact::NotCollected("root/sys/firmware/efi was not collected".to_owned())
    );
}

#[test]
fn a_file_without_the_value_is_not_a_guess() {
    let dir = bundle(&[
        ("cmd/lscpu", "Architecture: x86_64\n"),
        ("root/proc/meminfo", "MemFree: 12 kB\n"),
    ]);
    let bundle = Bundle::open(dir.path()).unwrap();
    let facts = NodeFacts::new(&bundle);
    assert_eq!(
        facts.cpu_topology(),
        Fact::NotCollected("cmd/lscpu has no CPU topology".to_owned())
    );
    assert_eq!(
        facts.mem_total_kib(),
        Fact::NotCollected("root/proc/meminfo has no MemTotal".to_owned())
    );
}

#[test]
fn lspci_devices_keep_their_driver_and_slot() {
    let dir = bundle(&[(
        "cmd/lspci",
        "0000:41:00.0 3D controller [0302]: NVIDIA Corporation GB202GL [RTX PRO 6000 Blackwell Server Edition] [10de:2bb5] (rev a1)\n\tSubsystem: NVIDIA Corporation Device [10de:204e]\n\tKernel driver in use: vfio-pci\n0000:4a:00.1 Ethernet controller [0200]: Mellanox Technologies MT43244 BlueField-3 integrated ConnectX-7 network controller [15b3:a2dc] (rev 01)\n",
    )]);
    let bundle = Bundle::open(dir.path()).unwrap();
    let Fact::Present(devices) = NodeFacts::new(&bundle).pci_devices() else {
        panic!("lspci not read");
    };
    let summary: Vec<(&str, &str, String, Option<&str>, &str)> = devices
        .iter()
        .map(|device| {
            (
                device.bdf.as_str(),
                device.class.as_str(),
                device.pci_id(),
                device.driver.as_deref(),
                device.slot(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "0000:41:00.0",
                "0302",
                "10de:2bb5".to_owned(),
                Some("vfio-pci"),
                "0000:41:00"
            ),
            (
                "0000:4a:00.1",
                "0200",
                "15b3:a2dc".to_owned(),
                None,
                "0000:4a:00"
            ),
        ]
    );
}

#[test]
fn a_bad_bundle_is_bad_input() {
    let err = Bundle::open(Path::new("/nonexistent/bundle")).unwrap_err();
    assert!(is_bad_input(&err));
    let dir = bundle(&[("facts.json", "{not json")]);
    let err = Bundle::open(dir.path()).unwrap_err();
    assert!(is_bad_input(&err));
    assert!(format!("{err:#}").starts_with(&format!(
        "parsing {}",
        dir.path().join("facts.json").display()
    )));
}
