//! The checks themselves: the registry table and one small function per check.

use std::collections::BTreeMap;

use cvm_core::model::Tee;

use super::{
    Applies::{self, Any, Snp, Tdx},
    CheckDef, Outcome,
    Outcome::{Bad, Pass, Skip},
    Severity::{self, Fail, Warn},
};
use crate::facts::{
    parse::{self, BiosValue, CpuInfo, Dmesg, Memlock, Version},
    Bundle, CpuidLeaf, Fact,
};

/// Unwraps a present fact, or returns from the check: `Absent` gives the outcome named after
/// `absent =>`, and a fact the bundle does not hold gives a skip with its reason.
macro_rules! need {
    ($fact:expr, absent => $absent:expr) => {
        match $fact {
            Fact::Present(value) => value,
            Fact::Absent => return $absent,
            Fact::NotCollected(reason) => return Skip(reason),
        }
    };
}

/// The facts every check reads, each parsed once per evaluation.
#[derive(Debug)]
pub struct Context<'a> {
    bundle: &'a Bundle,
    tee: Option<Tee>,
    /// The TEE the CPU vendor names (AMD: SNP, Intel: TDX), whatever `tee` was forced to.
    vendor_tee: Option<Tee>,
    cpuinfo: Fact<CpuInfo>,
    dmesg: Fact<Dmesg>,
    cmdline: Fact<Vec<(String, Option<String>)>>,
    pci: Fact<Vec<PciDevice>>,
    bios: Fact<BTreeMap<String, BiosValue>>,
}

/// One PCI device read from the bundle's sysfs copy.
#[derive(Debug, Clone)]
struct PciDevice {
    bdf: String,
    vendor: u16,
    device: u16,
    class: u32,
    driver: Fact<String>,
    iommu_group: Fact<String>,
}

const NVIDIA: u16 = 0x10de;
const NVSWITCH: u16 = 0x22a3;
/// GPUs in NVIDIA's confidential-computing support (gpu-admin-tools' device tables).
const HOPPER: &[u16] = &[
    0x2313, 0x2321, 0x2330, 0x2331, 0x2335, 0x2336, 0x2337, 0x2338, 0x2339, 0x233b, 0x233d, 0x2342,
];
const BLACKWELL: &[u16] = &[0x2901, 0x2bb5];

impl PciDevice {
    fn is_nvidia_gpu(&self) -> bool {
        self.vendor == NVIDIA && self.class >> 16 == 0x03
    }
    fn slot(&self) -> &str {
        self.bdf
            .rsplit_once('.')
            .map_or(&self.bdf, |(slot, _)| slot)
    }
}

fn gpu_name(device: u16) -> &'static str {
    match device {
        0x2335 | 0x233b => "H200",
        0x2901 => "B200",
        0x2bb5 => "RTX PRO 6000 Blackwell Server Edition",
        id if HOPPER.contains(&id) => "H100",
        _ => "unsupported model",
    }
}

impl<'a> Context<'a> {
    /// Parses what the checks share; `tee` overrides the vendor-based choice.
    pub fn new(bundle: &'a Bundle, tee: Option<Tee>) -> Self {
        let cpuinfo = bundle
            .root_file("/proc/cpuinfo")
            .map(|text| parse::cpuinfo(&text));
        let vendor = match bundle.cpuid(0) {
            Fact::Present(leaf) => vendor_string(leaf),
            _ => cpuinfo
                .as_ref()
                .present()
                .map(|info| info.vendor_id.clone())
                .unwrap_or_default(),
        };
        let vendor_tee = match vendor.as_str() {
            "AuthenticAMD" => Some(Tee::Snp),
            "GenuineIntel" => Some(Tee::Tdx),
            _ => None,
        };
        Context {
            bundle,
            tee: tee.or(vendor_tee),
            vendor_tee,
            cpuinfo,
            dmesg: bundle.cmd("dmesg").map(|text| parse::dmesg(&text)),
            cmdline: bundle
                .root_file("/proc/cmdline")
                .map(|text| parse::cmdline(&text)),
            pci: pci_devices(bundle),
            bios: bundle
                .redfish("/redfish/v1/Systems/System.Embedded.1/Bios")
                .and_then(|document| match parse::bios_attributes(&document) {
                    Some(attributes) => Fact::Present(attributes),
                    None => Fact::NotCollected(
                        "the Redfish Bios document has no Attributes object".to_owned(),
                    ),
                }),
        }
    }

    /// The TEE the checks evaluate for.
    pub fn tee(&self) -> Option<Tee> {
        self.tee
    }

    fn gpus(&self) -> Fact<Vec<&PciDevice>> {
        self.pci.as_ref().map(|devices| {
            devices
                .iter()
                .filter(|device| device.is_nvidia_gpu())
                .collect()
        })
    }

    fn hopper_hgx(&self) -> bool {
        self.pci.as_ref().present().is_some_and(|devices| {
            devices
                .iter()
                .any(|device| device.vendor == NVIDIA && device.device == NVSWITCH)
                && devices
                    .iter()
                    .any(|device| device.is_nvidia_gpu() && HOPPER.contains(&device.device))
        })
    }
}

fn vendor_string(leaf: CpuidLeaf) -> String {
    [leaf.ebx, leaf.edx, leaf.ecx]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .map(char::from)
        .collect()
}

fn hex_file(bundle: &Bundle, path: &str) -> Fact<u32> {
    bundle.root_file(path).and_then(|text| {
        match parse::hex_u64(&text).and_then(|value| u32::try_from(value).ok()) {
            Some(value) => Fact::Present(value),
            None => Fact::NotCollected(format!("root{path} is malformed: {:?}", text.trim())),
        }
    })
}

