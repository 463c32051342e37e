//! The check registry over the healthy bundles and one broken variant per check.
//!
//! Each variant is the healthy bundle plus a few edits that change every source a real host would
//! change together; the expectation lists exactly the checks whose status differs from the healthy
//! bundle's.

use std::collections::BTreeMap;

use cvm_core::check::Status::{self, Fail, Pass, Skip, Warn};
use cvm_core::model::Tee;
use host_setup::{
    checks::{evaluate, registry, Options},
    facts::Bundle,
};

use crate::support::{
    fixture, variant,
    Edit::{self, *},
};

fn statuses(dir: &std::path::Path) -> BTreeMap<String, (Status, String)> {
    let bundle = Bundle::open(dir).expect("opening the bundle");
    evaluate(&bundle, &Options::default())
        .expect("evaluating")
        .checks
        .into_iter()
        .map(|check| (check.id, (check.status, check.detail)))
        .collect()
}

/// Evaluates `base` with `edits` applied and asserts that exactly the checks in `expect` differ
/// from the healthy bundle, with those statuses.
#[track_caller]
fn check(base: &str, edits: &[Edit], expect: &[(&str, Status)]) {
    let healthy = statuses(&fixture(base));
    let dir = variant(base, edits);
    let broken = statuses(dir.path());
    let changed: Vec<(String, Status)> = broken
        .iter()
        .filter(|(id, (status, _))| healthy[*id].0 != *status)
        .map(|(id, (status, _))| (id.clone(), *status))
        .collect();
    let mut expected: Vec<(String, Status)> = expect
        .iter()
        .map(|(id, status)| ((*id).to_owned(), *status))
        .collect();
    expected.sort();
    let details: Vec<String> = changed
        .iter()
        .map(|(id, _)| format!("  {id}: {}", broken[id].1))
        .collect();
    assert_eq!(changed, expected, "details:\n{}", details.join("\n"));
}

fn report_json(name: &str) -> String {
    let bundle = Bundle::open(fixture(name)).expect("opening the bundle");
    let report = evaluate(&bundle, &Options::default()).expect("evaluating");
    serde_json::to_string_pretty(&report).expect("serializing") + "\n"
}

#[test]
fn healthy_reports_match_their_snapshots() {
    // `UPDATE_EXPECT=1 cargo test -p host-setup` rewrites them.
    expect_test::expect_file!["../data/reports/snp-xe7745.json"]
        .assert_eq(&report_json("snp-xe7745"));
    expect_test::expect_file!["../data/reports/tdx-host.json"].assert_eq(&report_json("tdx-host"));
}

#[test]
fn healthy_snp_xe7745_passes_everything_but_the_other_tee() {
    for (id, (status, detail)) in statuses(&fixture("snp-xe7745")) {
        let expected = if id.starts_with("tdx.")
            || id == "gpu.ppcie-mode"
            || id == "bios.memory-encryption"
            || id == "bios.tdx"
        {
            Skip
        } else {
            Pass
        };
        assert_eq!(status, expected, "{id}: {detail}");
    }
}

#[test]
fn healthy_tdx_host_passes_everything_but_the_other_tee() {
    for (id, (status, detail)) in statuses(&fixture("tdx-host")) {
        let other_tee = id.starts_with("snp.")
            || ["bios.sme", "bios.snp", "bios.min-sev-asid", "bios.rmp"].contains(&id.as_str());
        let expected = if other_tee || id == "gpu.ppcie-mode" {
            Skip
        } else {
            Pass
        };
        assert_eq!(status, expected, "{id}: {detail}");
    }
}

const DMESG: &str = "cmd/dmesg";
const CPUINFO: &str = "root/proc/cpuinfo";
const CMDLINE: &str = "root/proc/cmdline";
const BIOS: &str = "redfish/redfish/v1/Systems/System.Embedded.1/Bios.json";
const SEV: &str = "root/sys/module/kvm_amd/parameters/sev";
const SEV_ES: &str = "root/sys/module/kvm_amd/parameters/sev_es";
const SEV_SNP: &str = "root/sys/module/kvm_amd/parameters/sev_snp";
const SYSCFG: &str = "msr/0xc0010010";
const RMP_BASE: &str = "msr/0xc0010132";
const RMP_END: &str = "msr/0xc0010133";
/// SYSCFG with SMEE set but SNPEn and VMPLEn clear: the kernel did not initialise SNP.
const SYSCFG_NO_SNP: &str = "0x0000000000fc0000\n";

