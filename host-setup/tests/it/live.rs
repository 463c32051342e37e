//! Collects this machine live and asserts the verdicts it must get.
//!
//! The project's machine is a virtual machine without a usable TEE (an AMD EPYC or Intel Xeon
//! guest whose KVM is kvm-pvm): whatever its vendor, the TEE's CPU check fails, there is no
//! /dev/sev, no GPU and no IOMMU group, and the bundle records all of that as absent or failed.

use cvm_core::check::Status;
use host_setup::{
    checks::{evaluate, Options},
    facts::{collect, Bundle, CollectOptions, Fact},
};

#[test]
fn live_collect_of_this_vm() {
    if !cvm_core::skip::require_slow("live_collect_of_this_vm") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("facts");
    let meta = collect(&CollectOptions::live(&out)).expect("collecting never fails on this host");
    let bundle = Bundle::open(&out).expect("the collected bundle opens");
    assert_eq!(bundle.meta(), &meta);
    let cpuinfo = match bundle.root_file("/proc/cpuinfo") {
        Fact::Present(text) => host_setup::facts::parse::cpuinfo(&text),
        other => panic!("/proc/cpuinfo was not collected: {other:?}"),
    };
    if !cpuinfo.flags.contains("hypervisor") {
        cvm_core::skip::skip(
            "live_collect_of_this_vm",
            "this host is not a virtual machine; the expected verdicts are those of the project's VM",
        );
        return;
    }
    assert!(
        meta.absent.iter().any(|path| path == "root/dev/sev"),
        "no /dev/sev must be recorded as absent: {:?}",
        meta.absent
    );
    assert_eq!(bundle.root_exists("/dev/sev"), Fact::Absent);
    let report = evaluate(&bundle, &Options::default()).expect("evaluating");
    let status = |id: &str| {
        report
            .checks
            .iter()
            .find(|check| check.id == id)
            .map(|check| (check.status, check.detail.clone()))
            .unwrap_or_else(|| panic!("no result for {id}"))
    };
    let tee_check = match cpuinfo.vendor_id.as_str() {
        "AuthenticAMD" => "snp.cpu-support",
        "GenuineIntel" => "tdx.cpu-support",
        other => panic!("unexpected vendor {other}"),
    };
    for id in [tee_check, "host.bare-metal", "gpu.present"] {
        let (found, detail) = status(id);
        assert_eq!(found, Status::Fail, "{id}: {detail}");
    }
    if cpuinfo.vendor_id == "AuthenticAMD" {
        let (found, detail) = status("snp.dev-sev");
        assert_eq!(found, Status::Fail, "snp.dev-sev: {detail}");
    }
    assert_eq!(report.exit_code(), 1);
}