fn pci_devices(bundle: &Bundle) -> Fact<Vec<PciDevice>> {
    const DEVICES: &str = "/sys/bus/pci/devices";
    bundle.root_dir(DEVICES).and_then(|names| {
        let mut devices = Vec::new();
        'devices: for bdf in names {
            let base = format!("{DEVICES}/{bdf}");
            let mut ids = [0u32; 3];
            for (slot, name) in ids.iter_mut().zip(["vendor", "device", "class"]) {
                match hex_file(bundle, &format!("{base}/{name}")) {
                    Fact::Present(value) => *slot = value,
                    // The device went away while the collector listed it.
                    Fact::Absent => continue 'devices,
                    // A device the bundle cannot describe could be a GPU: do not guess.
                    Fact::NotCollected(reason) => return Fact::NotCollected(reason),
                }
            }
            let [vendor, device, class] = ids;
            devices.push(PciDevice {
                driver: bundle.root_link_name(&format!("{base}/driver")),
                iommu_group: bundle.root_link_name(&format!("{base}/iommu_group")),
                bdf,
                vendor: vendor as u16,
                device: device as u16,
                class,
            });
        }
        Fact::Present(devices)
    })
}

const fn check(
    id: &'static str,
    title: &'static str,
    applies: Applies,
    severity: Severity,
    parent: Option<&'static str>,
    remediation: &'static str,
    eval: fn(&Context) -> Outcome,
) -> CheckDef {
    CheckDef {
        id,
        title,
        applies,
        severity,
        remediation,
        parent,
        eval,
    }
}

