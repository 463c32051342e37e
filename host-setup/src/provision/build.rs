//! Chooses the steps of a provisioning plan for a release, a TEE and the model's GPUs.
//!
//! The facts come from the reference notes (preflight.md §8, corrections.md points 10–15):
//! 24.04 has no stock SEV-SNP or TDX host stack (SNP is built from source, TDX comes from
//! Canonical's PPA without device passthrough); 25.04 has stock SEV-SNP and the TDX PPA; 25.10 and
//! 26.04 are stock for both. An SNP host never gets `iommu=pt`; a TDX host gets
//! `nohibernate kvm_intel.tdx=1 intel_iommu=on` and an unlimited memlock.

use anyhow::Result;
use cvm_core::{
    error::bad_input,
    model::{Gpu, GpuModel, Model, Tee},
};

use super::{Action, Detect, OutputCheck, Package, Plan, PlanGpu, Release, Step};

/// What a plan is built from.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The host release.
    pub release: Release,
    /// The CPU TEE.
    pub tee: Tee,
    /// The GPUs passed through (`launch.gpus`).
    pub gpus: Vec<Gpu>,
    /// The NVSwitches passed through (`launch.nvswitches`).
    pub nvswitches: Vec<String>,
    /// Install libvirt too (for the rendered domain XML).
    pub libvirt: bool,
    /// The release the model expects (`host.release`), if it names one.
    pub expected_release: Option<String>,
}

impl PlanRequest {
    /// The request for `model` on `release`, with the TEE overridden when `tee` is set.
    pub fn from_model(model: &Model, release: Release, tee: Option<Tee>, libvirt: bool) -> Self {
        PlanRequest {
            release,
            tee: tee.unwrap_or(model.deployment.tee),
            gpus: model.launch.gpus.clone(),
            nvswitches: model.launch.nvswitches.clone(),
            libvirt,
            expected_release: model.host.release.clone(),
        }
    }
}

/// Where every file the plan writes lives; one prefix so they are easy to find and remove.
pub const GRUB_DROP_IN: &str = "/etc/default/grub.d/90-cvm-stack.cfg";
const KVM_CONF: &str = "/etc/modprobe.d/cvm-stack-kvm.conf";
const VFIO_CONF: &str = "/etc/modprobe.d/cvm-stack-vfio.conf";
const BLACKLIST_CONF: &str = "/etc/modprobe.d/cvm-stack-blacklist-gpu.conf";
const MODULES_LOAD: &str = "/etc/modules-load.d/cvm-stack-vfio.conf";
const LIMITS_CONF: &str = "/etc/security/limits.d/90-cvm-stack-memlock.conf";
const SYSTEMD_CONF: &str = "/etc/systemd/system.conf.d/90-cvm-stack-memlock.conf";
const STAMP_DIR: &str = "/var/lib/cvm-stack/provision";
const TDX_PIN: &str = "/etc/apt/preferences.d/cvm-stack-kobuk-tdx-release-pin-4000";
const TDX_UNATTENDED: &str =
    "/etc/apt/apt.conf.d/99cvm-stack-unattended-upgrades-kobuk-tdx-release";
const TDX_PPA: &str = "ppa:kobuk-team/tdx-release";
const SNP_BUILD_SCRIPT: &str = "/usr/local/lib/cvm-stack/build-snp-host.sh";
const SNP_WORK_DIR: &str = "/var/cache/cvm-stack/snp-build";
const GPU_TOOLS_DIR: &str = "/opt/cvm-stack/gpu-admin-tools";

/// A source tree the 24.04 SEV-SNP build fetches, pinned to a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePin {
    /// Directory name in the work directory.
    pub name: &'static str,
    /// Git URL.
    pub url: &'static str,
    /// Tag.
    pub tag: &'static str,
}

/// The 24.04 SEV-SNP host stack built from source. AMDESE's `snp-*-latest` branches are
/// force-pushed (so a branch is no pin); SNP host support has been upstream since Linux 6.11 and
/// QEMU 9.1, so the build uses upstream release tags with the AMDSEV project's host kernel
/// configuration, QEMU newer than the reference's 9.2.1 minimum, and the edk2 release the NVIDIA
/// reference architecture names for the AmdSev firmware.
pub const SNP_SOURCES: [SourcePin; 3] = [
    SourcePin {
        name: "linux",
        url: "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
        tag: "v6.17",
    },
    SourcePin {
        name: "qemu",
        url: "https://gitlab.com/qemu-project/qemu.git",
        tag: "v10.0.2",
    },
    SourcePin {
        name: "edk2",
        url: "https://github.com/tianocore/edk2.git",
        tag: "edk2-stable202408",
    },
];

/// The kernel release the source build installs (`uname -r` after the reboot).
pub const SNP_KERNEL_RELEASE: &str = "6.17.0-cvm-snp";
const SNP_QEMU_DEB_VERSION: &str = "10.0.2-1";
const SNP_OVMF_DEB_VERSION: &str = "2024.08-1";

/// NVIDIA gpu-admin-tools at a pinned release (v2025.10.20), which sets CC and PPCIe modes.
pub const GPU_ADMIN_TOOLS_URL: &str = "https://github.com/NVIDIA/gpu-admin-tools.git";
/// The commit of the pinned gpu-admin-tools release.
pub const GPU_ADMIN_TOOLS_COMMIT: &str = "82422cc1811cf7d04b69733cef3fa46e4144e203";

