//! Reading bundles: the three fact states, and bad bundles that must give clear errors or skips.

use std::fs;

use cvm_core::{check::Status, error::is_bad_input};
use host_setup::{
    checks::{evaluate, Options},
    facts::{Bundle, CpuidLeaf, Fact},
};

use crate::support::{
    fixture, variant,
    Edit::{self, *},
};

#[test]
fn missing_facts_json_is_bad_input_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Bundle::open(dir.path()).unwrap_err();
    assert!(is_bad_input(&err), "{err:#}");
    assert!(
        err.to_string()
            .contains(&dir.path().join("facts.json").display().to_string()),
        "{err:#}"
    );
}

#[test]
fn garbled_or_truncated_facts_json_is_bad_input() {
    for text in [
        "{\"schema\": 1, \"absent\": [",
        "not json",
        "{\"schema\": 2}",
        "{\"schema\": 1, \"extra\": 1}",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("facts.json"), text).expect("write");
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(is_bad_input(&err), "{text:?}: {err:#}");
        assert!(err.to_string().contains("facts.json"), "{err:#}");
    }
}

#[test]
fn accessors_give_present_absent_or_not_collected() {
    let dir = variant(
        "snp-xe7745",
        &[
            Failed(
                "cmd/dmesg",
                "dmesg: read kernel buffer failed: Operation not permitted",
            ),
            Unreadable(
                "msr/0xc0010010",
                "no /dev/cpu/0/msr: run `modprobe msr` as root",
            ),
            Absent("root/sys/module/kvm_amd"),
        ],
    );
    let bundle = Bundle::open(dir.path()).expect("open");
    assert_eq!(
        bundle.cpuid(0x8000_001f),
        Fact::Present(CpuidLeaf {
            eax: 0x0101_fdff,
            ebx: 0x4073,
            ecx: 0x3ee,
            edx: 0x64
        })
    );
    assert_eq!(bundle.msr(0xc001_0132), Fact::Present(0x3480_0000));
    // A path under an absent directory is absent too.
    assert_eq!(
        bundle.root_file("/sys/module/kvm_amd/parameters/sev_snp"),
        Fact::Absent
    );
    assert_eq!(
        bundle.root_file("/sys/module/kvm_intel/parameters/tdx"),
        Fact::Absent
    );
    let Fact::NotCollected(reason) = bundle.cmd("dmesg") else {
        panic!("dmesg")
    };
    assert!(reason.contains("Operation not permitted"), "{reason}");
    let Fact::NotCollected(reason) = bundle.msr(0xc001_0010) else {
        panic!("msr")
    };
    assert!(reason.contains("modprobe msr"), "{reason}");
    let Fact::NotCollected(reason) = bundle.cmd("never-collected") else {
        panic!("cmd")
    };
    assert_eq!(reason, "cmd/never-collected was not collected");
    assert_eq!(
        bundle.root_link_name("/sys/bus/pci/devices/0000:01:00.0/driver"),
        Fact::Present("vfio-pci".to_owned())
    );
    assert_eq!(
        bundle.root_link_name("/sys/bus/pci/devices/0000:01:00.0/iommu_group"),
        Fact::Present("10".to_owned())
    );
    assert_eq!(
        bundle.root_link_name("/sys/bus/pci/devices/0000:00:00.0/driver"),
        Fact::Absent
    );
    assert_eq!(
        bundle.root_dir("/sys/kernel/iommu_groups/10/devices"),
        Fact::Present(vec!["0000:01:00.0".to_owned()])
    );
    assert_eq!(bundle.root_exists("/dev/sev"), Fact::Present(()));
    let Fact::Present(bios) = bundle.redfish("/redfish/v1/Systems/System.Embedded.1/Bios") else {
        panic!("bios")
    };
    assert_eq!(bios["Attributes"]["CpuMinSevAsid"], 100);
}

/// Bad contents in one file: the bundle still opens and the checks that read it skip (or fail
/// for what the garbage says), never panic.
#[track_caller]
fn check_garbage(edits: &[Edit], expect: &[(&str, Status)]) {
    let dir = variant("snp-xe7745", edits);
    let bundle = Bundle::open(dir.path()).expect("open");
    let report = evaluate(&bundle, &Options::default()).expect("evaluate");
    for (id, status) in expect {
        let result = report
            .checks
            .iter()
            .find(|check| check.id == *id)
            .expect("an id");
        assert_eq!(result.status, *status, "{id}: {}", result.detail);
    }
}

#[test]
fn garbage_in_cpuid_and_msr_files_skips() {
    check_garbage(
        &[
            Write("cpuid/0x8000001f", "0x0101fdff 0xZZ\n"),
            Write("msr/0xc0010010", "\u{0}\u{1}binary"),
        ],
        &[
            ("snp.cpu-support", Status::Skip),
            ("snp.bios-enabled", Status::Skip),
        ],
    );
    let dir = variant("snp-xe7745", &[Write("cpuid/0x8000001f", "1 2 3")]);
    let bundle = Bundle::open(dir.path()).expect("open");
    let Fact::NotCollected(reason) = bundle.cpuid(0x8000_001f) else {
        panic!("cpuid")
    };
    assert!(reason.contains("cpuid/0x8000001f is malformed"), "{reason}");
}

#[test]
fn truncated_files_skip_or_fail_for_what_they_lack() {
    check_garbage(
        &[
            TruncateAt("root/proc/cpuinfo", "processor\t: 1\n"),
            Write("cmd/uname-r", "6."),
            Write("cmd/qemu-version", "QEMU emul"),
            Write("root/sys/module/kvm_amd/parameters/sev_snp", ""),
            Write("cmd/ulimit-l", "unlim"),
            TruncateAt("cmd/gpu-cc-mode", "2025-11-20"),
        ],
        &[
            ("cpu.vendor", Status::Pass),
            ("host.kernel-version", Status::Skip),
            ("qemu.version", Status::Skip),
            ("snp.kvm-enabled", Status::Skip),
            ("snp.memlock", Status::Skip),
            ("gpu.cc-mode", Status::Fail),
        ],
    );
}

#[test]
fn dmesg_with_binary_noise_still_parses() {
    let dir = variant("snp-xe7745", &[]);
    let path = dir.path().join("cmd/dmesg");
    let mut bytes = vec![0xff, 0xfe, 0x00, b'\n', 0x1b, b'[', b'0', b'm'];
    bytes.extend(fs::read(&path).expect("read"));
    bytes.extend([0xc3, 0x28, b'\n', 0x80, 0x81]);
    fs::write(&path, bytes).expect("write");
    let bundle = Bundle::open(dir.path()).expect("open");
    let report = evaluate(&bundle, &Options::default()).expect("evaluate");
    let firmware = report
        .checks
        .iter()
        .find(|check| check.id == "snp.firmware-version")
        .expect("id");
    assert_eq!(firmware.status, Status::Pass, "{}", firmware.detail);
}

#[test]
fn fixture_bundles_open() {
    for name in ["snp-xe7745", "tdx-host"] {
        let bundle = Bundle::open(fixture(name)).expect("open");
        assert_eq!(bundle.meta().schema, 1);
    }
}