/// The registry, parents before children.
pub(super) static REGISTRY: &[CheckDef] = &[
    check("cpu.vendor", "CPU vendor has a supported TEE", Any, Fail, None,
        "Use an AMD EPYC (Milan, Genoa, Turin) host for SEV-SNP or an Intel Xeon (Emerald Rapids, Granite Rapids) host for TDX; a TEE forced by --tee or the model must match the CPU vendor.",
        cpu_vendor),
    check("host.bare-metal", "Host is bare metal", Any, Fail, None,
        "Run on the physical host: SEV-SNP and TDX host support (/dev/sev, the TDX module) is not available inside a VM.",
        host_bare_metal),
    check("host.os-release", "Host release is in the support matrix for the TEE", Any, Fail, None,
        "Install Ubuntu 25.10 or 26.04 on the host (SEV-SNP also works on 25.04, now end of life; stock 24.04 has no SNP or TDX host support).",
        host_os_release),
    check("host.kernel-version", "Host kernel is new enough", Any, Fail, None,
        "Boot a host kernel >= 6.11 (TDX also needs kvm_intel with TDX, upstream from 6.16); 6.17 or newer is recommended (NVIDIA's CC stack lists 6.17+).",
        host_kernel_version),
    check("host.uefi-boot", "Host booted in UEFI mode", Any, Fail, None,
        "Set the boot mode to UEFI in the BIOS and reinstall the boot loader in UEFI mode.",
        host_uefi_boot),
    check("iommu.enabled", "IOMMU is on and has groups", Any, Fail, None,
        "Enable the IOMMU in the BIOS (AMD: IommuSupport; Intel: VT-d) and, on Intel, add intel_iommu=on to the kernel command line.",
        iommu_enabled),
    check("snp.cpu-support", "CPU supports SME, SEV, SEV-ES, SEV-SNP and VMPLs", Snp, Fail, Some("cpu.vendor"),
        "Use an AMD EPYC 7003 (Milan), 9004 (Genoa) or 9005 (Turin) processor on bare metal; CPUID 0x8000001F must report SNP.",
        snp_cpu_support),
    check("snp.cbit-position", "C-bit position and VMPL count", Snp, Fail, Some("snp.cpu-support"),
        "CPUID 0x8000001F EBX reports no C-bit: the CPU or hypervisor hides memory encryption; run on bare metal.",
        snp_cbit_position),
    check("snp.bios-enabled", "SME is enabled by the BIOS (SYSCFG SMEE)", Snp, Fail, Some("snp.cpu-support"),
        "In the BIOS set SMEE (Dell: Sme) to Enabled and SEV-SNP (Dell: Snp) to Enabled, then reboot.",
        snp_bios_enabled),
    check("snp.rmp-coverage", "BIOS reserved the RMP table (SNP memory coverage)", Snp, Fail, Some("snp.bios-enabled"),
        "In the BIOS set SNP Memory Coverage (Dell: Rmp) to Enabled, then reboot.",
        snp_rmp_coverage),
    check("snp.asids", "ASIDs are reserved for SEV-ES/SNP guests", Snp, Fail, Some("snp.bios-enabled"),
        "In the BIOS set the SEV-ES ASID space limit (Dell: CpuMinSevAsid) above 1, e.g. 100 for 99 SNP guests, then reboot.",
        snp_asids),
    check("snp.kernel-initialized", "Kernel initialised SNP (SYSCFG SNPEn and VMPLEn)", Snp, Fail, Some("snp.rmp-coverage"),
        "Boot a kernel with SNP host support (>= 6.11, CONFIG_KVM_AMD_SEV=y) with the ccp module loaded; read dmesg for `SEV-SNP` errors.",
        snp_kernel_initialized),
    check("snp.kvm-enabled", "kvm_amd has sev, sev_es and sev_snp on", Snp, Fail, Some("cpu.vendor"),
        "Load kvm_amd with SEV-SNP on: `options kvm_amd sev=1 sev_es=1 sev_snp=1` in /etc/modprobe.d/kvm.conf (kernel >= 6.11), then reload kvm_amd or reboot.",
        snp_kvm_enabled),
    check("snp.dev-sev", "/dev/sev exists (the PSP driver is up)", Snp, Fail, Some("cpu.vendor"),
        "Load the ccp module (`modprobe ccp`) on bare metal with SEV enabled in the BIOS and the IOMMU on.",
        snp_dev_sev),
    check("snp.firmware-version", "SEV-SNP firmware API >= 1.55", Snp, Fail, Some("snp.kernel-initialized"),
        "Update the BIOS (on Genoa and Turin the SEV firmware ships only with the BIOS) to one with SEV-SNP API 1.55 or newer.",
        snp_firmware_version),
    check("snp.iommu-mode", "IOMMU is not in passthrough or v2 page-table mode", Snp, Fail, Some("cpu.vendor"),
        "Remove iommu=pt, iommu=off, amd_iommu=off and amd_iommu=pgtbl_v2 from the kernel command line (/etc/default/grub), run update-grub and reboot: the kernel refuses SNP in those modes.",
        snp_iommu_mode),
    check("snp.cpus-online", "No CPU is offline (SNP ASID reuse needs every CPU)", Snp, Fail, Some("cpu.vendor"),
        "Bring every CPU online and remove nosmt/maxcpus= from the kernel command line; disable SMT only in the BIOS if needed.",
        snp_cpus_online),
    check("snp.memlock", "memlock limit is unlimited", Snp, Warn, Some("cpu.vendor"),
        "SNP guests pin all their memory: set LimitMEMLOCK=infinity for the VMM service or `* - memlock unlimited` in /etc/security/limits.d.",
        memlock),
    check("tdx.cpu-support", "CPU and BIOS enable TDX (tdx_host_platform)", Tdx, Fail, Some("cpu.vendor"),
        "Use a TDX-capable Xeon (4th gen or newer) and enable TME-MT, TDX and the SEAM loader in the BIOS, with a non-zero TME-MT/TDX key split.",
        tdx_cpu_support),
    check("tdx.bios-enabled", "BIOS enabled TME-MT, SEAMRR and TDX private keys (MSRs)", Tdx, Fail, Some("cpu.vendor"),
        "In the BIOS enable TME, TME-MT (multiple keys), TDX and the SEAM loader with a non-zero TME-MT/TDX key split; if SGX_AND_MCHECK_STATUS is non-zero, run SGX Factory Reset.",
        tdx_bios_enabled),
    check("tdx.module-initialized", "TDX module initialised", Tdx, Fail, Some("tdx.cpu-support"),
        "Update the BIOS/TDX module when dmesg shows `module initialization failed`, and boot with kvm_intel.tdx=1.",
        tdx_module_initialized),
    check("tdx.kvm-enabled", "kvm_intel has tdx on", Tdx, Fail, Some("cpu.vendor"),
        "Boot with kvm_intel.tdx=1 on the kernel command line (Ubuntu 25.10+ generic kernels have it off by default).",
        tdx_kvm_enabled),
    check("tdx.cmdline", "Kernel command line has nohibernate and kvm_intel.tdx=1", Tdx, Fail, Some("cpu.vendor"),
        "Add `nohibernate kvm_intel.tdx=1` to GRUB_CMDLINE_LINUX_DEFAULT, run update-grub and reboot.",
        tdx_cmdline),
    check("tdx.memlock", "memlock limit is unlimited", Tdx, Fail, Some("cpu.vendor"),
        "Ubuntu 25.10 limits memlock to 8 MiB: add `* soft memlock unlimited` and `* hard memlock unlimited` to /etc/security/limits.d/99-tdx-memlock.conf.",
        memlock),
    check("gpu.present", "Supported NVIDIA GPUs are present", Any, Fail, None,
        "Install GPUs from NVIDIA's CC support list (H100, H200, B200, RTX PRO 6000 Blackwell Server Edition) and check that lspci shows them.",
        gpu_present),
    check("gpu.host-driver-absent", "No nvidia or nouveau driver on the host", Any, Fail, None,
        "Blacklist nouveau and nvidia (`modprobe.blacklist=nouveau`, softdep nvidia pre: vfio-pci), update-initramfs -u and reboot.",
        gpu_host_driver_absent),
    check("gpu.vfio-bound", "Every GPU is bound to vfio-pci", Any, Fail, Some("gpu.present"),
        "Bind the GPUs to vfio-pci: `options vfio-pci ids=10de:<id>` in /etc/modprobe.d/vfio.conf, update-initramfs -u, reboot.",
        gpu_vfio_bound),
    check("gpu.iommu-isolated", "Every GPU is alone in its IOMMU group", Any, Fail, Some("gpu.present"),
        "Enable ACS in the BIOS (on some AMD BIOSes under AER) so each GPU gets its own IOMMU group.",
        gpu_iommu_isolated),
    check("gpu.cc-mode", "Every GPU is in CC mode `on`", Any, Fail, Some("gpu.present"),
        "Set CC mode with NVIDIA gpu-admin-tools: `nvidia_gpu_tools.py --devices gpus --set-cc-mode on --reset-after-cc-mode-switch`.",
        gpu_cc_mode),
    check("gpu.ppcie-mode", "Hopper HGX GPUs are in PPCIe mode", Any, Fail, Some("gpu.present"),
        "Set PPCIe mode on the Hopper HGX: `nvidia_gpu_tools.py --devices gpus --set-ppcie-mode on --reset-after-ppcie-mode-switch` (HGX firmware >= 1.7.0).",
        gpu_ppcie_mode),
    check("qemu.version", "QEMU >= 9.2.1", Any, Fail, None,
        "Install QEMU 9.2.1 or newer (Ubuntu 25.04+: apt install qemu-system-x86).",
        qemu_version),
    check("qemu.tee-support", "QEMU has the TEE's guest object", Any, Fail, Some("qemu.version"),
        "Install a QEMU with the TEE's object: sev-snp-guest (upstream 9.1+) or tdx-guest (upstream 10.1+, or Canonical's TDX build).",
        qemu_tee_support),
    check("bios.sme", "BIOS: Sme is Enabled", Snp, Fail, None,
        "Set BIOS.ProcSettings.Sme to Enabled over Redfish or racadm, run the BIOS job and reboot (Snp and CpuMinSevAsid unlock after this is applied).",
        bios_sme),
    check("bios.snp", "BIOS: Snp is Enabled", Snp, Fail, Some("bios.sme"),
        "Set BIOS.ProcSettings.Snp to Enabled, run the BIOS job and reboot (Rmp unlocks after this is applied).",
        bios_snp),
    check("bios.min-sev-asid", "BIOS: CpuMinSevAsid leaves ASIDs for SNP guests", Snp, Fail, Some("bios.sme"),
        "Set BIOS.ProcSettings.CpuMinSevAsid above 1 (e.g. 100 for 99 SNP guests), run the BIOS job and reboot.",
        bios_min_sev_asid),
    check("bios.rmp", "BIOS: Rmp (SNP memory coverage) is Enabled", Snp, Fail, Some("bios.snp"),
        "Set BIOS.ProcSettings.Rmp to Enabled, run the BIOS job and reboot.",
        bios_rmp),
    check("bios.iommu", "BIOS: IOMMU / VT-d is Enabled", Any, Fail, None,
        "Set IommuSupport (AMD) or VtForDirectIo (Intel) to Enabled, run the BIOS job and reboot.",
        bios_iommu),
    check("bios.memory-encryption", "BIOS: TME-MT (multiple keys) is on", Tdx, Fail, None,
        "Set the memory encryption attribute (MemoryEncryption or MemEncryption, per the BIOS registry) to MultipleKeys, run the BIOS job and reboot.",
        bios_memory_encryption),
    check("bios.tdx", "BIOS: TDX is Enabled", Tdx, Fail, Some("bios.memory-encryption"),
        "Set the TDX attribute (EnableTdx or IntelTdx, per the BIOS registry) and the SEAM loader to Enabled, run the BIOS job and reboot.",
        bios_tdx),
];