/// The PCI vendor:device ids vfio-pci claims for a GPU family.
pub fn pci_ids(model: GpuModel) -> &'static [&'static str] {
    match model {
        GpuModel::RtxPro6000Bse => &["10de:2bb5"],
        GpuModel::H100 => &["10de:2330", "10de:2331", "10de:2339"],
        GpuModel::H200 => &["10de:2335", "10de:233b"],
        GpuModel::B200 => &["10de:2901"],
    }
}

/// The PCI id of the Hopper HGX NVSwitch.
pub const NVSWITCH_PCI_ID: &str = "10de:22a3";

const HEADER: &str = "# Written by cvm-stack (`cargo xtask host apply`, step";

fn header(step: &str, what: &str) -> String {
    format!("{HEADER} {step}): {what}\n")
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

fn write_file(id: &str, why: &str, path: &str, contents: String) -> Step {
    Step {
        id: id.to_owned(),
        why: why.to_owned(),
        action: Action::WriteFile {
            path: path.to_owned(),
            mode: 0o644,
            contents,
        },
        done_when: Detect::FileContents {
            path: path.to_owned(),
        },
    }
}

fn stamp(id: &str) -> String {
    format!("{STAMP_DIR}/{id}.sha256")
}

/// The kernel command-line words the plan configures for `tee`.
pub fn cmdline_words(tee: Tee) -> Vec<String> {
    match tee {
        // No iommu=pt, ever: the kernel refuses SEV-SNP with the IOMMU in passthrough mode.
        Tee::Snp => strings(&["kvm_amd.sev=1", "kvm_amd.sev_es=1", "kvm_amd.sev_snp=1"]),
        Tee::Tdx => strings(&["nohibernate", "kvm_intel.tdx=1", "intel_iommu=on"]),
    }
}

/// Kernel command-line words that break the TEE (checked by the `kernel.no-*` guard step).
pub fn forbidden_words(tee: Tee) -> Vec<String> {
    match tee {
        Tee::Snp => strings(&[
            "iommu=pt",
            "amd_iommu=pgtbl_v2",
            "amd_iommu=off",
            "nosmt",
            "maxcpus=",
        ]),
        Tee::Tdx => strings(&["intel_iommu=off", "iommu=off"]),
    }
}

/// Builds the plan, or refuses an unsupported combination (bad input, exit 2) with the reason and
/// the supported alternative.
pub fn plan(request: &PlanRequest) -> Result<Plan> {
    let PlanRequest {
        release,
        tee,
        gpus,
        nvswitches,
        libvirt,
        expected_release,
    } = request;
    let (release, tee, libvirt) = (*release, *tee, *libvirt);
    if release == Release::Noble && tee == Tee::Tdx && !gpus.is_empty() {
        return Err(bad_input(format!(
            "Ubuntu 24.04 with TDX and GPU passthrough is not supported: Canonical's TDX PPA stack for 24.04 (kernel 6.8, QEMU 8.2) has no device passthrough; provision Ubuntu 25.10 or 26.04 (stock TDX), or 25.04 with the TDX PPA, for the model's {} GPU{}, or remove launch.gpus for a CPU-only TD",
            gpus.len(),
            if gpus.len() == 1 { "" } else { "s" }
        )));
    }
    let mut notes = Vec::new();
    if let Some(expected) = expected_release {
        if expected != release.version() {
            notes.push(format!(
                "The model's host.release is {expected}, but this plan is for {}: `host check` will flag the difference.",
                release.version()
            ));
        }
    }
    let ppa = tee == Tee::Tdx && matches!(release, Release::Noble | Release::Plucky);
    let source_build = tee == Tee::Snp && release == Release::Noble;
    match (release, tee) {
        (Release::Noble, Tee::Snp) => notes.push(format!(
            "Ubuntu 24.04's own kernel, QEMU 8.2 and OVMF have no SEV-SNP host support: the host kernel (Linux {}), QEMU {} and the AmdSev OVMF ({}) are built from source in {SNP_WORK_DIR}, packaged as .debs and installed (hours of CPU time and about 40 GiB of disk).",
            SNP_SOURCES[0].tag, SNP_SOURCES[1].tag, SNP_SOURCES[2].tag
        )),
        (Release::Noble, Tee::Tdx) => notes.push(
            "Canonical's TDX PPA for 24.04 is a technology preview that is no longer supported, and its stack (kernel 6.8 -intel, QEMU 8.2) is below the reference's versions (kernel 6.11+, QEMU 9.2.1+): `host check` will flag both. It has no device passthrough; for GPUs use 25.10 or 26.04.".to_owned(),
        ),
        (Release::Plucky, _) => {
            notes.push("Ubuntu 25.04 reached end of life in January 2026 and gets no security updates: plan a move to 26.04 LTS.".to_owned());
            if tee == Tee::Tdx {
                notes.push("TDX on 25.04 comes from Canonical's TDX PPA (kernel 6.14 -intel, QEMU 9.2.1), a technology preview that is no longer supported; 25.10 and 26.04 have TDX in the stock packages.".to_owned());
            }
        }
        (Release::Resolute, _) => notes.push("Optional and not applied: Ubuntu 26.04's virtualization HWE stack (qemu-hwe, libvirt-hwe, edk2-hwe) brings newer QEMU and firmware; switch to it with `apt install ubuntu-helper-virt-hwe && ubuntu_virt_helper switch`.".to_owned()),
        (Release::Questing, _) => {}
    }
    if !gpus.is_empty() {
        notes.push("NVIDIA supports CC mode only when every GPU of the host is in CC mode and assigned to confidential VMs; vfio-pci claims every GPU with the model's PCI ids, not only the model's addresses.".to_owned());
    }

    let mut steps = Vec::new();
    let mut reboots = Vec::new();
    bios_steps(tee, !gpus.is_empty(), &mut steps, &mut reboots);

    // Local configuration first: it changes nothing until the reboot and needs no network.
    let words = cmdline_words(tee);
    steps.push(write_file(
        "kernel.cmdline",
        match tee {
            Tee::Snp => "enable SEV, SEV-ES and SEV-SNP in KVM from the kernel command line (never iommu=pt: it makes the kernel refuse SEV-SNP)",
            Tee::Tdx => "TDX needs kvm_intel.tdx=1 (off by default on generic kernels), no hibernation (a TD cannot survive S4) and the Intel IOMMU for passthrough",
        },
        GRUB_DROP_IN,
        format!(
            "{}GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX {}\"\n",
            header("kernel.cmdline", "kernel command line for the confidential-VM host."),
            words.join(" ")
        ),
    ));
    steps.push(Step {
        id: "kernel.forbidden-words".to_owned(),
        why: match tee {
            Tee::Snp => "iommu=pt and amd_iommu=pgtbl_v2 make the kernel refuse SEV-SNP; offlined CPUs (nosmt, maxcpus=) break SNP's ASID recycling",
            Tee::Tdx => "TDX passthrough needs the Intel IOMMU on and hibernation off",
        }
        .to_owned(),
        action: Action::Guard {
            fix: "remove the word from GRUB_CMDLINE_LINUX* in the file named, then run `cargo xtask host apply` again".to_owned(),
        },
        done_when: Detect::NoForbiddenWords {
            files: strings(&["/etc/default/grub", "/etc/default/grub.d/*.cfg"]),
            words: forbidden_words(tee),
        },
    });
    steps.push(write_file(
        "kvm.module-options",
        match tee {
            Tee::Snp => "kvm_amd loads with SEV, SEV-ES and SEV-SNP on, however it is loaded",
            Tee::Tdx => "kvm_intel loads with TDX on, however it is loaded",
        },
        KVM_CONF,
        match tee {
            Tee::Snp => format!(
                "{}options kvm_amd sev=1 sev_es=1 sev_snp=1\n",
                header("kvm.module-options", "SEV-SNP in KVM.")
            ),
            Tee::Tdx => format!(
                "{}options kvm_intel tdx=1\n",
                header("kvm.module-options", "TDX in KVM.")
            ),
        },
    ));
    let mut initramfs_inputs = vec![KVM_CONF.to_owned()];
    if !gpus.is_empty() {
        let mut ids: Vec<&str> = Vec::new();
        for gpu in gpus {
            for id in pci_ids(gpu.model) {
                if !ids.contains(id) {
                    ids.push(id);
                }
            }
        }
        if !nvswitches.is_empty() {
            ids.push(NVSWITCH_PCI_ID);
        }
        steps.push(write_file(
            "vfio.ids",
            "vfio-pci claims the model's GPUs (and NVSwitches) at boot, before any NVIDIA or nouveau driver could",
            VFIO_CONF,
            format!(
                "{}options vfio-pci ids={}\nsoftdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\nsoftdep nvidia_drm pre: vfio-pci\n# Large confidential guests map many DMA regions (NVIDIA nvtrust issue 54).\noptions vfio_iommu_type1 dma_entry_limit=1048576\n",
                header("vfio.ids", "GPUs passed through to confidential VMs."),
                ids.join(",")
            ),
        ));
        steps.push(write_file(
            "vfio.modules-load",
            "load the vfio modules at every boot so the GPUs are bound to vfio-pci",
            MODULES_LOAD,
            format!(
                "{}vfio\nvfio_iommu_type1\nvfio_pci\n",
                header("vfio.modules-load", "vfio modules for GPU passthrough.")
            ),
        ));
        steps.push(write_file(
            "gpu.blacklist-host-drivers",
            "the host must run no NVIDIA driver: nouveau or nvidia bound to a GPU blocks vfio-pci and the CC-mode tool",
            BLACKLIST_CONF,
            format!(
                "{}blacklist nouveau\noptions nouveau modeset=0\nblacklist nvidia\nblacklist nvidia_drm\nblacklist nvidia_modeset\nblacklist nvidia_uvm\n",
                header("gpu.blacklist-host-drivers", "no NVIDIA driver on the host.")
            ),
        ));
        initramfs_inputs.extend(strings(&[VFIO_CONF, MODULES_LOAD, BLACKLIST_CONF]));
    }
    steps.push(write_file(
        "memlock.limits",
        "confidential guests pin all their memory (and 25.10's pam_limits default is 8 MiB): login sessions get an unlimited memlock",
        LIMITS_CONF,
        format!(
            "{}*    soft    memlock    unlimited\n*    hard    memlock    unlimited\nroot soft    memlock    unlimited\nroot hard    memlock    unlimited\n",
            header("memlock.limits", "unlimited locked memory for VMMs.")
        ),
    ));
    steps.push(write_file(
        "memlock.systemd",
        "services started by systemd (libvirtd, a launch unit) get an unlimited memlock too",
        SYSTEMD_CONF,
        format!(
            "{}[Manager]\nDefaultLimitMEMLOCK=infinity\n",
            header("memlock.systemd", "unlimited locked memory for services.")
        ),
    ));
    steps.push(Step {
        id: "initramfs.update".to_owned(),
        why: "the initramfs carries a copy of /etc/modprobe.d: rebuild it so module options and the blacklist apply from early boot".to_owned(),
        action: Action::Commands {
            commands: vec![strings(&["update-initramfs", "-u", "-k", "all"])],
            backs_up: strings(&["/boot/initrd.img"]),
            network: None,
        },
        done_when: Detect::Stamp {
            stamp: stamp("initramfs.update"),
            inputs: initramfs_inputs,
        },
    });
    steps.push(Step {
        id: "grub.update".to_owned(),
        why: "regenerate grub.cfg so the next boot uses the kernel command line above".to_owned(),
        action: Action::Commands {
            commands: vec![strings(&["update-grub"])],
            backs_up: strings(&["/boot/grub/grub.cfg"]),
            network: None,
        },
        done_when: Detect::Stamp {
            stamp: stamp("grub.update"),
            inputs: strings(&["/etc/default/grub", GRUB_DROP_IN]),
        },
    });

    // Package sources and packages.
    let mut packages: Vec<Package> = Vec::new();
    if ppa {
        let codename = release.codename();
        steps.push(Step {
            id: "tdx.ppa-tools".to_owned(),
            why: "add-apt-repository adds Canonical's TDX PPA with its signing key".to_owned(),
            action: Action::Packages {
                packages: vec![Package::any("software-properties-common")],
                allow_downgrades: false,
            },
            done_when: Detect::Packages {
                packages: vec![Package::any("software-properties-common")],
            },
        });
        steps.push(write_file(
            "tdx.ppa-pin",
            "the TDX stack must come from the PPA even where the archive has a newer version",
            TDX_PIN,
            format!(
                "{}Package: *\nPin: release o=LP-PPA-kobuk-team-tdx-release\nPin-Priority: 4000\n",
                header("tdx.ppa-pin", "prefer Canonical's TDX PPA.")
            ),
        ));
        steps.push(write_file(
            "tdx.ppa-unattended-upgrades",
            "unattended-upgrades must follow the PPA, or it would replace the TDX stack with archive versions",
            TDX_UNATTENDED,
            format!(
                "{}Unattended-Upgrade::Allowed-Origins {{\n    \"LP-PPA-kobuk-team-tdx-release:{codename}\";\n}};\nUnattended-Upgrade::Allow-downgrade \"true\";\n",
                header("tdx.ppa-unattended-upgrades", "keep the TDX PPA stack across updates.")
            ),
        ));
        steps.push(Step {
            id: "tdx.ppa".to_owned(),
            why: format!("Ubuntu {} has no stock TDX host stack; Canonical's PPA provides the -intel kernel, QEMU and OVMF", release.version()),
            action: Action::Commands {
                commands: vec![strings(&["add-apt-repository", "-y", "--no-update", TDX_PPA])],
                backs_up: Vec::new(),
                network: Some(format!("the Launchpad PPA {TDX_PPA} and its signing key")),
            },
            done_when: Detect::FilesExist {
                paths: vec![format!("/etc/apt/sources.list.d/kobuk-team-ubuntu-tdx-release-{codename}.sources")],
            },
        });
        packages.push(Package::any("linux-image-intel"));
        match release {
            Release::Noble => packages.push(Package::any("qemu-system-x86")),
            _ => packages.push(Package::at_least("qemu-system-x86", "1:9.2.1")),
        }
        packages.push(Package::any("ovmf"));
    } else if source_build {
        packages.extend(
            [
                "git",
                "build-essential",
                "bc",
                "bison",
                "flex",
                "libelf-dev",
                "libssl-dev",
                "dwarves",
                "rsync",
                "cpio",
                "kmod",
                "zstd",
                "debhelper",
                "python3",
                "python3-venv",
                "ninja-build",
                "pkg-config",
                "libglib2.0-dev",
                "libpixman-1-dev",
                "libslirp-dev",
                "zlib1g-dev",
                "nasm",
                "acpica-tools",
                "uuid-dev",
            ]
            .into_iter()
            .map(Package::any),
        );
    } else {
        match tee {
            Tee::Snp => {
                packages.push(Package::at_least("qemu-system-x86", "1:9.2.1"));
                // OVMF.amdsev.fd (the AmdSevX64 build for measured direct boot) is in the stock
                // ovmf package from 25.04 on.
                packages.push(Package::any("ovmf"));
            }
            Tee::Tdx => {
                // Upstream TDX support arrived in QEMU 10.1.
                packages.push(Package::at_least("qemu-system-x86", "1:10.1"));
                packages.push(Package::any("ovmf-inteltdx"));
            }
        }
    }
    if libvirt {
        packages.push(Package::any("libvirt-daemon-system"));
        packages.push(Package::any("libvirt-clients"));
    }
    if !gpus.is_empty() {
        for name in ["git", "python3", "pciutils"] {
            if !packages.iter().any(|package| package.name == name) {
                packages.push(Package::any(name));
            }
        }
    }
    steps.push(Step {
        id: if source_build {
            "packages.build-deps".to_owned()
        } else {
            "packages.install".to_owned()
        },
        why: match (source_build, ppa, tee) {
            (true, _, _) => "the tools and libraries that build the SEV-SNP kernel, QEMU and OVMF".to_owned(),
            (_, true, _) => "the TDX host stack from the PPA: -intel kernel, QEMU with tdx-guest, OVMF with TDVF".to_owned(),
            (_, _, Tee::Snp) => "QEMU >= 9.2.1 with sev-snp-guest and OVMF with the AmdSev build (OVMF.amdsev.fd)".to_owned(),
            (_, _, Tee::Tdx) => "QEMU >= 10.1 with tdx-guest and OVMF with TDVF (OVMF.inteltdx.ms.fd)".to_owned(),
        },
        action: Action::Packages {
            packages: packages.clone(),
            allow_downgrades: ppa,
        },
        done_when: Detect::Packages { packages },
    });

    if source_build {
        snp_source_build_steps(&mut steps);
    }
    steps.extend(verify_steps(tee, source_build, ppa));
    if !gpus.is_empty() {
        steps.push(Step {
            id: "gpu.admin-tools".to_owned(),
            why: "NVIDIA's gpu-admin-tools switches the GPUs into CC (or Protected PCIe) mode; pinned to release v2025.10.20".to_owned(),
            action: Action::Commands {
                commands: vec![
                    strings(&["rm", "-rf", GPU_TOOLS_DIR]),
                    strings(&["git", "clone", "--quiet", GPU_ADMIN_TOOLS_URL, GPU_TOOLS_DIR]),
                    strings(&["git", "-C", GPU_TOOLS_DIR, "checkout", "--quiet", "--detach", GPU_ADMIN_TOOLS_COMMIT]),
                ],
                backs_up: Vec::new(),
                network: Some(format!("NVIDIA gpu-admin-tools from {GPU_ADMIN_TOOLS_URL}")),
            },
            done_when: Detect::CommandOutput {
                checks: vec![OutputCheck {
                    command: strings(&["git", "-C", GPU_TOOLS_DIR, "rev-parse", "HEAD"]),
                    contains: GPU_ADMIN_TOOLS_COMMIT.to_owned(),
                }],
            },
        });
    }

    let kernel = source_build.then(|| SNP_KERNEL_RELEASE.to_owned());
    let activates = match (source_build, ppa) {
        (true, _) => format!("the {SNP_KERNEL_RELEASE} kernel, the kernel command line and the module options"),
        (_, true) => "the PPA's -intel kernel (the newest installed kernel), the kernel command line and the module options".to_owned(),
        _ => "the kernel command line, the module options and the memlock limits".to_owned(),
    };
    reboots.push(format!(
        "reboot.host: after `host apply` stops at it, to activate {activates}"
    ));
    steps.push(Step {
        id: "reboot.host".to_owned(),
        why: "kernel command line, module options, the initramfs and the vfio binding take effect only at boot".to_owned(),
        action: Action::Reboot { activates },
        done_when: Detect::Booted { words, kernel },
    });
    if !gpus.is_empty() {
        steps.push(gpu_mode_step(gpus, nvswitches));
    }
    Ok(Plan {
        schema: 1,
        release,
        codename: release.codename(),
        tee,
        gpus: gpus
            .iter()
            .map(|gpu| PlanGpu {
                address: gpu.address.clone(),
                model: gpu.model,
            })
            .collect(),
        nvswitches: nvswitches.clone(),
        notes,
        reboots,
        steps,
    })
}

/// Checks that the installed stack can run the TEE: the firmware build and QEMU's guest object.
fn verify_steps(tee: Tee, source_build: bool, ppa: bool) -> Vec<Step> {
    let firmware = match (tee, source_build, ppa) {
        (Tee::Snp, true, _) => "/usr/local/share/ovmf/OVMF.amdsev.fd",
        (Tee::Snp, false, _) => "/usr/share/ovmf/OVMF.amdsev.fd",
        (Tee::Tdx, _, true) => "/usr/share/ovmf/OVMF.fd",
        (Tee::Tdx, _, false) => "/usr/share/ovmf/OVMF.inteltdx.ms.fd",
    };
    let object = match tee {
        Tee::Snp => "sev-snp-guest",
        Tee::Tdx => "tdx-guest",
    };
    vec![
        Step {
            id: "verify.firmware".to_owned(),
            why: match tee {
                Tee::Snp => "SEV-SNP guests boot the AmdSev OVMF build, one stateless image with measured kernel hashes",
                Tee::Tdx => "TDX guests boot OVMF with TDVF, one stateless image",
            }
            .to_owned(),
            action: Action::Guard {
                fix: format!("the firmware did not come with the packages above; point launch.firmware at a {} build and pin its sha256", match tee { Tee::Snp => "OvmfPkg/AmdSev/AmdSevX64.dsc", Tee::Tdx => "TDVF (OvmfPkg/IntelTdx)" }),
            },
            done_when: Detect::FilesExist {
                paths: vec![firmware.to_owned()],
            },
        },
        Step {
            id: "verify.qemu-tee".to_owned(),
            why: format!("QEMU must offer the {object} object, or it cannot start the confidential guest"),
            action: Action::Guard {
                fix: "the installed QEMU is too old or was built without it; check which qemu-system-x86_64 is first on PATH".to_owned(),
            },
            done_when: Detect::CommandOutput {
                checks: vec![OutputCheck {
                    command: strings(&["qemu-system-x86_64", "-object", "help"]),
                    contains: object.to_owned(),
                }],
            },
        },
    ]
}

/// The BIOS changes (Dell PowerEdge attribute names, applied in dependent stages).
fn bios_steps(tee: Tee, gpus: bool, steps: &mut Vec<Step>, reboots: &mut Vec<String>) {
    let job = "racadm jobqueue create BIOS.Setup.1-1 -r graceful -s TIME_NOW   (one BIOS job, one graceful reboot)";
    let set = |attribute: &str, value: &str| format!("racadm set BIOS.{attribute} {value}");
    let mut stages: Vec<(&str, &str, Vec<String>, Vec<&str>)> = match tee {
        Tee::Snp => vec![
            (
                "bios.snp-stage-1",
                "SEV-SNP needs virtualization, the IOMMU, x2APIC and SME (SMEE) first; iDRAC unlocks the SNP attributes only after Sme is applied",
                vec![
                    set("ProcSettings.ProcVirtualization", "Enabled"),
                    set("ProcSettings.IommuSupport", "Enabled"),
                    set("ProcSettings.ProcX2Apic", "Enabled"),
                    set("ProcSettings.Sme", "Enabled"),
                    "leave BIOS.ProcSettings.TransparentSme Disabled (TSME is not needed for SEV-SNP)".to_owned(),
                ],
                vec!["iommu.enabled", "snp.cpu-support"],
            ),
            (
                "bios.snp-stage-2",
                "SEV-SNP on, with ASIDs reserved for SEV-ES/SNP guests (CpuMinSevAsid 100 gives 99); Rmp unlocks only after Snp is applied",
                vec![
                    set("ProcSettings.Snp", "Enabled"),
                    set("ProcSettings.CpuMinSevAsid", "100"),
                ],
                vec!["snp.bios-enabled", "snp.asids"],
            ),
            (
                "bios.snp-stage-3",
                "SNP memory coverage: the BIOS reserves the RMP table, without which the kernel cannot initialize SEV-SNP",
                vec![set("ProcSettings.Rmp", "Enabled")],
                vec!["snp.bios-enabled"],
            ),
        ],
        Tee::Tdx => vec![
            (
                "bios.tdx-stage-1",
                "TDX needs virtualization, VT-d, x2APIC and multi-key TME (TME-MT) first; the TDX attributes appear only after MemoryEncryption is applied",
                vec![
                    set("ProcSettings.ProcVirtualization", "Enabled"),
                    set("ProcSettings.VtForDirectIo", "Enabled"),
                    set("ProcSettings.ProcX2Apic", "Enabled"),
                    set("MemSettings.NodeInterleave", "Disabled"),
                    set("ProcSettings.MemoryEncryption", "MultipleKeys"),
                    set("ProcSettings.IntelSgx", "On"),
                ],
                vec!["tdx.cpu-support", "iommu.enabled"],
            ),
            (
                "bios.tdx-stage-2",
                "TDX itself: the SEAM loader, a non-zero TME-MT/TDX key split, and TME-MT integrity off",
                vec![
                    set("ProcSettings.EnableTdx", "Enabled"),
                    set("ProcSettings.EnableTdxSeamldr", "Enabled"),
                    set("ProcSettings.KeySplit", "1"),
                    set("ProcSettings.GlbMemIntegrity", "Disabled"),
                    "attribute names differ between Dell BIOS versions (IntelTdx, TdxSeamLoader, IntelTdxKeySplit, GlobalMemIntegrity): read BiosRegistry and use the names it lists".to_owned(),
                ],
                vec!["tdx.module-initialized"],
            ),
        ],
    };
    if gpus {
        let (_, _, instructions, _) = &mut stages[0];
        instructions.push(set("IntegratedDevices.SriovGlobalEnable", "Enabled"));
        instructions.push("enable PCIe ACS (on some AMD BIOSes it is under AER) so each GPU sits in its own IOMMU group".to_owned());
    }
    for (id, why, mut instructions, checks) in stages {
        instructions.push(job.to_owned());
        reboots.push(format!(
            "{id}: the BIOS job's graceful reboot (by hand, through iDRAC)"
        ));
        steps.push(Step {
            id: id.to_owned(),
            why: why.to_owned(),
            action: Action::Manual { instructions },
            done_when: Detect::HostCheck {
                checks: checks.into_iter().map(str::to_owned).collect(),
            },
        });
    }
}

/// The 24.04 SEV-SNP source build: a script written as a file (so its full text is in the plan),
/// run in a work directory, producing .debs that are then installed.
fn snp_source_build_steps(steps: &mut Vec<Step>) {
    let kernel_deb = format!(
        "{SNP_WORK_DIR}/debs/linux-image-{SNP_KERNEL_RELEASE}_{}-1_amd64.deb",
        SNP_KERNEL_RELEASE.trim_end_matches("-cvm-snp")
    );
    let qemu_deb = format!("{SNP_WORK_DIR}/debs/cvm-stack-qemu_{SNP_QEMU_DEB_VERSION}_amd64.deb");
    let ovmf_deb =
        format!("{SNP_WORK_DIR}/debs/cvm-stack-ovmf-amdsev_{SNP_OVMF_DEB_VERSION}_all.deb");
    steps.push(Step {
        id: "snp.build-script".to_owned(),
        why: "the SEV-SNP host build, written out in full so it can be reviewed".to_owned(),
        action: Action::WriteFile {
            path: SNP_BUILD_SCRIPT.to_owned(),
            mode: 0o755,
            contents: snp_build_script(),
        },
        done_when: Detect::FileContents {
            path: SNP_BUILD_SCRIPT.to_owned(),
        },
    });
    let network = SNP_SOURCES
        .iter()
        .map(|pin| format!("{} {} ({})", pin.name, pin.tag, pin.url))
        .collect::<Vec<_>>()
        .join(", ");
    steps.push(Step {
        id: "snp.build".to_owned(),
        why: "build the SEV-SNP host kernel, QEMU and the AmdSev OVMF at their pinned tags and package them as .debs".to_owned(),
        action: Action::Commands {
            commands: vec![strings(&["bash", SNP_BUILD_SCRIPT, SNP_WORK_DIR])],
            backs_up: Vec::new(),
            network: Some(network),
        },
        done_when: Detect::FilesExist {
            paths: vec![kernel_deb.clone(), qemu_deb.clone(), ovmf_deb.clone()],
        },
    });
    let installed = vec![
        Package::any(&format!("linux-image-{SNP_KERNEL_RELEASE}")),
        Package::at_least("cvm-stack-qemu", SNP_QEMU_DEB_VERSION),
        Package::at_least("cvm-stack-ovmf-amdsev", SNP_OVMF_DEB_VERSION),
    ];
    steps.push(Step {
        id: "snp.install".to_owned(),
        why: "install the built kernel, QEMU (/usr/local/bin) and OVMF (/usr/local/share/ovmf/OVMF.amdsev.fd)".to_owned(),
        action: Action::Commands {
            commands: vec![vec![
                "apt-get".to_owned(),
                "install".to_owned(),
                "-y".to_owned(),
                kernel_deb,
                qemu_deb,
                ovmf_deb,
            ]],
            backs_up: Vec::new(),
            network: None,
        },
        done_when: Detect::Packages {
            packages: installed,
        },
    });
}

/// The text of the 24.04 SEV-SNP build script.
fn snp_build_script() -> String {
    let [linux, qemu, edk2] = SNP_SOURCES;
    let kernel_version = SNP_KERNEL_RELEASE.trim_end_matches("-cvm-snp");
    format!(
        r#"#!/bin/bash
{header}# Usage: build-snp-host.sh WORK_DIR. Rerunning reuses finished source trees.
set -euo pipefail
work="${{1:?usage: build-snp-host.sh WORK_DIR}}"
mkdir -p "$work/debs"
cd "$work"
jobs="$(nproc)"

# fetch NAME URL TAG: a shallow clone at TAG, or a check that an earlier clone is at TAG.
fetch() {{
    if [ ! -d "$1/.git" ]; then
        git clone --quiet --depth 1 --branch "$3" "$2" "$1"
    fi
    if [ "$(git -C "$1" describe --tags --exact-match)" != "$3" ]; then
        echo "$work/$1 is not at $3; remove it and run again" >&2
        exit 1
    fi
}}

# The host kernel, with the AMDSEV project's SEV-SNP host configuration.
fetch {linux_name} {linux_url} {linux_tag}
(
    cd {linux_name}
    cp "/boot/config-$(uname -r)" .config
    scripts/config --enable AMD_MEM_ENCRYPT --disable AMD_MEM_ENCRYPT_ACTIVE_BY_DEFAULT \
        --enable KVM_AMD_SEV --module CRYPTO_DEV_CCP_DD --module SEV_GUEST \
        --disable IOMMU_DEFAULT_PASSTHROUGH --enable CGROUP_MISC \
        --disable DEBUG_INFO_DWARF5 --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT --enable DEBUG_INFO_NONE \
        --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS "" \
        --set-str LOCALVERSION "-cvm-snp" --disable LOCALVERSION_AUTO
    make olddefconfig
    make -j"$jobs" bindeb-pkg KDEB_PKGVERSION={kernel_version}-1
)
mv linux-image-{kernel_release}_{kernel_version}-1_amd64.deb debs/

# QEMU, installed under /usr/local and packaged as cvm-stack-qemu.
fetch {qemu_name} {qemu_url} {qemu_tag}
(
    cd {qemu_name}
    ./configure --target-list=x86_64-softmmu --prefix=/usr/local --disable-docs --enable-slirp
    make -j"$jobs"
    rm -rf pkg
    make install DESTDIR="$PWD/pkg"
    mkdir -p pkg/DEBIAN
    printf '%s\n' 'Package: cvm-stack-qemu' 'Version: {qemu_deb_version}' 'Architecture: amd64' \
        'Maintainer: cvm-stack <root@localhost>' \
        'Depends: libglib2.0-0t64, libpixman-1-0, libslirp0, zlib1g' \
        'Description: QEMU {qemu_tag} x86_64 system emulator with SEV-SNP, built by cvm-stack' > pkg/DEBIAN/control
    dpkg-deb --root-owner-group --build pkg "$work/debs/cvm-stack-qemu_{qemu_deb_version}_amd64.deb"
)

# OVMF, the AmdSevX64 build (one stateless image for measured direct boot). The grub.efi this
# platform can embed (for SEV launch-secret disk unlocking) is not used: an empty one is given.
fetch {edk2_name} {edk2_url} {edk2_tag}
(
    cd {edk2_name}
    git submodule update --quiet --init --depth 1
    touch OvmfPkg/AmdSev/Grub/grub.efi
    make -C BaseTools -j"$jobs"
    set +u
    source ./edksetup.sh
    set -u
    build -q -n "$jobs" -a X64 -t GCC5 -b RELEASE -p OvmfPkg/AmdSev/AmdSevX64.dsc
    rm -rf pkg
    mkdir -p pkg/DEBIAN pkg/usr/local/share/ovmf
    cp Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd pkg/usr/local/share/ovmf/OVMF.amdsev.fd
    printf '%s\n' 'Package: cvm-stack-ovmf-amdsev' 'Version: {ovmf_deb_version}' 'Architecture: all' \
        'Maintainer: cvm-stack <root@localhost>' \
        'Description: OVMF AmdSevX64 ({edk2_tag}) for SEV-SNP guests, built by cvm-stack' > pkg/DEBIAN/control
    dpkg-deb --root-owner-group --build pkg "$work/debs/cvm-stack-ovmf-amdsev_{ovmf_deb_version}_all.deb"
)
echo "built: $(ls "$work"/debs)"
"#,
        header = header(
            "snp.build-script",
            "builds the SEV-SNP host stack for Ubuntu 24.04."
        ),
        linux_name = linux.name,
        linux_url = linux.url,
        linux_tag = linux.tag,
        qemu_name = qemu.name,
        qemu_url = qemu.url,
        qemu_tag = qemu.tag,
        edk2_name = edk2.name,
        edk2_url = edk2.url,
        edk2_tag = edk2.tag,
        kernel_version = kernel_version,
        kernel_release = SNP_KERNEL_RELEASE,
        qemu_deb_version = SNP_QEMU_DEB_VERSION,
        ovmf_deb_version = SNP_OVMF_DEB_VERSION,
    )
}

/// Puts the GPUs (and NVSwitches) into the CC mode NVIDIA supports for the topology: Hopper with
/// several GPUs uses Protected PCIe with the NVSwitches; one GPU, or Blackwell, uses CC mode `on`.
fn gpu_mode_step(gpus: &[Gpu], nvswitches: &[String]) -> Step {
    let tool = format!("{GPU_TOOLS_DIR}/nvidia_gpu_tools.py");
    let ppcie = gpus.len() > 1 && gpus[0].model.is_hopper();
    let devices: Vec<&String> = gpus
        .iter()
        .map(|gpu| &gpu.address)
        .chain(nvswitches.iter().filter(|_| ppcie))
        .collect();
    let (set, reset, query, expect) = if ppcie {
        (
            "--set-ppcie-mode=on",
            "--reset-after-ppcie-mode-switch",
            "--query-ppcie-mode",
            "PPCIe mode is on",
        )
    } else {
        (
            "--set-cc-mode=on",
            "--reset-after-cc-mode-switch",
            "--query-cc-mode",
            "CC mode is on",
        )
    };
    let device_arg = |address: &str| format!("--devices={address}");
    Step {
        id: if ppcie { "gpu.ppcie-mode" } else { "gpu.cc-mode" }.to_owned(),
        why: if ppcie {
            "multi-GPU Hopper is supported only in Protected PCIe mode, GPUs and NVSwitches together, all given to one CVM"
        } else {
            "the GPUs must be in CC mode `on` (not devtools) before a confidential VM gets them; the reset applies it without a reboot"
        }
        .to_owned(),
        action: Action::Commands {
            // For Protected PCIe, NVIDIA's procedure turns CC mode off on every GPU first (the
            // NVSwitches have no CC mode), then PPCIe on for GPUs and NVSwitches alike.
            commands: gpus
                .iter()
                .filter(|_| ppcie)
                .map(|gpu| {
                    vec![
                        "python3".to_owned(),
                        tool.clone(),
                        device_arg(&gpu.address),
                        "--set-cc-mode=off".to_owned(),
                        "--reset-after-cc-mode-switch".to_owned(),
                    ]
                })
                .chain(devices.iter().map(|address| {
                    vec![
                        "python3".to_owned(),
                        tool.clone(),
                        device_arg(address),
                        set.to_owned(),
                        reset.to_owned(),
                    ]
                }))
                .collect(),
            backs_up: Vec::new(),
            network: None,
        },
        done_when: Detect::CommandOutput {
            checks: devices
                .iter()
                .map(|address| OutputCheck {
                    command: vec![
                        "python3".to_owned(),
                        tool.clone(),
                        device_arg(address),
                        query.to_owned(),
                    ],
                    contains: expect.to_owned(),
                })
                .collect(),
        },
    }
}
