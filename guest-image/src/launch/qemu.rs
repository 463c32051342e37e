//! The QEMU argument vector, built once from the launch plan and rendered two ways: as shell words
//! for the launch script (where paths and the C-bit position are shell variables resolved at launch
//! time) and as a plain argument vector for the emulated boot ([`super::emulated_args`]).

use std::{ffi::OsString, path::Path};

use cvm_core::{
    cmd::shell_quote,
    model::{BootMode, NetworkMode, Tee},
};

use super::plan::{Plan, MMIO64_FW_CFG};

/// A value that the launch script only knows at launch time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    /// The firmware image.
    Firmware,
    /// The unified kernel image.
    Uki,
    /// The qcow2 disk.
    Disk,
    /// The serial console log.
    SerialLog,
    /// The SEV-SNP C-bit position (from the model, or read from CPUID at launch).
    Cbitpos,
    /// `,iommufd=iommufd0` on each vfio-pci device when the host's QEMU and kernel have iommufd,
    /// else empty (the legacy VFIO container); probed by the launch script.
    VfioIommufd,
    /// The words `-object iommufd,id=iommufd0` under the same condition, else none (a bash array).
    IommufdObject,
}

impl Var {
    /// The shell variable that holds it in the launch script.
    pub(crate) fn shell_name(self) -> &'static str {
        match self {
            Var::Firmware => "firmware",
            Var::Uki => "uki",
            Var::Disk => "disk",
            Var::SerialLog => "serial_log",
            Var::Cbitpos => "cbitpos",
            Var::VfioIommufd => "vfio_iommufd",
            Var::IommufdObject => "iommufd_object",
        }
    }
}

/// One piece of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text.
    Lit(String),
    /// A launch-time value; `in_option` means it sits inside a QEMU `key=value,…` list, where a
    /// comma must be written twice.
    Var { var: Var, in_option: bool },
    /// A launch-time list of whole words (a bash array), possibly empty.
    Splice(Var),
}

/// One argument, made of literal text and launch-time values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Word(Vec<Part>);

impl Word {
    pub(crate) fn lit(text: impl Into<String>) -> Self {
        Word(vec![Part::Lit(text.into())])
    }

    pub(crate) fn push(mut self, text: impl Into<String>) -> Self {
        self.0.push(Part::Lit(text.into()));
        self
    }

    pub(crate) fn var(mut self, var: Var, in_option: bool) -> Self {
        self.0.push(Part::Var { var, in_option });
        self
    }

    /// A launch-time list of zero or more whole words.
    pub(crate) fn splice(var: Var) -> Self {
        Word(vec![Part::Splice(var)])
    }

    fn is_splice(&self) -> bool {
        matches!(self.0.as_slice(), [Part::Splice(_)])
    }

    /// The word as one shell word: literals quoted, variables expanded inside double quotes
    /// (with commas doubled by `${var//,/,,}` inside QEMU option lists).
    pub(crate) fn to_shell(&self) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Lit(text) => out.push_str(&shell_quote(text)),
                Part::Var { var, in_option } => {
                    let name = var.shell_name();
                    if *in_option {
                        out.push_str(&format!("\"${{{name}//,/,,}}\""));
                    } else {
                        out.push_str(&format!("\"${{{name}}}\""));
                    }
                }
                Part::Splice(var) => out.push_str(&format!("\"${{{}[@]}}\"", var.shell_name())),
            }
        }
        out
    }

    /// The word with every variable replaced by its value.
    pub(crate) fn resolve(&self, value: &dyn Fn(Var) -> OsString) -> OsString {
        let mut out = OsString::new();
        for part in &self.0 {
            match part {
                Part::Lit(text) => out.push(text),
                Part::Var { var, in_option } => {
                    let value = value(*var);
                    if *in_option {
                        out.push(value.to_string_lossy().replace(',', ",,"));
                    } else {
                        out.push(value);
                    }
                }
                // Only whole-word splices exist; `resolve` leaves them out.
                Part::Splice(_) => {}
            }
        }
        out
    }
}

/// A group of arguments with the comment the script prints above them.
#[derive(Debug, Clone)]
pub(crate) struct ArgGroup {
    /// One sentence saying what the group does.
    pub comment: String,
    /// The arguments.
    pub words: Vec<Word>,
}

fn group(comment: impl Into<String>, words: Vec<Word>) -> ArgGroup {
    ArgGroup {
        comment: comment.into(),
        words,
    }
}

fn words(list: &[&str]) -> Vec<Word> {
    list.iter().map(|word| Word::lit(*word)).collect()
}

/// What the argument vector is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The confidential launch: TEE objects, KVM, GPUs and the model's network.
    Confidential,
    /// A non-confidential boot of the same disk, UKI and firmware (no TEE objects, GPUs or network).
    Emulated(EmulatedAccel),
}

/// The accelerator of an emulated boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulatedAccel {
    /// KVM (with `-cpu host`).
    Kvm,
    /// TCG software emulation (with `-cpu max`).
    Tcg,
}