fn cpu_vendor(context: &Context) -> Outcome {
    let info = need!(context.cpuinfo.as_ref(), absent => Skip("no /proc/cpuinfo".into()));
    match (context.tee, context.vendor_tee) {
        (Some(tee), Some(vendor_tee)) if tee == vendor_tee => Pass(format!(
            "{} ({}), TEE {}",
            info.model_name,
            info.vendor_id,
            tee.as_str()
        )),
        (Some(tee), _) => Bad(format!(
            "TEE {} was requested but {} ({}) is not {}",
            tee.as_str(),
            info.model_name,
            info.vendor_id,
            match tee {
                Tee::Snp => "an AMD CPU (AuthenticAMD)",
                Tee::Tdx => "an Intel CPU (GenuineIntel)",
            }
        )),
        (None, _) => Bad(format!(
            "{} ({}) has neither SEV-SNP nor TDX",
            info.model_name, info.vendor_id
        )),
    }
}

fn host_bare_metal(context: &Context) -> Outcome {
    let info = need!(context.cpuinfo.as_ref(), absent => Skip("no /proc/cpuinfo".into()));
    if info.flags.contains("hypervisor") {
        Bad("/proc/cpuinfo has the `hypervisor` flag: this host is a virtual machine".into())
    } else {
        Pass("no `hypervisor` CPU flag".into())
    }
}

fn host_os_release(context: &Context) -> Outcome {
    let text = need!(context.bundle.root_file("/etc/os-release"), absent => Bad("no /etc/os-release".into()));
    let release = parse::os_release(&text);
    let name = format!("{} {}", release.id, release.version_id);
    if release.id != "ubuntu" {
        return Bad(format!(
            "{name}: the support matrix covers Ubuntu hosts only"
        ));
    }
    match (context.tee, release.version_id.as_str()) {
        (_, "25.10" | "26.04") => {
            Pass(format!("{name} is supported for {}", tee_name(context.tee)))
        }
        (Some(Tee::Snp), "25.04") => {
            Outcome::Warn(format!("{name} supports SEV-SNP but is end of life"))
        }
        (Some(Tee::Tdx), "25.04") => Outcome::Warn(format!(
            "{name} needs Canonical's TDX PPA and is end of life"
        )),
        _ => Bad(format!(
            "{name} has no stock {} host support",
            tee_name(context.tee)
        )),
    }
}

fn tee_name(tee: Option<Tee>) -> &'static str {
    match tee {
        Some(Tee::Snp) => "SEV-SNP",
        Some(Tee::Tdx) => "TDX",
        None => "TEE",
    }
}

fn host_kernel_version(context: &Context) -> Outcome {
    let text = need!(context.bundle.cmd("uname-r"), absent => Skip("no uname output".into()));
    let Some(version) = parse::kernel_release(&text) else {
        return Skip(format!(
            "cannot read a version from `uname -r`: {:?}",
            text.trim()
        ));
    };
    // SEV-SNP host support landed in 6.11; TDX host support is upstream from 6.16 but Canonical's
    // 25.04 PPA carries it on 6.14, so tdx.kvm-enabled (not the version) decides for TDX.
    let minimum = Version::new(6, 11, 0);
    let release = text.trim();
    if version < minimum {
        Bad(format!("kernel {release} is older than {minimum}"))
    } else if version < Version::new(6, 17, 0) {
        Outcome::Warn(format!(
            "kernel {release} works; 6.17 or newer is recommended"
        ))
    } else {
        Pass(format!("kernel {release}"))
    }
}

fn host_uefi_boot(context: &Context) -> Outcome {
    need!(context.bundle.root_exists("/sys/firmware/efi"), absent => Bad("no /sys/firmware/efi: the host booted in legacy BIOS mode".into()));
    Pass("/sys/firmware/efi exists".into())
}

fn iommu_enabled(context: &Context) -> Outcome {
    let groups = need!(context.bundle.root_dir("/sys/kernel/iommu_groups"), absent => Bad("no /sys/kernel/iommu_groups: the IOMMU is off".into()));
    if groups.is_empty() {
        Bad("/sys/kernel/iommu_groups is empty: the IOMMU is off".into())
    } else {
        Pass(format!("{} IOMMU groups", groups.len()))
    }
}

fn leaf_8000001f(context: &Context) -> Fact<CpuidLeaf> {
    context.bundle.cpuid(0x8000_001f)
}

fn snp_cpu_support(context: &Context) -> Outcome {
    let leaf = need!(leaf_8000001f(context), absent => Bad("the CPU does not implement CPUID leaf 0x8000001F (no memory encryption)".into()));
    let features = [
        (0, "SME"),
        (1, "SEV"),
        (3, "SEV-ES"),
        (4, "SEV-SNP"),
        (5, "VMPL"),
    ];
    let missing: Vec<&str> = features
        .iter()
        .filter(|(bit, _)| leaf.eax & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Pass(format!(
            "CPUID 0x8000001F EAX {:#x}: SME SEV SEV-ES SEV-SNP VMPL",
            leaf.eax
        ))
    } else {
        Bad(format!(
            "CPUID 0x8000001F EAX {:#x} lacks {}",
            leaf.eax,
            missing.join(", ")
        ))
    }
}

fn snp_cbit_position(context: &Context) -> Outcome {
    let leaf = need!(leaf_8000001f(context), absent => Bad("no CPUID leaf 0x8000001F".into()));
    let cbit = leaf.ebx & 0x3f;
    let reduction = (leaf.ebx >> 6) & 0x3f;
    let vmpls = (leaf.ebx >> 12) & 0xf;
    if cbit == 0 {
        Bad(format!(
            "CPUID 0x8000001F EBX {:#x}: C-bit position 0",
            leaf.ebx
        ))
    } else {
        Pass(format!(
            "C-bit {cbit}, physical address reduction {reduction}, {vmpls} VMPLs, {} encrypted guests",
            leaf.ecx
        ))
    }
}