#[test]
fn snp_bios_with_sme_off() {
    check(
        "snp-xe7745",
        &[
            Replace(CPUINFO, " sme sev sev_es sev_snp", ""),
            Write(SYSCFG, "0x00000000007c0000\n"),
            Write(RMP_BASE, "0x0000000000000000\n"),
            Write(RMP_END, "0x0000000000000000\n"),
            RemoveLines(DMESG, "RMP table"),
            RemoveLines(DMESG, "IOMMU SNP support enabled"),
            RemoveLines(DMESG, "sev enabled"),
            RemoveLines(DMESG, "API:1.55"),
            RemoveLines(DMESG, "(ASIDs"),
            Write(SEV, "N\n"),
            Write(SEV_ES, "N\n"),
            Write(SEV_SNP, "N\n"),
            Absent("root/dev/sev"),
            Replace(BIOS, r#""Sme": "Enabled""#, r#""Sme": "Disabled""#),
        ],
        &[
            ("snp.bios-enabled", Fail),
            ("snp.rmp-coverage", Skip),
            ("snp.asids", Skip),
            ("snp.kernel-initialized", Skip),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
            ("snp.dev-sev", Fail),
            ("bios.sme", Fail),
            ("bios.snp", Skip),
            ("bios.min-sev-asid", Skip),
            ("bios.rmp", Skip),
        ],
    );
}

#[test]
fn snp_bios_without_memory_coverage() {
    check(
        "snp-xe7745",
        &[
            Write(RMP_BASE, "0x0000000000000000\n"),
            Write(RMP_END, "0x0000000000000000\n"),
            Write(SYSCFG, SYSCFG_NO_SNP),
            Replace(CPUINFO, " sev_snp", ""),
            Replace(
                DMESG,
                "SEV-SNP: RMP table physical range [0x0000000034800000 - 0x00000001b4803fff]",
                "SEV-SNP: Memory for the RMP table has not been reserved by BIOS",
            ),
            RemoveLines(DMESG, "IOMMU SNP support enabled"),
            RemoveLines(DMESG, "SEV-SNP API"),
            Replace(DMESG, "SEV-SNP enabled (ASIDs", "SEV-SNP disabled (ASIDs"),
            Write(SEV_SNP, "N\n"),
            Replace(BIOS, r#""Rmp": "Enabled""#, r#""Rmp": "Disabled""#),
        ],
        &[
            ("snp.rmp-coverage", Fail),
            ("snp.kernel-initialized", Skip),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
            ("bios.rmp", Fail),
        ],
    );
}

#[test]
fn snp_bios_leaves_no_asids_for_snp_guests() {
    check(
        "snp-xe7745",
        &[
            Write(
                "cpuid/0x8000001f",
                "0x0101fdff 0x00004073 0x000003ee 0x00000001\n",
            ),
            Replace(
                DMESG,
                "SEV enabled (ASIDs 100 - 1006)",
                "SEV enabled (ASIDs 1 - 1006)",
            ),
            Replace(
                DMESG,
                "SEV-ES enabled (ASIDs 1 - 99)",
                "SEV-ES disabled (ASIDs 0 - 0)",
            ),
            Replace(
                DMESG,
                "SEV-SNP enabled (ASIDs 1 - 99)",
                "SEV-SNP disabled (ASIDs 0 - 0)",
            ),
            Write(SEV_ES, "N\n"),
            Write(SEV_SNP, "N\n"),
            // Some BIOS versions give the integer as a string.
            Replace(BIOS, r#""CpuMinSevAsid": 100"#, r#""CpuMinSevAsid": "1""#),
        ],
        &[
            ("snp.asids", Fail),
            ("snp.kvm-enabled", Fail),
            ("bios.min-sev-asid", Fail),
        ],
    );
}

#[test]
fn segmented_rmp_of_newer_firmware_is_coverage_too() {
    check(
        "snp-xe7745",
        &[
            Write("msr/0xc0010136", "0x0000000000002401\n"),
            Write(RMP_END, "0x0000000000000000\n"),
            Replace(
                DMESG,
                "SEV-SNP: RMP table physical range [0x0000000034800000 - 0x00000001b4803fff]",
                "SEV-SNP: Segmented RMP using 64GB segments",
            ),
        ],
        &[],
    );
}

#[test]
fn tdx_bios_whose_attribute_names_differ() {
    // Ansible-style names (IntelTdx, TdxSeamLoader) are found like Dell script names.
    check(
        "tdx-host",
        &[
            Replace(
                BIOS,
                r#""EnableTdx": "Enabled""#,
                r#""IntelTdx": "Enabled""#,
            ),
            Replace(
                BIOS,
                r#""EnableTdxSeamldr": "Enabled""#,
                r#""TdxSeamLoader": "Enabled""#,
            ),
        ],
        &[],
    );
}

#[test]
fn snp_host_with_iommu_passthrough() {
    check(
        "snp-xe7745",
        &[
            Replace(
                CMDLINE,
                "kvm_amd.sev_snp=1\n",
                "kvm_amd.sev_snp=1 iommu=pt\n",
            ),
            Replace(DMESG, "kvm_amd.sev_snp=1\n", "kvm_amd.sev_snp=1 iommu=pt\n"),
            Replace(
                DMESG,
                "iommu: Default domain type: Translated",
                "iommu: Default domain type: Passthrough (set via kernel command line)",
            ),
            Replace(
                DMESG,
                "AMD-Vi: IOMMU SNP support enabled.",
                "SNP: IOMMU disabled or configured in passthrough mode, SNP cannot be supported.",
            ),
            RemoveLines(DMESG, "RMP table"),
            RemoveLines(DMESG, "SEV-SNP API"),
            Replace(DMESG, "SEV-SNP enabled (ASIDs", "SEV-SNP disabled (ASIDs"),
            Write(SYSCFG, SYSCFG_NO_SNP),
            Replace(CPUINFO, " sev_snp", ""),
            Write(SEV_SNP, "N\n"),
        ],
        &[
            ("snp.iommu-mode", Fail),
            ("snp.kernel-initialized", Fail),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
        ],
    );
}

#[test]
fn snp_firmware_older_than_1_55() {
    check(
        "snp-xe7745",
        &[Replace(DMESG, "API:1.55 build:52", "API:1.51 build:3")],
        &[("snp.firmware-version", Fail)],
    );
}

#[test]
fn stock_ubuntu_24_04_has_no_snp_host_support() {
    check(
        "snp-xe7745",
        &[
            Write(
                "root/etc/os-release",
                "PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION=\"24.04.3 LTS (Noble Numbat)\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=noble\n",
            ),
            Write("cmd/uname-r", "6.8.0-88-generic\n"),
            Replace(CMDLINE, "6.17.0-6-generic", "6.8.0-88-generic"),
            Replace(DMESG, "6.17.0-6-generic", "6.8.0-88-generic"),
            Absent(SEV_SNP),
            Write(SYSCFG, SYSCFG_NO_SNP),
            RemoveLines(DMESG, "RMP table"),
            RemoveLines(DMESG, "SEV-SNP API"),
            RemoveLines(DMESG, "IOMMU SNP support enabled"),
            RemoveLines(DMESG, "SEV-SNP enabled"),
            Replace(DMESG, "SEV enabled (ASIDs 100 - 1006)", "SEV supported: 907 ASIDs"),
            Replace(DMESG, "SEV-ES enabled (ASIDs 1 - 99)", "SEV-ES supported: 99 ASIDs"),
            Write(
                "cmd/qemu-version",
                "QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.10)\nCopyright (c) 2003-2023 Fabrice Bellard and the QEMU Project developers\n",
            ),
            RemoveLines("cmd/qemu-objects", "sev-snp-guest"),
        ],
        &[
            ("host.os-release", Fail),
            ("host.kernel-version", Fail),
            ("snp.kernel-initialized", Fail),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
            ("qemu.version", Fail),
            ("qemu.tee-support", Skip),
        ],
    );
}

#[test]
fn ubuntu_25_04_with_kernel_6_14_works_with_warnings() {
    check(
        "snp-xe7745",
        &[
            Replace("root/etc/os-release", "25.10", "25.04"),
            Replace("root/etc/os-release", "questing", "plucky"),
            Replace("root/etc/os-release", "Questing Quokka", "Plucky Puffin"),
            Write("cmd/uname-r", "6.14.0-37-generic\n"),
            Replace(CMDLINE, "6.17.0-6-generic", "6.14.0-37-generic"),
            Replace(DMESG, "6.17.0-6-generic", "6.14.0-37-generic"),
        ],
        &[("host.os-release", Warn), ("host.kernel-version", Warn)],
    );
}

#[test]
fn snp_host_with_offline_cpus() {
    check(
        "snp-xe7745",
        &[
            Write("root/sys/devices/system/cpu/online", "0-127\n"),
            Write("root/sys/devices/system/cpu/offline", "128-255\n"),
            Write("root/sys/devices/system/cpu/smt/control", "off\n"),
            TruncateAt(CPUINFO, "processor\t: 128\n"),
            Replace(
                "cmd/lscpu",
                "  On-line CPU(s) list:       0-255\n",
                "  On-line CPU(s) list:       0-127\n  Off-line CPU(s) list:      128-255\n",
            ),
        ],
        &[("snp.cpus-online", Fail)],
    );
}

#[test]
fn snp_host_with_an_8_mib_memlock_limit_warns() {
    check(
        "snp-xe7745",
        &[Write("cmd/ulimit-l", "8192\n")],
        &[("snp.memlock", Warn)],
    );
}

#[test]
fn snp_host_without_msr_access_falls_back_to_the_kernel_view() {
    check(
        "snp-xe7745",
        &[
            Unreadable(SYSCFG, "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Unreadable(RMP_BASE, "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Unreadable(RMP_END, "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Absent("root/dev/cpu/0/msr"),
        ],
        &[],
    );
}

#[test]
fn dmesg_that_could_not_be_read_skips_the_firmware_check() {
    check(
        "snp-xe7745",
        &[Failed(
            DMESG,
            "`dmesg` failed (exit status: 1): dmesg: read kernel buffer failed: Operation not permitted",
        )],
        &[("snp.firmware-version", Skip)],
    );
}

#[test]
fn iommu_off_in_the_bios() {
    check(
        "snp-xe7745",
        &[
            Absent("root/sys/kernel/iommu_groups"),
            AbsentEach("root/sys/bus/pci/devices", "iommu_group"),
            AbsentEach("root/sys/bus/pci/devices", "driver"),
            Replace("cmd/lspci", "\tKernel driver in use: vfio-pci\n", ""),
            Replace("cmd/lspci", "\tKernel driver in use: pcieport\n", ""),
            Replace("cmd/lspci", "\tKernel driver in use: ccp\n", ""),
            Replace("cmd/lspci", "\tKernel driver in use: nvme\n", ""),
            Replace("cmd/lspci", "\tKernel driver in use: mlx5_core\n", ""),
            RemoveLines(DMESG, "AMD-Vi"),
            RemoveLines(DMESG, "Adding to iommu group"),
            Replace(
                DMESG,
                "iommu: Default domain type: Translated",
                "SNP: IOMMU disabled or configured in passthrough mode, SNP cannot be supported.",
            ),
            RemoveLines(DMESG, "RMP table"),
            RemoveLines(DMESG, "SEV-SNP API"),
            Replace(DMESG, "SEV-SNP enabled (ASIDs", "SEV-SNP disabled (ASIDs"),
            Write(SYSCFG, SYSCFG_NO_SNP),
            Replace(CPUINFO, " sev_snp", ""),
            Write(SEV_SNP, "N\n"),
            Replace(
                BIOS,
                r#""IommuSupport": "Enabled""#,
                r#""IommuSupport": "Disabled""#,
            ),
        ],
        &[
            ("iommu.enabled", Fail),
            ("snp.iommu-mode", Fail),
            ("snp.kernel-initialized", Fail),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
            ("gpu.vfio-bound", Fail),
            ("gpu.iommu-isolated", Fail),
            ("bios.iommu", Fail),
        ],
    );
}

#[test]
fn gpu_bound_to_the_nvidia_driver() {
    check(
        "snp-xe7745",
        &[
            Link(
                "root/sys/bus/pci/devices/0000:01:00.0/driver",
                "../../../../bus/pci/drivers/nvidia",
            ),
            ReplaceFirst(
                "cmd/lspci",
                "Kernel driver in use: vfio-pci",
                "Kernel driver in use: nvidia",
            ),
            Replace(
                "cmd/lsmod",
                "vfio_pci               16384  8\n",
                "nvidia_uvm           2076672  0\nnvidia              14376960  1 nvidia_uvm\nvfio_pci               16384  7\n",
            ),
            Failed(
                "cmd/gpu-cc-mode",
                "`nvidia_gpu_tools.py --devices gpus --query-cc-mode` failed (exit status: 1): The nvidia driver appears to be using 0000:01:00.0, aborting. Specify --ignore-nvidia-driver to ignore this check.",
            ),
            Failed(
                "cmd/gpu-ppcie-mode",
                "`nvidia_gpu_tools.py --devices gpus --query-ppcie-mode` failed (exit status: 1): The nvidia driver appears to be using 0000:01:00.0, aborting. Specify --ignore-nvidia-driver to ignore this check.",
            ),
        ],
        &[
            ("gpu.host-driver-absent", Fail),
            ("gpu.vfio-bound", Fail),
            ("gpu.cc-mode", Skip),
        ],
    );
}

#[test]
fn gpus_sharing_an_iommu_group_without_acs() {
    check(
        "snp-xe7745",
        &[
            Link(
                "root/sys/bus/pci/devices/0000:21:00.0/iommu_group",
                "../../../../kernel/iommu_groups/10",
            ),
            Link(
                "root/sys/kernel/iommu_groups/10/devices/0000:21:00.0",
                "../../../../devices/pci0000:00/0000:21:00.0",
            ),
            Absent("root/sys/kernel/iommu_groups/14"),
            Replace(
                DMESG,
                "vfio-pci 0000:21:00.0: Adding to iommu group 14",
                "vfio-pci 0000:21:00.0: Adding to iommu group 10",
            ),
        ],
        &[("gpu.iommu-isolated", Fail)],
    );
}

#[test]
fn gpu_with_cc_mode_off() {
    check(
        "snp-xe7745",
        &[Replace(
            "cmd/gpu-cc-mode",
            "GPU 0000:a1:00.0 Generic-gb202 0x2bb5 BAR0 0x44000000000 CC mode is on",
            "GPU 0000:a1:00.0 Generic-gb202 0x2bb5 BAR0 0x44000000000 CC mode is off",
        )],
        &[("gpu.cc-mode", Fail)],
    );
}

#[test]
fn gpu_with_cc_mode_devtools_is_not_production() {
    check(
        "snp-xe7745",
        &[Replace(
            "cmd/gpu-cc-mode",
            "GPU 0000:01:00.0 Generic-gb202 0x2bb5 BAR0 0x1c000000000 CC mode is on",
            "GPU 0000:01:00.0 Generic-gb202 0x2bb5 BAR0 0x1c000000000 CC mode is devtools",
        )],
        &[("gpu.cc-mode", Fail)],
    );
}

#[test]
fn gpu_outside_the_cc_support_list() {
    check(
        "snp-xe7745",
        &[
            Write("root/sys/bus/pci/devices/0000:01:00.0/device", "0x2236\n"),
            ReplaceFirst(
                "cmd/lspci",
                "GB202GL [RTX PRO 6000 Blackwell Server Edition] [10de:2bb5]",
                "GA102GL [A10] [10de:2236]",
            ),
            RemoveLines("cmd/gpu-cc-mode", "0000:01:00.0"),
        ],
        &[
            ("gpu.present", Fail),
            ("gpu.vfio-bound", Skip),
            ("gpu.iommu-isolated", Skip),
            ("gpu.cc-mode", Skip),
        ],
    );
}

#[test]
fn qemu_older_than_9_2_1() {
    check(
        "snp-xe7745",
        &[
            Write(
                "cmd/qemu-version",
                "QEMU emulator version 9.1.2 (Debian 1:9.1.2+ds-1~bpo12+1)\nCopyright (c) 2003-2024 Fabrice Bellard and the QEMU Project developers\n",
            ),
        ],
        &[("qemu.version", Fail), ("qemu.tee-support", Skip)],
    );
}

#[test]
fn qemu_not_installed() {
    check(
        "snp-xe7745",
        &[Absent("cmd/qemu-version"), Absent("cmd/qemu-objects")],
        &[("qemu.version", Fail), ("qemu.tee-support", Skip)],
    );
}

#[test]
fn qemu_without_the_snp_guest_object() {
    check(
        "snp-xe7745",
        &[RemoveLines("cmd/qemu-objects", "sev-snp-guest")],
        &[("qemu.tee-support", Fail)],
    );
}

#[test]
fn host_booted_in_legacy_bios_mode() {
    check(
        "snp-xe7745",
        &[Absent("root/sys/firmware/efi")],
        &[("host.uefi-boot", Fail)],
    );
}

#[test]
fn host_that_is_a_virtual_machine() {
    check(
        "snp-xe7745",
        &[
            Replace(CPUINFO, "rdrand lahf_lm", "rdrand hypervisor lahf_lm"),
            Replace(
                "cmd/lscpu",
                "Virtualization features:\n",
                "Virtualization features:\n  Hypervisor vendor:         KVM\n  Virtualization type:       full\n",
            ),
        ],
        &[("host.bare-metal", Fail)],
    );
}

#[test]
fn bmc_that_did_not_answer_skips_the_bios_checks() {
    check(
        "snp-xe7745",
        &[
            Failed(BIOS, "GET https://10.0.0.5/redfish/v1/Systems/System.Embedded.1/Bios: timed out"),
            Failed(
                "redfish/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry.json",
                "GET https://10.0.0.5/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry: timed out",
            ),
        ],
        &[
            ("bios.sme", Skip),
            ("bios.snp", Skip),
            ("bios.min-sev-asid", Skip),
            ("bios.rmp", Skip),
            ("bios.iommu", Skip),
        ],
    );
}

const TDX_DMESG: &str = "cmd/dmesg";
const TDX_PARAM: &str = "root/sys/module/kvm_intel/parameters/tdx";

#[test]
fn tdx_module_that_fails_to_initialise() {
    check(
        "tdx-host",
        &[
            RemoveLines(TDX_DMESG, "virt/tdx: TDX module 1.5"),
            RemoveLines(TDX_DMESG, "allocated for PAMT"),
            Replace(
                TDX_DMESG,
                "virt/tdx: module initialized",
                "virt/tdx: module initialization failed (-5)",
            ),
            RemoveLines(TDX_DMESG, "TDX is supported"),
            Write(TDX_PARAM, "N\n"),
        ],
        &[("tdx.module-initialized", Fail), ("tdx.kvm-enabled", Fail)],
    );
}

#[test]
fn tdx_off_in_the_bios() {
    check(
        "tdx-host",
        &[
            Replace(CPUINFO, " tdx_host_platform", ""),
            Write("msr/0x1401", "0x0000fffffe000000\n"),
            RemoveLines(TDX_DMESG, "virt/tdx"),
            RemoveLines(TDX_DMESG, "TDX is supported"),
            Write(TDX_PARAM, "N\n"),
            Replace(
                BIOS,
                r#""EnableTdx": "Enabled""#,
                r#""EnableTdx": "Disabled""#,
            ),
        ],
        &[
            ("tdx.cpu-support", Fail),
            ("tdx.bios-enabled", Fail),
            ("tdx.module-initialized", Skip),
            ("tdx.kvm-enabled", Fail),
            ("bios.tdx", Fail),
        ],
    );
}

#[test]
fn tdx_bios_with_single_key_memory_encryption() {
    check(
        "tdx-host",
        &[
            Replace(CPUINFO, " tdx_host_platform", ""),
            Write("msr/0x1401", "0x0000fffffe000000\n"),
            Write("msr/0x87", "0x0000000000000000\n"),
            Write("msr/0x982", "0x0000000600000001\n"),
            RemoveLines(TDX_DMESG, "virt/tdx"),
            RemoveLines(TDX_DMESG, "TDX is supported"),
            Write(TDX_PARAM, "N\n"),
            Replace(
                BIOS,
                r#""MemoryEncryption": "MultipleKeys""#,
                r#""MemoryEncryption": "SingleKey""#,
            ),
        ],
        &[
            ("tdx.cpu-support", Fail),
            ("tdx.bios-enabled", Fail),
            ("tdx.module-initialized", Skip),
            ("tdx.kvm-enabled", Fail),
            ("bios.memory-encryption", Fail),
            ("bios.tdx", Skip),
        ],
    );
}

#[test]
fn tdx_host_without_msr_access_skips_the_msr_check() {
    check(
        "tdx-host",
        &[
            Unreadable("msr/0x87", "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Unreadable("msr/0xa0", "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Unreadable("msr/0x982", "no /dev/cpu/0/msr: run `modprobe msr` as root"),
            Unreadable(
                "msr/0x1401",
                "no /dev/cpu/0/msr: run `modprobe msr` as root",
            ),
            Absent("root/dev/cpu/0/msr"),
        ],
        &[("tdx.bios-enabled", Skip)],
    );
}

#[test]
fn tdx_host_with_corrupt_sgx_registration() {
    check(
        "tdx-host",
        &[Write("msr/0xa0", "0x0000000000000745\n")],
        &[("tdx.bios-enabled", Fail)],
    );
}

#[test]
fn tdx_host_without_nohibernate() {
    check(
        "tdx-host",
        &[
            Replace(CMDLINE, " nohibernate", ""),
            Replace(TDX_DMESG, " nohibernate", ""),
        ],
        &[("tdx.cmdline", Fail)],
    );
}

#[test]
fn tdx_host_with_ubuntu_25_10_default_memlock() {
    check(
        "tdx-host",
        &[Write("cmd/ulimit-l", "8192\n")],
        &[("tdx.memlock", Fail)],
    );
}

#[test]
fn tdx_host_with_a_qemu_without_tdx_guest() {
    check(
        "tdx-host",
        &[RemoveLines("cmd/qemu-objects", "tdx-guest")],
        &[("qemu.tee-support", Fail)],
    );
}

#[test]
fn epyc_7002_rome_has_sev_es_but_no_snp() {
    check(
        "snp-xe7745",
        &[
            Replace(
                CPUINFO,
                "AMD EPYC 9555 64-Core Processor",
                "AMD EPYC 7742 64-Core Processor",
            ),
            Replace(
                CPUINFO,
                "cpu family\t: 26\nmodel\t\t: 2\n",
                "cpu family\t: 23\nmodel\t\t: 49\n",
            ),
            Replace(CPUINFO, " sev_snp", ""),
            Write("cpuid/0x1", "0x00830f10 0x00800800 0x7ed8320b 0x178bfbff\n"),
            Write(
                "cpuid/0x8000001f",
                "0x0000000f 0x0000016f 0x000001fd 0x00000064\n",
            ),
            Write(SYSCFG, "0x00000000009c0000\n"),
            Write(RMP_BASE, "0x0000000000000000\n"),
            Write(RMP_END, "0x0000000000000000\n"),
            RemoveLines(DMESG, "RMP table"),
            RemoveLines(DMESG, "SEV-SNP"),
            RemoveLines(DMESG, "IOMMU SNP support enabled"),
            Write(SEV_SNP, "N\n"),
            Replace(BIOS, "\"Snp\": \"Enabled\",", ""),
            Replace(BIOS, "\"Rmp\": \"Enabled\",", ""),
            Write(
                "redfish/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry.json",
                r#"{"@odata.id": "/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry", "Id": "BiosAttributeRegistry.v1_0_3", "RegistryEntries": {"Attributes": [
                    {"AttributeName": "Sme", "Type": "Enumeration", "MenuPath": "./ProcSettings"},
                    {"AttributeName": "TransparentSme", "Type": "Enumeration", "MenuPath": "./ProcSettings"},
                    {"AttributeName": "CpuMinSevAsid", "Type": "Integer", "MenuPath": "./ProcSettings"},
                    {"AttributeName": "IommuSupport", "Type": "Enumeration", "MenuPath": "./ProcSettings"}]}}"#,
            ),
        ],
        &[
            ("snp.cpu-support", Fail),
            ("snp.cbit-position", Skip),
            ("snp.bios-enabled", Skip),
            ("snp.rmp-coverage", Skip),
            ("snp.asids", Skip),
            ("snp.kernel-initialized", Skip),
            ("snp.firmware-version", Skip),
            ("snp.kvm-enabled", Fail),
            ("bios.snp", Fail),
            ("bios.rmp", Skip),
        ],
    );
}

#[test]
fn cpu_vendor_without_a_supported_tee() {
    check(
        "snp-xe7745",
        &[
            Replace(CPUINFO, "AuthenticAMD", "HygonGenuine"),
            Replace(
                CPUINFO,
                "AMD EPYC 9555 64-Core Processor",
                "Hygon C86 7285 32-core Processor",
            ),
            Write("cpuid/0x0", "0x0000000d 0x6f677948 0x656e6975 0x6e65476e\n"),
        ],
        &[
            ("cpu.vendor", Fail),
            ("snp.cpu-support", Skip),
            ("snp.cbit-position", Skip),
            ("snp.bios-enabled", Skip),
            ("snp.rmp-coverage", Skip),
            ("snp.asids", Skip),
            ("snp.kernel-initialized", Skip),
            ("snp.kvm-enabled", Skip),
            ("snp.dev-sev", Skip),
            ("snp.firmware-version", Skip),
            ("snp.iommu-mode", Skip),
            ("snp.cpus-online", Skip),
            ("snp.memlock", Skip),
            ("qemu.tee-support", Skip),
            ("bios.sme", Skip),
            ("bios.snp", Skip),
            ("bios.min-sev-asid", Skip),
            ("bios.rmp", Skip),
        ],
    );
}

/// A TEE forced by the model or `--tee` that the CPU vendor cannot provide fails `cpu.vendor`
/// with its remediation; the matching TEE still passes.
#[test]
fn cpu_vendor_against_a_forced_tee() {
    #[track_caller]
    fn forced(base: &str, tee: Tee, expect: (Status, &str)) {
        let bundle = Bundle::open(fixture(base)).expect("opening the bundle");
        let options = Options {
            tee: Some(tee),
            only: vec!["cpu.vendor".into()],
            ..Options::default()
        };
        let report = evaluate(&bundle, &options).expect("evaluating");
        let check = &report.checks[0];
        assert_eq!((check.status, check.detail.as_str()), expect);
        assert_eq!(check.remediation.is_empty(), expect.0 == Pass);
    }
    forced(
        "tdx-host",
        Tee::Snp,
        (
            Fail,
            "TEE snp was requested but INTEL(R) XEON(R) PLATINUM 8580 (GenuineIntel) is not an AMD CPU (AuthenticAMD)",
        ),
    );
    forced(
        "snp-xe7745",
        Tee::Tdx,
        (
            Fail,
            "TEE tdx was requested but AMD EPYC 9555 64-Core Processor (AuthenticAMD) is not an Intel CPU (GenuineIntel)",
        ),
    );
    forced(
        "snp-xe7745",
        Tee::Snp,
        (
            Pass,
            "AMD EPYC 9555 64-Core Processor (AuthenticAMD), TEE snp",
        ),
    );
}

/// The XE7745 bundle turned into a Hopper HGX: 8 x H100 SXM5 (10de:2330) and 4 NVSwitches on
/// vfio-pci, PPCIe mode on and CC mode off, as gpu-admin-tools leaves them after
/// `--set-ppcie-mode on`.
const HGX: &[Edit] = &[
    Write("root/sys/bus/pci/devices/0000:01:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:21:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:41:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:61:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:81:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:a1:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:c1:00.0/device", "0x2330\n"),
    Write("root/sys/bus/pci/devices/0000:e1:00.0/device", "0x2330\n"),
    Replace(
        "cmd/lspci",
        "GB202GL [RTX PRO 6000 Blackwell Server Edition] [10de:2bb5]",
        "GH100 [H100 SXM5 80GB] [10de:2330]",
    ),
    Write("root/sys/bus/pci/devices/0000:05:00.0/vendor", "0x10de\n"),
    Write("root/sys/bus/pci/devices/0000:05:00.0/device", "0x22a3\n"),
    Write("root/sys/bus/pci/devices/0000:05:00.0/class", "0x068000\n"),
    Link(
        "root/sys/bus/pci/devices/0000:05:00.0/driver",
        "../../../../bus/pci/drivers/vfio-pci",
    ),
    Link(
        "root/sys/bus/pci/devices/0000:05:00.0/iommu_group",
        "../../../../kernel/iommu_groups/100",
    ),
    Link(
        "root/sys/kernel/iommu_groups/100/devices/0000:05:00.0",
        "../../../../devices/pci0000:00/0000:05:00.0",
    ),
    Write("root/sys/bus/pci/devices/0000:06:00.0/vendor", "0x10de\n"),
    Write("root/sys/bus/pci/devices/0000:06:00.0/device", "0x22a3\n"),
    Write("root/sys/bus/pci/devices/0000:06:00.0/class", "0x068000\n"),
    Link(
        "root/sys/bus/pci/devices/0000:06:00.0/driver",
        "../../../../bus/pci/drivers/vfio-pci",
    ),
    Link(
        "root/sys/bus/pci/devices/0000:06:00.0/iommu_group",
        "../../../../kernel/iommu_groups/101",
    ),
    Link(
        "root/sys/kernel/iommu_groups/101/devices/0000:06:00.0",
        "../../../../devices/pci0000:00/0000:06:00.0",
    ),
    Write("root/sys/bus/pci/devices/0000:07:00.0/vendor", "0x10de\n"),
    Write("root/sys/bus/pci/devices/0000:07:00.0/device", "0x22a3\n"),
    Write("root/sys/bus/pci/devices/0000:07:00.0/class", "0x068000\n"),
    Link(
        "root/sys/bus/pci/devices/0000:07:00.0/driver",
        "../../../../bus/pci/drivers/vfio-pci",
    ),
    Link(
        "root/sys/bus/pci/devices/0000:07:00.0/iommu_group",
        "../../../../kernel/iommu_groups/102",
    ),
    Link(
        "root/sys/kernel/iommu_groups/102/devices/0000:07:00.0",
        "../../../../devices/pci0000:00/0000:07:00.0",
    ),
    Write("root/sys/bus/pci/devices/0000:08:00.0/vendor", "0x10de\n"),
    Write("root/sys/bus/pci/devices/0000:08:00.0/device", "0x22a3\n"),
    Write("root/sys/bus/pci/devices/0000:08:00.0/class", "0x068000\n"),
    Link(
        "root/sys/bus/pci/devices/0000:08:00.0/driver",
        "../../../../bus/pci/drivers/vfio-pci",
    ),
    Link(
        "root/sys/bus/pci/devices/0000:08:00.0/iommu_group",
        "../../../../kernel/iommu_groups/103",
    ),
    Link(
        "root/sys/kernel/iommu_groups/103/devices/0000:08:00.0",
        "../../../../devices/pci0000:00/0000:08:00.0",
    ),
    Replace(
        "cmd/gpu-cc-mode",
        "Generic-gb202 0x2bb5",
        "H100-SXM5 0x2330",
    ),
    Replace("cmd/gpu-cc-mode", "CC mode is on", "CC mode is off"),
    Replace(
        "cmd/gpu-ppcie-mode",
        "Generic-gb202 0x2bb5",
        "H100-SXM5 0x2330",
    ),
    Replace(
        "cmd/gpu-ppcie-mode",
        "PPCIe mode is off",
        "PPCIe mode is on",
    ),
];

#[test]
fn hopper_hgx_in_ppcie_mode() {
    check(
        "snp-xe7745",
        HGX,
        &[("gpu.cc-mode", Skip), ("gpu.ppcie-mode", Pass)],
    );
}

#[test]
fn hopper_hgx_with_ppcie_off() {
    let mut edits = HGX.to_vec();
    edits.push(Replace(
        "cmd/gpu-ppcie-mode",
        "GPU 0000:e1:00.0 H100-SXM5 0x2330 BAR0 0x54000000000 PPCIe mode is on",
        "GPU 0000:e1:00.0 H100-SXM5 0x2330 BAR0 0x54000000000 PPCIe mode is off",
    ));
    check(
        "snp-xe7745",
        &edits,
        &[("gpu.cc-mode", Skip), ("gpu.ppcie-mode", Fail)],
    );
}

#[test]
fn hopper_hgx_with_an_nvswitch_left_unbound() {
    let mut edits = HGX.to_vec();
    edits.push(Absent("root/sys/bus/pci/devices/0000:08:00.0/driver"));
    check(
        "snp-xe7745",
        &edits,
        &[
            ("gpu.vfio-bound", Fail),
            ("gpu.cc-mode", Skip),
            ("gpu.ppcie-mode", Pass),
        ],
    );
}

#[test]
fn every_check_has_a_variant_that_breaks_it() {
    // Each id must appear in some expectation above with a failing or warning status.
    let source = include_str!("checks.rs");
    let missing: Vec<&str> = registry()
        .iter()
        .map(|check| check.id)
        .filter(|id| {
            !source.contains(&format!("(\"{id}\", Fail)"))
                && !source.contains(&format!("(\"{id}\", Warn)"))
        })
        // A zero C-bit position is only seen through broken hypervisors: unit-tested in checks.
        .filter(|id| *id != "snp.cbit-position")
        .collect();
    assert!(missing.is_empty(), "no broken variant for {missing:?}");
}

#[test]
fn unknown_bios_attribute_names_point_at_the_registry() {
    let dir = variant(
        "tdx-host",
        &[
            Replace(
                BIOS,
                r#""EnableTdx": "Enabled""#,
                r#""TrustDomainExtension": "Enabled""#,
            ),
            Write(
                "redfish/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry.json",
                r#"{"RegistryEntries": {"Attributes": [
                    {"AttributeName": "MemoryEncryption"}, {"AttributeName": "TdxKeySplit"},
                    {"AttributeName": "TrustDomainExtension"}]}}"#,
            ),
        ],
    );
    let broken = statuses(dir.path());
    let (status, detail) = &broken["bios.tdx"];
    assert_eq!(*status, Fail);
    assert_eq!(
        detail,
        "the BIOS has none of the attributes EnableTdx, IntelTdx; the BiosRegistry lists TdxKeySplit"
    );
}