/// The QEMU arguments (without the program name) for `plan`, grouped and commented.
pub(crate) fn arg_groups(plan: &Plan, mode: Mode) -> Vec<ArgGroup> {
    let confidential = mode == Mode::Confidential;
    let memory = format!("{}M", plan.memory_mib);
    let mut groups = Vec::new();

    let (accel, cpu) = match mode {
        Mode::Confidential => match plan.tee {
            Tee::Snp => {
                let mut cpu = plan.vcpu_type.clone();
                if plan.host_phys_bits {
                    cpu.push_str(",host-phys-bits=on");
                }
                ("kvm", cpu)
            }
            Tee::Tdx => ("kvm", "host".to_owned()),
        },
        Mode::Emulated(EmulatedAccel::Kvm) => ("kvm", "host".to_owned()),
        Mode::Emulated(EmulatedAccel::Tcg) => ("tcg", "max".to_owned()),
    };
    groups.push(group(
        if confidential {
            "KVM with the pinned vCPU model and count the launch measurement was computed for."
        } else {
            "Emulated boot: no confidential-computing objects."
        },
        vec![
            Word::lit("-accel"),
            Word::lit(accel),
            Word::lit("-cpu"),
            Word::lit(cpu),
            Word::lit("-smp"),
            Word::lit(plan.vcpus.to_string()),
            Word::lit("-m"),
            Word::lit(memory.clone()),
        ],
    ));

    match (mode, plan.tee) {
        (Mode::Confidential, Tee::Snp) => {
            let snp = plan.snp.as_ref().expect("an SNP plan has SNP values");
            let mut object = Word::lit("sev-snp-guest,id=sev0,cbitpos=")
                .var(Var::Cbitpos, false)
                .push(format!(
                    ",reduced-phys-bits={},policy={:#x}",
                    snp.reduced_phys_bits, snp.policy
                ));
            if plan.boot == BootMode::DirectUki {
                object = object.push(",kernel-hashes=on");
            }
            groups.push(group(
                "SEV-SNP guest: private memory from guest_memfd behind a memfd backend of exactly -m.",
                vec![
                    Word::lit("-machine"),
                    Word::lit("q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off"),
                    Word::lit("-object"),
                    Word::lit(format!(
                        "memory-backend-memfd,id=ram1,size={memory},share=true,prealloc=false"
                    )),
                    Word::lit("-object"),
                    object,
                ],
            ));
        }
        (Mode::Confidential, Tee::Tdx) => {
            let tdx = plan.tdx.as_ref().expect("a TDX plan has TDX values");
            groups.push(group(
                "TDX guest: quote generation through the host's QGS on vsock CID 2, split IRQ chip.",
                vec![
                    Word::lit("-object"),
                    Word::lit(tdx_guest_json(tdx.attributes, tdx.quote_generation_port)),
                    Word::lit("-object"),
                    Word::lit(format!("memory-backend-ram,id=ram1,size={memory}")),
                    Word::lit("-machine"),
                    Word::lit("q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1,hpet=off"),
                ],
            ));
        }
        (Mode::Emulated(_), _) => {
            groups.push(group(
                "A plain q35 machine.",
                words(&["-machine", "q35,vmport=off"]),
            ));
        }
    }

    groups.push(group(
        "Firmware: one stateless image loaded with -bios (no pflash, no NVRAM).",
        vec![
            Word::lit("-bios"),
            Word::default().var(Var::Firmware, false),
        ],
    ));
    match plan.boot {
        BootMode::DirectUki => groups.push(group(
            if plan.tee == Tee::Snp {
                "Direct boot of the UKI, hashed into the launch measurement (no -initrd or -append)."
            } else {
                "Direct boot of the UKI, measured by the firmware (no -initrd or -append)."
            },
            vec![Word::lit("-kernel"), Word::default().var(Var::Uki, false)],
        )),
        BootMode::Disk => {}
    }
    let mut disk_device =
        "virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on".to_owned();
    if plan.boot == BootMode::Disk {
        disk_device.push_str(",bootindex=0");
    }
    groups.push(group(
        "The disk with the dm-verity root, attached read-only.",
        vec![
            Word::lit("-drive"),
            Word::lit("file=")
                .var(Var::Disk, true)
                .push(",if=none,id=disk0,format=qcow2,readonly=on"),
            Word::lit("-device"),
            Word::lit(disk_device),
        ],
    ));

    if confidential {
        if !plan.passthrough.is_empty() {
            groups.push(group(
                "One iommufd context shared by the passed-through devices, when this host's QEMU and kernel have iommufd (probed above); else none, and VFIO uses its legacy container.",
                vec![Word::splice(Var::IommufdObject)],
            ));
        }
        for (index, device) in plan.passthrough.iter().enumerate() {
            let port = index + 1;
            groups.push(group(
                format!(
                    "{} {} behind its own PCIe root port.",
                    device.kind, device.address
                ),
                vec![
                    Word::lit("-device"),
                    Word::lit(format!(
                        "pcie-root-port,id=rp{port},bus=pcie.0,chassis={port},port={port}"
                    )),
                    Word::lit("-device"),
                    Word::lit(format!("vfio-pci,host={},bus=rp{port}", device.address))
                        .var(Var::VfioIommufd, false),
                ],
            ));
        }
        if let Some(mib) = plan.mmio64_mib {
            groups.push(group(
                format!("64-bit MMIO window for the GPU BARs: {mib} MiB."),
                vec![
                    Word::lit("-fw_cfg"),
                    Word::lit(format!("name={MMIO64_FW_CFG},string={mib}")),
                ],
            ));
        }
        let network = &plan.network;
        match network.mode {
            NetworkMode::None => groups.push(group(
                "No network: the model asks for none.",
                words(&["-nic", "none"]),
            )),
            NetworkMode::User => groups.push(group(
                format!(
                    "User-mode network: host port {} to the guest's HTTPS endpoint on port {}.",
                    network.host_port.unwrap_or_default(),
                    network.guest_port
                ),
                vec![
                    Word::lit("-netdev"),
                    Word::lit(format!(
                        "user,id=net0,hostfwd=tcp::{}-:{}",
                        network.host_port.unwrap_or_default(),
                        network.guest_port
                    )),
                    Word::lit("-device"),
                    Word::lit("virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on"),
                ],
            )),
            NetworkMode::Bridge => groups.push(group(
                "A tap device on the host bridge the model names.",
                vec![
                    Word::lit("-netdev"),
                    Word::lit(format!(
                        "bridge,id=net0,br={}",
                        network.bridge.as_deref().unwrap_or_default()
                    )),
                    Word::lit("-device"),
                    Word::lit("virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on"),
                ],
            )),
        }
    } else {
        groups.push(group(
            "No network and no passed-through devices in the emulated boot.",
            words(&["-nic", "none"]),
        ));
    }

    groups.push(group(
        "Serial console to the log file; no display, no default devices, and no reset (a confidential guest cannot be reset).",
        vec![
            Word::lit("-chardev"),
            Word::lit("file,id=serial0,path=").var(Var::SerialLog, true),
            Word::lit("-serial"),
            Word::lit("chardev:serial0"),
            Word::lit("-nodefaults"),
            Word::lit("-display"),
            Word::lit("none"),
            Word::lit("-no-reboot"),
        ],
    ));
    groups
}