const SYSCFG: u32 = 0xc001_0010;
const SYSCFG_SMEE: u64 = 1 << 23;
const SYSCFG_SNPEN: u64 = 1 << 24;
const SYSCFG_VMPLEN: u64 = 1 << 25;

fn snp_bios_enabled(context: &Context) -> Outcome {
    match context.bundle.msr(SYSCFG) {
        Fact::Present(value) if value & SYSCFG_SMEE != 0 => {
            Pass(format!("SYSCFG {value:#x}: SMEE set"))
        }
        Fact::Present(value) => Bad(format!("SYSCFG {value:#x}: SMEE (bit 23) clear")),
        Fact::Absent => Bad("no SYSCFG MSR".into()),
        Fact::NotCollected(reason) => {
            // Without the MSR, the kernel's view tells the same: it clears the `sme`/`sev` flags
            // when the BIOS left SMEE off.
            let info = need!(context.cpuinfo.as_ref(), absent => Skip(reason));
            if info.flags.contains("sev") {
                Pass(format!(
                    "SYSCFG not readable ({reason}); /proc/cpuinfo has `sev`"
                ))
            } else {
                Bad(format!("SYSCFG not readable ({reason}); /proc/cpuinfo lacks `sev`, which the kernel clears when the BIOS leaves SMEE off"))
            }
        }
    }
}

/// RMP_CFG: bit 0 says the BIOS set up a segmented RMP (Zen 5 firmware), where RMP_END is unused.
const RMP_CFG: u32 = 0xc001_0136;

fn snp_rmp_coverage(context: &Context) -> Outcome {
    if let Fact::Present(dmesg) = &context.dmesg {
        if dmesg.rmp_not_reserved {
            return Bad("dmesg: `Memory for the RMP table has not been reserved by BIOS`".into());
        }
    }
    let segmented = matches!(context.bundle.msr(RMP_CFG), Fact::Present(cfg) if cfg & 1 == 1);
    match (
        context.bundle.msr(0xc001_0132),
        context.bundle.msr(0xc001_0133),
    ) {
        (Fact::Present(base), _) if segmented => {
            if base != 0 {
                Pass(format!("segmented RMP, bookkeeping at {base:#x}"))
            } else {
                Bad("segmented RMP with RMP_BASE 0: the BIOS reserved no RMP".into())
            }
        }
        (Fact::Present(base), Fact::Present(end)) => {
            if base != 0 && end > base {
                Pass(format!("RMP {base:#x} - {end:#x}"))
            } else {
                Bad(format!(
                    "RMP base {base:#x}, end {end:#x}: the BIOS reserved no RMP"
                ))
            }
        }
        (base, _) => {
            let reason = match base {
                Fact::NotCollected(reason) => reason,
                _ => "RMP MSRs not readable".to_owned(),
            };
            match &context.dmesg {
                Fact::Present(dmesg) => match &dmesg.rmp_table {
                    Some(range) => Pass(format!("dmesg: RMP table {range}")),
                    None if dmesg.rmp_segmented => Pass("dmesg: segmented RMP".into()),
                    None => Skip(format!("{reason}; dmesg has no RMP table line")),
                },
                _ => Skip(reason),
            }
        }
    }
}

fn snp_asids(context: &Context) -> Outcome {
    if let Fact::Present(dmesg) = &context.dmesg {
        if let Some(line) = dmesg
            .sev_disabled
            .iter()
            .find(|line| line.contains("SEV-ES disabled") || line.contains("(ASIDs 0 - 0)"))
        {
            return Bad(format!("dmesg: {line}"));
        }
    }
    let leaf = need!(leaf_8000001f(context), absent => Bad("no CPUID leaf 0x8000001F".into()));
    let min_sev_asid = leaf.edx;
    if min_sev_asid <= 1 {
        return Bad(format!(
            "CPUID 0x8000001F EDX {min_sev_asid}: no ASIDs below the first SEV-only ASID, so none for SEV-ES/SNP guests"
        ));
    }
    let from_dmesg = match &context.dmesg {
        Fact::Present(Dmesg {
            snp_asids: Some(range),
            ..
        }) => format!(
            "; kvm_amd: SEV-SNP enabled (ASIDs {} - {})",
            range.first, range.last
        ),
        _ => String::new(),
    };
    Pass(format!(
        "{} SEV-ES/SNP ASIDs (minimum SEV ASID {min_sev_asid}){from_dmesg}",
        min_sev_asid - 1
    ))
}

fn snp_kernel_initialized(context: &Context) -> Outcome {
    if let Fact::Present(dmesg) = &context.dmesg {
        if let Some(line) = dmesg.sev_failures.first() {
            return Bad(format!("dmesg: {line}"));
        }
    }
    match context.bundle.msr(SYSCFG) {
        Fact::Present(value) => {
            let missing: Vec<&str> = [(SYSCFG_SNPEN, "SNPEn"), (SYSCFG_VMPLEN, "VMPLEn")]
                .iter()
                .filter(|(bit, _)| value & bit == 0)
                .map(|(_, name)| *name)
                .collect();
            if missing.is_empty() {
                Pass(format!("SYSCFG {value:#x}: SNPEn and VMPLEn set"))
            } else {
                Bad(format!(
                    "SYSCFG {value:#x}: {} clear (the kernel sets them once it has initialised SNP)",
                    missing.join(" and ")
                ))
            }
        }
        Fact::Absent => Bad("no SYSCFG MSR".into()),
        Fact::NotCollected(reason) => match &context.dmesg {
            Fact::Present(Dmesg {
                snp_api: Some(api), ..
            }) => Pass(format!(
                "SYSCFG not readable ({reason}); dmesg: SEV-SNP API:{}.{}",
                api.major, api.minor
            )),
            _ => Skip(reason),
        },
    }
}

