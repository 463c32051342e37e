//! The minimal bundle reader: what is present, absent or not collected, and why.

use std::path::Path;

use cvm_core::error::is_bad_input;

use super::{DirFacts, Fact, NodeFacts};

fn bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
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
    let facts = DirFacts::open(dir.path()).unwrap();
    assert_eq!(facts.kvm_amd_parameter("sev_snp"), Fact::Absent);
    assert_eq!(
        facts.system_product(),
        Fact::NotCollected(
            "cmd/dmidecode is not in the facts bundle (unreadable on the host: permission denied)"
                .to_owned()
        )
    );
    assert_eq!(
        facts.qemu_version(),
        Fact::NotCollected(
            "cmd/qemu-version is not in the facts bundle (its command failed: qemu-system-x86_64: not found)".to_owned()
        )
    );
    assert_eq!(
        facts.cpu_model(),
        Fact::NotCollected("cmd/lscpu was not collected in the facts bundle".to_owned())
    );
    assert_eq!(
        facts.uefi_boot(),
        Fact::NotCollected(
            "root/sys/firmware/efi was not collected in the facts bundle".to_owned()
        )
    );
}

#[test]
fn a_file_without_the_value_is_not_a_guess() {
    let dir = bundle(&[
        ("cmd/lscpu", "Architecture: x86_64\n"),
        ("root/proc/meminfo", "MemFree: 12 kB\n"),
    ]);
    let facts = DirFacts::open(dir.path()).unwrap();
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
    let Fact::Present(devices) = DirFacts::open(dir.path()).unwrap().pci_devices() else {
        panic!("lspci not read");
    };
    let summary: Vec<(&str, &str, &str, Option<&str>, &str)> = devices
        .iter()
        .map(|device| {
            (
                device.address.as_str(),
                device.class.as_str(),
                device.id.as_str(),
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
                "10de:2bb5",
                Some("vfio-pci"),
                "0000:41:00"
            ),
            ("0000:4a:00.1", "0200", "15b3:a2dc", None, "0000:4a:00"),
        ]
    );
}

#[test]
fn a_bad_bundle_is_bad_input() {
    let err = DirFacts::open(Path::new("/nonexistent/bundle")).unwrap_err();
    assert!(is_bad_input(&err));
    let dir = bundle(&[("facts.json", "{not json")]);
    let err = DirFacts::open(dir.path()).unwrap_err();
    assert!(is_bad_input(&err));
    assert!(format!("{err:#}").contains("facts.json: not a facts.json document"));
}