/// The `tdx-guest` object in JSON `-object` syntax (the quote-generation socket is a
/// SocketAddress, which the key=value syntax cannot express).
pub(crate) fn tdx_guest_json(attributes: u64, port: u32) -> String {
    const SEPT_VE_DISABLE: u64 = 1 << 28;
    let mut object = serde_json::Map::new();
    object.insert("qom-type".into(), "tdx-guest".into());
    object.insert("id".into(), "tdx0".into());
    // Canonical's patched QEMU knows only sept-ve-disable; the whole attribute word goes in only
    // when the model sets other bits too.
    if attributes & !SEPT_VE_DISABLE != 0 {
        object.insert("attributes".into(), attributes.into());
    }
    object.insert(
        "sept-ve-disable".into(),
        (attributes & SEPT_VE_DISABLE != 0).into(),
    );
    object.insert(
        "quote-generation-socket".into(),
        serde_json::json!({"type": "vsock", "cid": "2", "port": port.to_string()}),
    );
    serde_json::Value::Object(object).to_string()
}

/// Concrete paths for an argument vector outside the launch script.
#[derive(Debug, Clone)]
pub struct LaunchPaths<'a> {
    /// The firmware image.
    pub firmware: &'a Path,
    /// The UKI (used in direct-UKI boot).
    pub uki: &'a Path,
    /// The qcow2 disk.
    pub disk: &'a Path,
    /// Where the serial console is written.
    pub serial_log: &'a Path,
}

/// Flattens groups into an argument vector, resolving paths; the C-bit position must be known.
/// Outside the launch script there are no passed-through devices, so the VFIO backend values
/// resolve to nothing.
pub(crate) fn resolve(
    groups: &[ArgGroup],
    paths: &LaunchPaths<'_>,
    cbitpos: Option<u8>,
) -> Vec<OsString> {
    let value = |var: Var| -> OsString {
        match var {
            Var::Firmware => paths.firmware.as_os_str().to_owned(),
            Var::Uki => paths.uki.as_os_str().to_owned(),
            Var::Disk => paths.disk.as_os_str().to_owned(),
            Var::SerialLog => paths.serial_log.as_os_str().to_owned(),
            Var::Cbitpos => cbitpos
                .map(|bit| bit.to_string())
                .unwrap_or_default()
                .into(),
            Var::VfioIommufd | Var::IommufdObject => OsString::new(),
        }
    };
    groups
        .iter()
        .flat_map(|group| {
            group
                .words
                .iter()
                .filter(|word| !word.is_splice())
                .map(|word| word.resolve(&value))
        })
        .collect()
}