fn kvm_params(context: &Context, module: &str, names: &[&str]) -> Outcome {
    let mut found = Vec::new();
    for name in names {
        let path = format!("/sys/module/{module}/parameters/{name}");
        let text = need!(context.bundle.root_file(&path), absent => Bad(format!(
            "no {path}: {module} is not loaded or the kernel lacks the feature (SEV-SNP host support needs >= 6.11, TDX >= 6.16)"
        )));
        match parse::param_enabled(&text) {
            Some(true) => found.push(format!("{name}={}", text.trim())),
            Some(false) => return Bad(format!("{module} {name}={}", text.trim())),
            None => return Skip(format!("{path} holds {:?}", text.trim())),
        }
    }
    Pass(format!("{module}: {}", found.join(" ")))
}

fn snp_kvm_enabled(context: &Context) -> Outcome {
    kvm_params(context, "kvm_amd", &["sev", "sev_es", "sev_snp"])
}

fn snp_dev_sev(context: &Context) -> Outcome {
    need!(context.bundle.root_exists("/dev/sev"), absent => Bad("no /dev/sev".into()));
    Pass("/dev/sev exists".into())
}

fn snp_firmware_version(context: &Context) -> Outcome {
    let dmesg = need!(context.dmesg.as_ref(), absent => Skip("no dmesg".into()));
    match dmesg.snp_api {
        Some(api) if (api.major, api.minor) >= (1, 55) => Pass(format!(
            "SEV-SNP API {}.{} build {}",
            api.major, api.minor, api.build
        )),
        Some(api) => Bad(format!(
            "SEV-SNP API {}.{} build {} is older than 1.55",
            api.major, api.minor, api.build
        )),
        None => Skip("dmesg has no `SEV-SNP API:` line (the ring buffer may have rotated)".into()),
    }
}

fn snp_iommu_mode(context: &Context) -> Outcome {
    let cmdline = need!(context.cmdline.as_ref(), absent => Skip("no /proc/cmdline".into()));
    let bad: Vec<String> = cmdline
        .iter()
        .filter(|(key, value)| {
            let value = value.as_deref().unwrap_or("");
            (key == "iommu" && (value == "pt" || value == "off"))
                || (key == "amd_iommu"
                    && value
                        .split(',')
                        .any(|option| option == "off" || option == "pgtbl_v2"))
        })
        .map(|(key, value)| format!("{key}={}", value.as_deref().unwrap_or("")))
        .collect();
    if !bad.is_empty() {
        return Bad(format!("kernel command line has {}", bad.join(" ")));
    }
    if let Fact::Present(dmesg) = &context.dmesg {
        if let Some(line) = dmesg.snp_iommu_refusals.first() {
            return Bad(format!("dmesg: {line}"));
        }
    }
    Pass("no passthrough or v2 page-table IOMMU options".into())
}

fn snp_cpus_online(context: &Context) -> Outcome {
    if let Fact::Present(cmdline) = &context.cmdline {
        if let Some((key, _)) = cmdline
            .iter()
            .find(|(key, _)| key == "nosmt" || key == "maxcpus")
        {
            return Bad(format!("kernel command line has {key}"));
        }
    }
    let offline = need!(context.bundle.root_file("/sys/devices/system/cpu/offline"), absent => Skip("no /sys/devices/system/cpu/offline".into()));
    match parse::cpu_list_len(&offline) {
        Some(0) => Pass("no offline CPUs".into()),
        Some(count) => Bad(format!("{count} CPUs offline ({})", offline.trim())),
        None => Skip(format!("cannot read the CPU list {:?}", offline.trim())),
    }
}

fn memlock(context: &Context) -> Outcome {
    let text = need!(context.bundle.cmd("ulimit-l"), absent => Skip("no ulimit -l output".into()));
    match parse::ulimit_l(&text) {
        Some(Memlock::Unlimited) => Pass("memlock unlimited".into()),
        Some(Memlock::Kib(kib)) => Bad(format!("memlock limit {kib} KiB")),
        None => Skip(format!("cannot read `ulimit -l` output {:?}", text.trim())),
    }
}

fn tdx_cpu_support(context: &Context) -> Outcome {
    let info = need!(context.cpuinfo.as_ref(), absent => Skip("no /proc/cpuinfo".into()));
    if info.flags.contains("tdx_host_platform") {
        Pass(format!("{}: tdx_host_platform", info.model_name))
    } else {
        let seamrr = match context.bundle.msr(0x1401) {
            Fact::Present(value) => format!("; IA32_SEAMRR_PHYS_MASK {value:#x}"),
            _ => String::new(),
        };
        Bad(format!(
            "{}: /proc/cpuinfo lacks tdx_host_platform{seamrr}",
            info.model_name
        ))
    }
}

fn tdx_bios_enabled(context: &Context) -> Outcome {
    let tme_activate =
        need!(context.bundle.msr(0x982), absent => Bad("no IA32_TME_ACTIVATE MSR".into()));
    let seamrr_mask =
        need!(context.bundle.msr(0x1401), absent => Bad("no IA32_SEAMRR_PHYS_MASK MSR".into()));
    let partitioning = need!(context.bundle.msr(0x87), absent => Bad("no IA32_MKTME_KEYID_PARTITIONING MSR".into()));
    let mcheck =
        need!(context.bundle.msr(0xa0), absent => Bad("no SGX_AND_MCHECK_STATUS MSR".into()));
    let tdx_keys = partitioning >> 32;
    let mut problems = Vec::new();
    if tme_activate & 0b10 == 0 {
        problems.push(format!(
            "IA32_TME_ACTIVATE {tme_activate:#x}: TME not enabled"
        ));
    }
    if seamrr_mask & (1 << 11) == 0 {
        problems.push(format!(
            "IA32_SEAMRR_PHYS_MASK {seamrr_mask:#x}: SEAMRR not enabled"
        ));
    }
    if tdx_keys == 0 {
        problems.push("no TDX private KeyIDs (key split 0)".to_owned());
    }
    if mcheck != 0 {
        problems.push(format!("SGX_AND_MCHECK_STATUS {mcheck:#x} is not 0"));
    }
    if problems.is_empty() {
        Pass(format!("TME on, SEAMRR on, {tdx_keys} TDX private KeyIDs"))
    } else {
        Bad(problems.join("; "))
    }
}

