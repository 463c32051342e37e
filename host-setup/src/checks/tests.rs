//! Unit tests for the registry's structure, selection, strict mode and rendering.

use std::collections::BTreeSet;

use expect_test::expect;

use super::*;

#[test]
fn ids_are_unique_and_parents_come_first() {
    let mut seen = BTreeSet::new();
    for check in registry() {
        assert!(seen.insert(check.id), "duplicate id {}", check.id);
        if let Some(parent) = check.parent {
            assert!(
                seen.contains(parent),
                "{}: parent {parent} must come before it",
                check.id
            );
        }
        assert!(
            !check.remediation.is_empty() && !check.title.is_empty(),
            "{}",
            check.id
        );
    }
}

#[test]
fn design_ids_are_all_present() {
    let ids: BTreeSet<&str> = registry().iter().map(|check| check.id).collect();
    for id in [
        "host.os-release",
        "host.kernel-version",
        "cpu.vendor",
        "snp.cpu-support",
        "snp.bios-enabled",
        "snp.asids",
        "snp.kvm-enabled",
        "snp.firmware-version",
        "snp.iommu-mode",
        "tdx.cpu-support",
        "tdx.module-initialized",
        "tdx.kvm-enabled",
        "tdx.cmdline",
        "tdx.memlock",
        "iommu.enabled",
        "gpu.present",
        "gpu.host-driver-absent",
        "gpu.vfio-bound",
        "gpu.iommu-isolated",
        "gpu.cc-mode",
        "qemu.version",
        "qemu.tee-support",
    ] {
        assert!(ids.contains(id), "{id} (DESIGN.md §7) is missing");
    }
}

#[test]
fn patterns_select_ids_and_groups() {
    assert!(pattern_matches("snp.asids", "snp.asids"));
    assert!(pattern_matches("snp.", "snp.asids"));
    assert!(pattern_matches("bios.*", "bios.sme"));
    assert!(!pattern_matches("snp", "snp.asids"));
    assert!(!pattern_matches("snp.a", "snp.asids"));
}

fn fixture() -> Bundle {
    Bundle::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/facts/snp-xe7745"),
    )
    .expect("the fixture opens")
}

#[test]
fn only_skip_and_strict() {
    let bundle = fixture();
    let options = Options {
        only: vec!["snp.".into(), "qemu.version".into()],
        skip: vec!["snp.memlock".into()],
        ..Options::default()
    };
    let report = evaluate(&bundle, &options).expect("evaluate");
    let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 12);
    assert!(ids.contains(&"qemu.version") && !ids.contains(&"snp.memlock"));
    // The other TEE's checks do not apply: --strict leaves them skipped.
    let strict = evaluate(
        &bundle,
        &Options {
            strict: true,
            ..Options::default()
        },
    )
    .expect("evaluate");
    assert_eq!(strict.exit_code(), 0, "{strict:#?}");
    assert_eq!(strict.summary.skip, 9);
    // A fact that was not collected fails under --strict.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("facts.json"), "{\"schema\": 1}").expect("write");
    let empty = Bundle::open(dir.path()).expect("open");
    let strict = evaluate(
        &empty,
        &Options {
            only: vec!["qemu.version".into()],
            strict: true,
            ..Options::default()
        },
    )
    .expect("evaluate");
    assert_eq!(strict.checks[0].status, Status::Fail, "{strict:#?}");
    assert!(strict.checks[0]
        .detail
        .starts_with("skipped under --strict: cmd/qemu-version"));
    let err = evaluate(
        &bundle,
        &Options {
            only: vec!["snp.nope".into()],
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
}

#[test]
fn tee_override_skips_the_other_tee() {
    // TDX forced on the AMD bundle: the SNP checks do not apply, and the TDX checks are skipped
    // because cpu.vendor, their parent, fails on the vendor mismatch.
    let report = evaluate(
        &fixture(),
        &Options {
            tee: Some(Tee::Tdx),
            only: vec![
                "cpu.vendor".into(),
                "snp.cpu-support".into(),
                "tdx.cpu-support".into(),
            ],
            ..Options::default()
        },
    )
    .expect("evaluate");
    let statuses: Vec<(&str, Status)> = report
        .checks
        .iter()
        .map(|c| (c.id.as_str(), c.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("cpu.vendor", Status::Fail),
            ("snp.cpu-support", Status::Skip),
            ("tdx.cpu-support", Status::Skip)
        ]
    );
}

#[test]
fn renderings() {
    let report = Report::new(vec![
        CheckResult {
            id: "snp.kvm-enabled".into(),
            title: "kvm_amd has sev, sev_es and sev_snp on".into(),
            status: Status::Fail,
            detail: "kvm_amd sev_snp=N".into(),
            remediation: "Load kvm_amd with sev_snp=1.".into(),
        },
        CheckResult {
            id: "qemu.version".into(),
            title: "QEMU >= 9.2.1".into(),
            status: Status::Pass,
            detail: "QEMU 9.2.1".into(),
            remediation: String::new(),
        },
    ]);
    expect![[r#"
        ID               STATUS  DETAIL
        snp.kvm-enabled  fail    kvm_amd sev_snp=N
                                 fix: Load kvm_amd with sev_snp=1.
        qemu.version     pass    QEMU 9.2.1
        1 passed, 1 failed, 0 warned, 0 skipped
    "#]]
    .assert_eq(&render_table(&report));
    expect![[r#"
        fail snp.kvm-enabled: kvm_amd sev_snp=N
          fix: Load kvm_amd with sev_snp=1.
        pass qemu.version: QEMU 9.2.1
        1 passed, 1 failed, 0 warned, 0 skipped
    "#]]
    .assert_eq(&render_plain(&report));
}

#[test]
fn zero_c_bit_position_fails() {
    // What a hypervisor that hides the C-bit reports: the SNP features but no position.
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("facts.json", "{\"schema\": 1}");
    write(
        "root/proc/cpuinfo",
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n",
    );
    write("cpuid/0x0", "0x10 0x68747541 0x444d4163 0x69746e65\n");
    write(
        "cpuid/0x8000001f",
        "0x0101fdff 0x00000000 0x000003ee 0x00000064\n",
    );
    let bundle = Bundle::open(dir.path()).expect("open");
    let report = evaluate(
        &bundle,
        &Options {
            only: vec!["snp.cbit-position".into()],
            ..Options::default()
        },
    )
    .expect("evaluate");
    assert_eq!(
        report.checks[0].status,
        Status::Fail,
        "{}",
        report.checks[0].detail
    );
}
