//! Unit tests for the parsers, over the fixture bundles' captured text: one `check` per parser,
//! snapshot with expect-test (`UPDATE_EXPECT=1 cargo test -p host-setup` regenerates).

use expect_test::{expect, Expect};

use super::*;

fn fixture(bundle: &str, rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/facts")
        .join(bundle)
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[track_caller]
fn check(actual: impl std::fmt::Debug, expect: Expect) {
    expect.assert_eq(&format!("{actual:#?}"));
}

#[test]
fn cpuinfo_of_the_xe7745() {
    let info = cpuinfo(&fixture("snp-xe7745", "root/proc/cpuinfo"));
    let tee_flags: Vec<&String> = info
        .flags
        .iter()
        .filter(|flag| {
            ["sme", "sev", "sev_es", "sev_snp", "svm", "hypervisor"].contains(&flag.as_str())
        })
        .collect();
    check(
        (
            &info.vendor_id,
            &info.model_name,
            info.family,
            info.model,
            info.processors,
            tee_flags,
        ),
        expect![[r#"
            (
                "AuthenticAMD",
                "AMD EPYC 9555 64-Core Processor",
                Some(
                    26,
                ),
                Some(
                    2,
                ),
                256,
                [
                    "sev",
                    "sev_es",
                    "sev_snp",
                    "sme",
                    "svm",
                ],
            )"#]],
    );
}

#[test]
fn lscpu_of_the_xe7745() {
    check(
        lscpu(&fixture("snp-xe7745", "cmd/lscpu")),
        expect![[r#"
            Lscpu {
                model_name: "AMD EPYC 9555 64-Core Processor",
                vendor_id: "AuthenticAMD",
                cpus: Some(
                    256,
                ),
                sockets: Some(
                    2,
                ),
                cores_per_socket: Some(
                    64,
                ),
                threads_per_core: Some(
                    2,
                ),
                virtualization: "AMD-V",
                hypervisor_vendor: "",
            }"#]],
    );
}

#[test]
fn meminfo_and_os_release_and_versions() {
    let memory = meminfo(&fixture("snp-xe7745", "root/proc/meminfo"));
    check(
        (
            memory.get("MemTotal"),
            os_release(&fixture("snp-xe7745", "root/etc/os-release")),
            kernel_release(&fixture("snp-xe7745", "cmd/uname-r")),
            qemu_version(&fixture("tdx-host", "cmd/qemu-version")),
        ),
        expect![[r#"
            (
                Some(
                    1584781312,
                ),
                OsRelease {
                    id: "ubuntu",
                    version_id: "25.10",
                    codename: "questing",
                    pretty_name: "Ubuntu 25.10",
                },
                Some(
                    Version {
                        major: 6,
                        minor: 17,
                        patch: 0,
                    },
                ),
                Some(
                    Version {
                        major: 10,
                        minor: 1,
                        patch: 0,
                    },
                ),
            )"#]],
    );
}

#[test]
fn versions_compare_numerically() {
    assert!(Version::parse_prefix("6.8.0-88-generic") < Version::parse_prefix("6.17.0-6-generic"));
    assert_eq!(Version::parse_prefix("10.1"), Some(Version::new(10, 1, 0)));
    assert_eq!(Version::parse_prefix("v6.1"), None);
    assert_eq!(
        qemu_version("QEMU emulator version 9.2.1\n"),
        Some(Version::new(9, 2, 1))
    );
}

#[test]
fn lspci_gpu_entry() {
    let devices = lspci(&fixture("snp-xe7745", "cmd/lspci"));
    let gpu = devices
        .iter()
        .find(|d| d.bdf == "0000:01:00.0")
        .expect("the first GPU");
    assert_eq!(devices.len(), 16);
    assert_eq!(
        (gpu.pci_id().as_str(), gpu.slot()),
        ("10de:2bb5", "0000:01:00")
    );
    check(
        gpu,
        expect![[r#"
            LspciDevice {
                bdf: "0000:01:00.0",
                class_name: "3D controller",
                class: "0302",
                vendor: "10de",
                device: "2bb5",
                description: "NVIDIA Corporation GB202GL [RTX PRO 6000 Blackwell Server Edition]",
                driver: Some(
                    "vfio-pci",
                ),
                modules: [
                    "nvidiafb",
                    "nouveau",
                ],
            }"#]],
    );
}

#[test]
fn dmesg_of_the_snp_host() {
    check(
        dmesg(&fixture("snp-xe7745", "cmd/dmesg")),
        expect![[r#"
            Dmesg {
                snp_api: Some(
                    FirmwareVersion {
                        major: 1,
                        minor: 55,
                        build: 52,
                    },
                ),
                sev_api: Some(
                    FirmwareVersion {
                        major: 1,
                        minor: 55,
                        build: 52,
                    },
                ),
                rmp_table: Some(
                    "[0x0000000034800000 - 0x00000001b4803fff]",
                ),
                rmp_not_reserved: false,
                rmp_segmented: false,
                snp_asids: Some(
                    AsidRange {
                        first: 1,
                        last: 99,
                    },
                ),
                sev_es_asids: Some(
                    AsidRange {
                        first: 1,
                        last: 99,
                    },
                ),
                sev_disabled: [],
                sev_failures: [],
                snp_iommu_refusals: [],
                iommu_snp_enabled: true,
                iommu_driver: true,
                tdx_initialized: false,
                tdx_module: None,
                tdx_failures: [],
            }"#]],
    );
}

#[test]
fn dmesg_does_not_depend_on_line_order() {
    for bundle in ["snp-xe7745", "tdx-host"] {
        let text = fixture(bundle, "cmd/dmesg");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.reverse();
        assert_eq!(dmesg(&lines.join("\n")), dmesg(&text), "{bundle}");
    }
}

#[test]
fn dmesg_failure_signatures() {
    let text = "\
<3>[    4.1] ccp 0000:44:00.1: SEV: failed to INIT error 0x1, rc -5
[    0.0] SEV-SNP: Memory for the RMP table has not been reserved by BIOS
kvm_amd: SEV-ES disabled (ASIDs 0 - 0)
[    3.2] SNP: IOMMU is configured with V2 page table mode, SNP cannot be supported.
[   13.4] virt/tdx: module initialization failed (-5)
[   13.4] virt/tdx: SEAMCALL (0x0000000000000022) failed: 0xc000050500000000
";
    check(
        dmesg(text),
        expect![[r#"
            Dmesg {
                snp_api: None,
                sev_api: None,
                rmp_table: None,
                rmp_not_reserved: true,
                rmp_segmented: false,
                snp_asids: None,
                sev_es_asids: None,
                sev_disabled: [
                    "kvm_amd: SEV-ES disabled (ASIDs 0 - 0)",
                ],
                sev_failures: [
                    "ccp 0000:44:00.1: SEV: failed to INIT error 0x1, rc -5",
                ],
                snp_iommu_refusals: [
                    "SNP: IOMMU is configured with V2 page table mode, SNP cannot be supported.",
                ],
                iommu_snp_enabled: false,
                iommu_driver: false,
                tdx_initialized: false,
                tdx_module: None,
                tdx_failures: [
                    "virt/tdx: module initialization failed (-5)",
                    "virt/tdx: SEAMCALL (0x0000000000000022) failed: 0xc000050500000000",
                ],
            }"#]],
    );
}

#[test]
fn dmesg_of_the_tdx_host() {
    let facts = dmesg(&fixture("tdx-host", "cmd/dmesg"));
    assert!(facts.tdx_initialized && facts.iommu_driver && facts.tdx_failures.is_empty());
    assert_eq!(
        facts.tdx_module.as_deref(),
        Some("TDX module 1.5.06.00, build number 744, build date 0134d817")
    );
}

#[test]
fn gpu_admin_tools_output() {
    let modes = gpu_cc_modes(&fixture("snp-xe7745", "cmd/gpu-cc-mode"));
    assert_eq!(modes.len(), 8);
    check(
        &modes[..2],
        expect![[r#"
            [
                GpuMode {
                    bdf: "0000:01:00.0",
                    mode: "on",
                },
                GpuMode {
                    bdf: "0000:21:00.0",
                    mode: "on",
                },
            ]"#]],
    );
    let ppcie = gpu_ppcie_modes(&fixture("tdx-host", "cmd/gpu-ppcie-mode"));
    assert_eq!(
        ppcie.iter().map(|m| m.mode.as_str()).collect::<Vec<_>>(),
        ["off", "off"]
    );
    // The topology block lists the same addresses but carries no mode.
    assert!(gpu_cc_modes("Topo:\n   GPU 0000:01:00.0 Generic-gb202 0x2bb5 BAR0 0x1\n").is_empty());
}

#[test]
fn small_outputs() {
    assert_eq!(ulimit_l("unlimited\n"), Some(Memlock::Unlimited));
    assert_eq!(ulimit_l("8192\n"), Some(Memlock::Kib(8192)));
    assert_eq!(ulimit_l("lots"), None);
    assert_eq!(cpu_list_len("0-255\n"), Some(256));
    assert_eq!(cpu_list_len("0-3,8,10-11"), Some(7));
    assert_eq!(cpu_list_len("\n"), Some(0));
    assert_eq!(cpu_list_len("5-1"), None);
    assert_eq!(param_enabled("Y\n"), Some(true));
    assert_eq!(param_enabled("0"), Some(false));
    assert_eq!(param_enabled(""), None);
    assert_eq!(hex_u64("0x00000001b4803fff\n"), Some(0x1_b480_3fff));
    assert_eq!(hex_u64("0x"), None);
    assert_eq!(
        cpuid_leaf("0x0101fdff 0x00004073 0x000003ee 0x00000064"),
        Some(CpuidLeaf {
            eax: 0x0101_fdff,
            ebx: 0x4073,
            ecx: 0x3ee,
            edx: 0x64
        })
    );
    assert_eq!(cpuid_leaf("0x1 0x2 0x3"), None);
    assert_eq!(cpuid_leaf("0x1 0x2 0x3 0x100000000"), None);
    let modules = lsmod(&fixture("snp-xe7745", "cmd/lsmod"));
    assert!(modules.contains("vfio_pci") && !modules.contains("Module"));
    assert_eq!(
        cmdline("ro iommu=pt amd_iommu=pgtbl_v2"),
        [
            ("ro".to_owned(), None),
            ("iommu".to_owned(), Some("pt".to_owned())),
            ("amd_iommu".to_owned(), Some("pgtbl_v2".to_owned()))
        ]
    );
    let objects = qemu_objects(&fixture("snp-xe7745", "cmd/qemu-objects"));
    assert!(objects.contains("sev-snp-guest") && !objects.contains("tdx-guest"));
}

#[test]
fn dmidecode_platform() {
    check(
        dmidecode(&fixture("snp-xe7745", "cmd/dmidecode")),
        expect![[r#"
            Dmi {
                manufacturer: "Dell Inc.",
                product_name: "PowerEdge XE7745",
                bios_version: "1.2.3",
                uefi_supported: true,
            }"#]],
    );
}

#[test]
fn bios_numbers_come_as_integers_or_strings() {
    let document: serde_json::Value = serde_json::from_str(
        r#"{"Attributes": {"CpuMinSevAsid": 100, "Other": "100", "Snp": "Enabled", "Off": "Disabled", "Flag": true, "Big": 1e300}}"#,
    )
    .expect("json");
    let attributes = bios_attributes(&document).expect("attributes");
    assert_eq!(attributes["CpuMinSevAsid"].as_int(), Some(100));
    assert_eq!(attributes["Other"].as_int(), Some(100));
    assert!(attributes["Snp"].is_enabled() && !attributes["Off"].is_enabled());
    assert!(attributes["Flag"].is_enabled());
    assert_eq!(attributes["Big"].as_int(), None);
    assert_eq!(bios_attributes(&serde_json::json!({"Id": "Bios"})), None);
    let registry: serde_json::Value = serde_json::from_str(&fixture(
        "snp-xe7745",
        "redfish/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry.json",
    ))
    .expect("json");
    assert!(bios_registry_names(&registry).contains("CpuMinSevAsid"));
}

fn captured(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/captured")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn outputs_captured_on_this_projects_vm() {
    let lscpu = lscpu(&captured("lscpu"));
    let info = cpuinfo(&captured("cpuinfo"));
    check(
        (
            &lscpu.model_name,
            lscpu.cpus,
            lscpu.sockets,
            &lscpu.hypervisor_vendor,
            &info.vendor_id,
            info.flags.contains("hypervisor"),
            os_release(&captured("os-release")),
            qemu_version(&captured("qemu-version")),
            qemu_objects(&captured("qemu-objects")).contains("sev-snp-guest"),
            meminfo(&captured("meminfo")).contains_key("MemTotal"),
        ),
        expect![[r#"
            (
                "Intel(R) Xeon(R) Processor",
                Some(
                    2,
                ),
                Some(
                    1,
                ),
                "KVM",
                "GenuineIntel",
                true,
                OsRelease {
                    id: "debian",
                    version_id: "12",
                    codename: "bookworm",
                    pretty_name: "Debian GNU/Linux 12 (bookworm)",
                },
                Some(
                    Version {
                        major: 10,
                        minor: 0,
                        patch: 2,
                    },
                ),
                true,
                true,
            )"#]],
    );
}