fn tdx_module_initialized(context: &Context) -> Outcome {
    let dmesg = need!(context.dmesg.as_ref(), absent => Skip("no dmesg".into()));
    if let Some(line) = dmesg.tdx_failures.first() {
        return Bad(format!("dmesg: {line}"));
    }
    if dmesg.tdx_initialized {
        let module = dmesg
            .tdx_module
            .as_deref()
            .map(|line| format!(" ({line})"))
            .unwrap_or_default();
        Pass(format!("virt/tdx: module initialized{module}"))
    } else {
        Bad("dmesg has no `virt/tdx: module initialized`".into())
    }
}

fn tdx_kvm_enabled(context: &Context) -> Outcome {
    kvm_params(context, "kvm_intel", &["tdx"])
}

fn tdx_cmdline(context: &Context) -> Outcome {
    let cmdline = need!(context.cmdline.as_ref(), absent => Skip("no /proc/cmdline".into()));
    let has = |key: &str, value: Option<&str>| {
        cmdline
            .iter()
            .any(|(k, v)| k == key && (value.is_none() || v.as_deref() == value))
    };
    let mut missing = Vec::new();
    if !has("nohibernate", None) {
        missing.push("nohibernate");
    }
    if !has("kvm_intel.tdx", Some("1")) && !has("kvm_intel.tdx", Some("Y")) {
        missing.push("kvm_intel.tdx=1");
    }
    if missing.is_empty() {
        Pass("nohibernate kvm_intel.tdx=1".into())
    } else {
        Bad(format!("kernel command line lacks {}", missing.join(" ")))
    }
}

fn gpu_present(context: &Context) -> Outcome {
    let gpus = need!(context.gpus(), absent => Bad("no /sys/bus/pci/devices".into()));
    if gpus.is_empty() {
        return Bad("no NVIDIA GPU on the PCI bus".into());
    }
    let unsupported: Vec<String> = gpus
        .iter()
        .filter(|gpu| !HOPPER.contains(&gpu.device) && !BLACKWELL.contains(&gpu.device))
        .map(|gpu| format!("{} 10de:{:04x}", gpu.bdf, gpu.device))
        .collect();
    if !unsupported.is_empty() {
        return Bad(format!(
            "not in NVIDIA's CC support list: {}",
            unsupported.join(", ")
        ));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for gpu in &gpus {
        *counts
            .entry(format!(
                "{} (10de:{:04x})",
                gpu_name(gpu.device),
                gpu.device
            ))
            .or_default() += 1;
    }
    let list: Vec<String> = counts
        .iter()
        .map(|(name, count)| format!("{count} x {name}"))
        .collect();
    Pass(list.join(", "))
}

fn gpu_host_driver_absent(context: &Context) -> Outcome {
    let text = need!(context.bundle.cmd("lsmod"), absent => Skip("no lsmod output".into()));
    let modules = parse::lsmod(&text);
    let loaded: Vec<&String> = modules
        .iter()
        .filter(|name| name.starts_with("nvidia") || *name == "nouveau")
        .collect();
    if !loaded.is_empty() {
        let names: Vec<&str> = loaded.iter().map(|name| name.as_str()).collect();
        return Bad(format!("loaded: {}", names.join(", ")));
    }
    if let Fact::Present(gpus) = context.gpus() {
        for gpu in gpus {
            if let Fact::Present(driver) = &gpu.driver {
                if driver.starts_with("nvidia") || driver == "nouveau" {
                    return Bad(format!("{} is bound to {driver}", gpu.bdf));
                }
            }
        }
    }
    Pass("no nvidia or nouveau module loaded".into())
}

fn gpu_vfio_bound(context: &Context) -> Outcome {
    let devices = need!(context.pci.as_ref(), absent => Bad("no PCI devices".into()));
    // GPUs, and on a Hopper HGX the NVSwitches, which PPCIe passes to the same CVM.
    let passed: Vec<&PciDevice> = devices
        .iter()
        .filter(|device| {
            device.is_nvidia_gpu() || (device.vendor == NVIDIA && device.device == NVSWITCH)
        })
        .collect();
    let mut wrong = Vec::new();
    for device in &passed {
        match &device.driver {
            Fact::Present(driver) if driver == "vfio-pci" => {}
            Fact::Present(driver) => wrong.push(format!("{} on {driver}", device.bdf)),
            Fact::Absent => wrong.push(format!("{} has no driver", device.bdf)),
            Fact::NotCollected(reason) => return Skip(reason.clone()),
        }
    }
    if wrong.is_empty() {
        Pass(format!("{} devices on vfio-pci", passed.len()))
    } else {
        Bad(wrong.join("; "))
    }
}

fn gpu_iommu_isolated(context: &Context) -> Outcome {
    let gpus = need!(context.gpus(), absent => Bad("no PCI devices".into()));
    let mut problems = Vec::new();
    for gpu in &gpus {
        let group = match &gpu.iommu_group {
            Fact::Present(group) => group,
            Fact::Absent => {
                problems.push(format!("{} is in no IOMMU group", gpu.bdf));
                continue;
            }
            Fact::NotCollected(reason) => return Skip(reason.clone()),
        };
        let members = need!(
            context.bundle.root_dir(&format!("/sys/kernel/iommu_groups/{group}/devices")),
            absent => Bad(format!("IOMMU group {group} of {} has no devices directory", gpu.bdf))
        );
        let others: Vec<&String> = members
            .iter()
            .filter(|member| !member.starts_with(&format!("{}.", gpu.slot())))
            .collect();
        if !others.is_empty() {
            let names: Vec<&str> = others.iter().map(|name| name.as_str()).collect();
            problems.push(format!(
                "{} shares IOMMU group {group} with {}",
                gpu.bdf,
                names.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Pass(format!(
            "{} GPUs, each alone in its IOMMU group",
            gpus.len()
        ))
    } else {
        Bad(problems.join("; "))
    }
}

fn modes_of(
    context: &Context,
    command: &str,
    parse_modes: fn(&str) -> Vec<parse::GpuMode>,
    wanted: &str,
) -> Outcome {
    let gpus = need!(context.gpus(), absent => Bad("no PCI devices".into()));
    let text = need!(context.bundle.cmd(command), absent => Skip(format!("no {command} output")));
    let modes = parse_modes(&text);
    let mut wrong = Vec::new();
    for gpu in &gpus {
        match modes.iter().find(|mode| mode.bdf == gpu.bdf) {
            Some(mode) if mode.mode == wanted => {}
            Some(mode) => wrong.push(format!("{} is {}", gpu.bdf, mode.mode)),
            None => wrong.push(format!("{} is not in the tool's output", gpu.bdf)),
        }
    }
    if wrong.is_empty() {
        Pass(format!("{} GPUs: {wanted}", gpus.len()))
    } else {
        Bad(wrong.join("; "))
    }
}

fn gpu_cc_mode(context: &Context) -> Outcome {
    if context.hopper_hgx() {
        return Outcome::NotApplicable(
            "a Hopper HGX with NVSwitches uses PPCIe mode (gpu.ppcie-mode)".into(),
        );
    }
    modes_of(context, "gpu-cc-mode", parse::gpu_cc_modes, "on")
}

fn gpu_ppcie_mode(context: &Context) -> Outcome {
    if !context.hopper_hgx() {
        return Outcome::NotApplicable(
            "not a Hopper HGX with NVSwitches: PPCIe does not apply".into(),
        );
    }
    modes_of(context, "gpu-ppcie-mode", parse::gpu_ppcie_modes, "on")
}

fn qemu_version(context: &Context) -> Outcome {
    let text = need!(context.bundle.cmd("qemu-version"), absent => Bad("qemu-system-x86_64 is not installed".into()));
    match parse::qemu_version(&text) {
        Some(version) if version >= Version::new(9, 2, 1) => Pass(format!("QEMU {version}")),
        Some(version) => Bad(format!("QEMU {version} is older than 9.2.1")),
        None => Skip(format!(
            "cannot read a version from `qemu-system-x86_64 --version`: {:?}",
            text.lines().next().unwrap_or("")
        )),
    }
}

fn qemu_tee_support(context: &Context) -> Outcome {
    let text = need!(context.bundle.cmd("qemu-objects"), absent => Bad("qemu-system-x86_64 is not installed".into()));
    let objects = parse::qemu_objects(&text);
    let wanted = match context.tee {
        Some(Tee::Snp) => "sev-snp-guest",
        Some(Tee::Tdx) => "tdx-guest",
        None => return Outcome::NotApplicable("no TEE to look for".into()),
    };
    if objects.contains(wanted) {
        Pass(format!("QEMU has {wanted}"))
    } else {
        Bad(format!(
            "`qemu-system-x86_64 -object help` does not list {wanted}"
        ))
    }
}

/// Finds the first of `names` in the BIOS attributes.
fn bios_attribute<'c>(
    context: &'c Context,
    names: &[&str],
) -> Result<(String, &'c BiosValue), Outcome> {
    let attributes = match &context.bios {
        Fact::Present(attributes) => attributes,
        Fact::Absent => return Err(Skip("no Redfish Bios document".into())),
        Fact::NotCollected(reason) => {
            return Err(Skip(format!(
                "{reason} (collect with `host collect --redfish URL`)"
            )))
        }
    };
    if let Some((name, value)) = names
        .iter()
        .find_map(|name| attributes.get(*name).map(|value| (*name, value)))
    {
        return Ok((name.to_owned(), value));
    }
    // Names differ between BIOS versions: point at what this BIOS's registry calls it.
    let hint = match context
        .bundle
        .redfish("/redfish/v1/Systems/System.Embedded.1/Bios/BiosRegistry")
    {
        Fact::Present(registry) => {
            let stems: Vec<String> = names
                .iter()
                .map(|name| name.trim_start_matches("Enable").to_ascii_lowercase())
                .collect();
            let similar: Vec<String> = parse::bios_registry_names(&registry)
                .into_iter()
                .filter(|entry| {
                    let entry = entry.to_ascii_lowercase();
                    stems.iter().any(|stem| entry.contains(stem.as_str()))
                })
                .collect();
            if similar.is_empty() {
                "; the BiosRegistry has no similar attribute".to_owned()
            } else {
                format!("; the BiosRegistry lists {}", similar.join(", "))
            }
        }
        _ => "; collect the BiosRegistry to see this BIOS's names".to_owned(),
    };
    Err(Bad(format!(
        "the BIOS has none of the attributes {}{hint}",
        names.join(", ")
    )))
}

fn bios_enabled(context: &Context, names: &[&str]) -> Outcome {
    match bios_attribute(context, names) {
        Ok((name, value)) if value.is_enabled() => Pass(format!("{name} = {value}")),
        Ok((name, value)) => Bad(format!("{name} = {value}")),
        Err(outcome) => outcome,
    }
}

fn bios_sme(context: &Context) -> Outcome {
    bios_enabled(context, &["Sme"])
}

fn bios_snp(context: &Context) -> Outcome {
    bios_enabled(context, &["Snp"])
}

fn bios_rmp(context: &Context) -> Outcome {
    bios_enabled(context, &["Rmp"])
}

fn bios_iommu(context: &Context) -> Outcome {
    bios_enabled(context, &["IommuSupport", "VtForDirectIo"])
}

fn bios_min_sev_asid(context: &Context) -> Outcome {
    match bios_attribute(context, &["CpuMinSevAsid"]) {
        Ok((name, value)) => match value.as_int() {
            Some(asid) if asid > 1 => Pass(format!("{name} = {asid}: {} SNP ASIDs", asid - 1)),
            Some(asid) => Bad(format!("{name} = {asid}: no ASIDs for SNP guests")),
            None => Bad(format!("{name} = {value} is not a number")),
        },
        Err(outcome) => outcome,
    }
}

fn bios_memory_encryption(context: &Context) -> Outcome {
    match bios_attribute(context, &["MemoryEncryption", "MemEncryption"]) {
        Ok((name, value)) => {
            let text = value.to_string();
            if text == "MultipleKeys" || text == "MultiKey" {
                Pass(format!("{name} = {text}"))
            } else {
                Bad(format!("{name} = {text}"))
            }
        }
        Err(outcome) => outcome,
    }
}

fn bios_tdx(context: &Context) -> Outcome {
    let tdx = bios_enabled(context, &["EnableTdx", "IntelTdx"]);
    let Pass(tdx_detail) = tdx else {
        return tdx;
    };
    match bios_enabled(context, &["EnableTdxSeamldr", "TdxSeamLoader"]) {
        Pass(loader) => Pass(format!("{tdx_detail}, {loader}")),
        other => other,
    }
}
