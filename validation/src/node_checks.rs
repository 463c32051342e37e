//! The node-profile checks: one `<profile>.<row>` check per row of a validated-environment table,
//! evaluated over [`NodeFacts`] (host-setup's facts bundle). A fact the bundle lacks is a `skip`
//! naming what is missing; a fact the bundle says the host does not have is a `fail`. Nothing is
//! guessed.

use std::cmp::Ordering;

use cvm_core::check::{CheckResult, Status};

use crate::{
    node_facts::{Fact, LspciDevice, NodeFacts},
    profile::{compare_versions, Profile, VersionRule},
};

/// Evaluates every row of `profile` over `facts`, in the profile's order.
pub fn evaluate(profile: &Profile, facts: &NodeFacts) -> Vec<CheckResult> {
    let name = &profile.name;
    let pci = facts.pci_devices();
    let mut results = vec![
        platform(profile, facts),
        boot_mode(profile, facts),
        cpu_model(profile, facts),
        cpu_topology(profile, facts),
        cpu_tee(profile, facts),
        gpus(profile, &pci),
        gpu_driver(profile, &pci),
        memory(profile, facts),
        storage(profile, &pci),
    ];
    for nic in &profile.nic {
        let check = Row::new(
            name,
            &nic.id,
            format!("{} x {} ({})", nic.count, nic.name, nic.pci_id),
        );
        results.push(match &pci {
            Fact::Present(devices) => {
                let slots = slots_with_id(devices, &nic.pci_id);
                let found = format!(
                    "{} adapter(s) with PCI id {} ({})",
                    slots.len(),
                    nic.pci_id,
                    if slots.is_empty() { "none".to_owned() } else { slots.join(", ") }
                );
                if slots.len() == nic.count as usize {
                    check.pass(found)
                } else {
                    check.fail(
                        format!("{found}; expected {}", nic.count),
                        format!(
                            "install or reseat the {} adapter(s), check that the slot is enabled in the BIOS, and collect the facts again",
                            nic.name
                        ),
                    )
                }
            }
            other => check.missing(other, "the PCI device list"),
        });
    }
    results.push(host_os(profile, facts));
    results.push(version_check(
        Row::new(
            name,
            "host-kernel",
            format!("host kernel {}", profile.kernel.validated),
        ),
        facts.kernel_release(),
        &profile.kernel,
        "the kernel release",
        "install and boot the validated kernel (apt install linux-image-<version>), then reboot",
    ));
    results.push(version_check(
        Row::new(name, "qemu", format!("QEMU {}", profile.qemu.validated)),
        facts.qemu_version(),
        &profile.qemu,
        "the QEMU version",
        "install the validated QEMU (qemu-system-x86 package) on the host",
    ));
    let ovmf = Row::new(name, "ovmf", format!("OVMF at {}", profile.ovmf.path));
    results.push(match facts.host_file(&profile.ovmf.path) {
        Fact::Present(()) => ovmf.pass(format!("{} exists", profile.ovmf.path)),
        Fact::Absent => ovmf.fail(
            format!("{} does not exist on the host", profile.ovmf.path),
            "install the ovmf package (it ships the AmdSev build, OVMF.amdsev.fd)",
        ),
        Fact::NotCollected(reason) => ovmf.skip(reason),
    });
    results
}

/// A check under construction: its id and title.
struct Row {
    id: String,
    title: String,
}

impl Row {
    fn new(profile: &str, row: &str, title: impl Into<String>) -> Self {
        Self {
            id: format!("{profile}.{row}"),
            title: title.into(),
        }
    }

    fn result(self, status: Status, detail: String, remediation: String) -> CheckResult {
        CheckResult::new(self.id, self.title, status, detail, remediation)
    }

    fn pass(self, detail: impl Into<String>) -> CheckResult {
        self.result(Status::Pass, detail.into(), String::new())
    }

    fn warn(self, detail: impl Into<String>, remediation: impl Into<String>) -> CheckResult {
        self.result(Status::Warn, detail.into(), remediation.into())
    }

    fn fail(self, detail: impl Into<String>, remediation: impl Into<String>) -> CheckResult {
        self.result(Status::Fail, detail.into(), remediation.into())
    }

    fn skip(self, reason: impl Into<String>) -> CheckResult {
        self.result(
            Status::Skip,
            reason.into(),
            "collect a complete facts bundle on the node: cargo xtask host collect --out DIR"
                .to_owned(),
        )
    }

    /// The result for a fact that is not present: skip when not collected, fail when absent.
    fn missing<T>(self, fact: &Fact<T>, what: &str) -> CheckResult {
        match fact {
            Fact::NotCollected(reason) => self.skip(reason.clone()),
            _ => self.fail(
                format!("the host has no {what}"),
                format!("make {what} available on the host and collect the facts again"),
            ),
        }
    }
}

fn platform(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want = &profile.platform;
    let row = Row::new(
        &profile.name,
        "platform",
        format!("{} {}", want.manufacturer, want.product),
    );
    match facts.system_product() {
        Fact::Present((manufacturer, product)) => {
            let found = format!("dmidecode reports {manufacturer} {product}");
            if manufacturer == want.manufacturer && product == want.product {
                row.pass(found)
            } else {
                row.fail(
                    format!("{found}; expected {} {}", want.manufacturer, want.product),
                    format!(
                        "run this validation on a {} node, or pass the profile of this node type with --profile",
                        want.product
                    ),
                )
            }
        }
        other => row.missing(&other, "DMI system information"),
    }
}

fn boot_mode(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want_uefi = profile.platform.uefi;
    let mode = |uefi: bool| if uefi { "UEFI" } else { "legacy BIOS" };
    let row = Row::new(
        &profile.name,
        "boot-mode",
        format!("{} boot", mode(want_uefi)),
    );
    match facts.uefi_boot() {
        Fact::Present(uefi) if uefi == want_uefi => {
            row.pass(format!("the host booted in {} mode", mode(uefi)))
        }
        Fact::Present(uefi) => row.fail(
            format!("the host booted in {} mode (/sys/firmware/efi {})", mode(uefi), if uefi { "exists" } else { "is absent" }),
            format!("set the boot mode to {} in the BIOS (System BIOS > Boot Settings) and reinstall the boot loader", mode(want_uefi)),
        ),
        other => row.missing(&other, "boot-mode information"),
    }
}

fn cpu_model(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want = &profile.cpu;
    let row = Row::new(
        &profile.name,
        "cpu-model",
        format!("CPU {} ({})", want.model, want.generation),
    );
    match facts.cpu_model() {
        Fact::Present(model) if model.contains(&want.model) => row.pass(format!("lscpu: {model}")),
        Fact::Present(model) => row.fail(
            format!("lscpu: {model}; expected {} ({})", want.model, want.generation),
            "run this validation on a node with the validated CPU, or use the profile of this node type",
        ),
        other => row.missing(&other, "CPU model"),
    }
}

fn cpu_topology(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want = &profile.cpu;
    let row = Row::new(
        &profile.name,
        "cpu-topology",
        format!(
            "{} sockets, {} cores, {} threads",
            want.sockets,
            want.sockets * want.cores_per_socket,
            want.threads
        ),
    );
    match facts.cpu_topology() {
        Fact::Present(found) => {
            let cores = found.sockets * found.cores_per_socket;
            let detail = format!(
                "lscpu: {} socket(s) x {} cores per socket = {cores} cores, {} threads per core, {} CPUs",
                found.sockets, found.cores_per_socket, found.threads_per_core, found.cpus
            );
            if found.sockets == want.sockets
                && found.cores_per_socket == want.cores_per_socket
                && found.cpus == want.threads
            {
                row.pass(detail)
            } else {
                row.fail(
                    format!(
                        "{detail}; expected {} x {} cores and {} CPUs",
                        want.sockets, want.cores_per_socket, want.threads
                    ),
                    "populate every socket, enable all cores and SMT in the BIOS (Processor Settings), and check that no CPU is offline",
                )
            }
        }
        other => row.missing(&other, "CPU topology"),
    }
}

fn cpu_tee(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let tee = &profile.tee;
    let row = Row::new(
        &profile.name,
        "cpu-tee",
        format!("{} enabled in firmware, the kernel and KVM", tee.kind),
    );
    let flags = match facts.cpu_flags() {
        Fact::Present(flags) => flags,
        other => return row.missing(&other, "/proc/cpuinfo flags"),
    };
    let has_flag = flags.contains(&tee.cpuinfo_flag);
    let parameter = facts.kvm_amd_parameter(&tee.kvm_parameter);
    let kvm_enabled = match &parameter {
        Fact::Present(value) => host_setup::facts::parse::param_enabled(value) == Some(true),
        Fact::Absent => false,
        Fact::NotCollected(reason) => return row.skip(reason.clone()),
    };
    let parameter_text = match &parameter {
        Fact::Present(value) => format!("kvm_amd.{} = {value}", tee.kvm_parameter),
        _ => format!("kvm_amd has no {} parameter", tee.kvm_parameter),
    };
    let detail = format!(
        "cpuinfo flag {}: {}; {parameter_text}",
        tee.cpuinfo_flag,
        if has_flag { "present" } else { "missing" }
    );
    match (has_flag, kvm_enabled) {
        (true, true) => row.pass(detail),
        (false, _) => row.fail(
            detail,
            format!(
                "enable {} in the BIOS (Processor Settings: SEV-SNP, SNP memory coverage, IOMMU) and boot a kernel with {} host support",
                tee.kind, tee.kind
            ),
        ),
        (true, false) => row.fail(
            detail,
            format!(
                "load kvm_amd with {}=1 (a file in /etc/modprobe.d) on a kernel with {} host support, then reboot",
                tee.kvm_parameter, tee.kind
            ),
        ),
    }
}

fn gpus_of<'a>(devices: &'a [LspciDevice], pci_id: &str) -> Vec<&'a LspciDevice> {
    devices
        .iter()
        .filter(|device| device.pci_id() == pci_id)
        .collect()
}

fn gpus(profile: &Profile, pci: &Fact<Vec<LspciDevice>>) -> CheckResult {
    let want = &profile.gpu;
    let row = Row::new(
        &profile.name,
        "gpus",
        format!(
            "{} x {} ({}, {} GB each)",
            want.count, want.name, want.pci_id, want.memory_gb
        ),
    );
    let Fact::Present(devices) = pci else {
        return row.missing(pci, "the PCI device list");
    };
    let found = gpus_of(devices, &want.pci_id);
    let detail = format!(
        "{} GPU(s) with PCI id {}{}; the {} GB per GPU is not visible to the host while the GPUs are bound to {}",
        found.len(),
        want.pci_id,
        list(found.iter().map(|device| device.bdf.as_str())),
        want.memory_gb,
        want.driver
    );
    if found.len() == want.count as usize {
        row.pass(detail)
    } else {
        row.fail(
            format!("{detail}; expected {}", want.count),
            "reseat or replace the missing GPU(s), check that their slots are enabled in the BIOS and that lspci lists them, then collect the facts again",
        )
    }
}

fn gpu_driver(profile: &Profile, pci: &Fact<Vec<LspciDevice>>) -> CheckResult {
    let want = &profile.gpu;
    let row = Row::new(
        &profile.name,
        "gpu-driver",
        format!("every GPU bound to {}", want.driver),
    );
    let Fact::Present(devices) = pci else {
        return row.missing(pci, "the PCI device list");
    };
    let found = gpus_of(devices, &want.pci_id);
    if found.is_empty() {
        return row.fail(
            format!("no GPU with PCI id {} was found", want.pci_id),
            format!("install the GPUs and bind them to {}", want.driver),
        );
    }
    let wrong: Vec<String> = found
        .iter()
        .filter(|device| device.driver.as_deref() != Some(want.driver.as_str()))
        .map(|device| {
            format!(
                "{} on {}",
                device.bdf,
                device.driver.as_deref().unwrap_or("no driver")
            )
        })
        .collect();
    if wrong.is_empty() {
        row.pass(format!("all {} GPU(s) use {}", found.len(), want.driver))
    } else {
        row.fail(
            format!("{} of {} GPU(s) not on {}: {}", wrong.len(), found.len(), want.driver, wrong.join(", ")),
            format!(
                "bind the GPUs to {} (vfio-pci.ids={} on the kernel command line and blacklist nouveau/nvidia): cargo xtask host plan shows the steps",
                want.driver, want.pci_id
            ),
        )
    }
}

fn memory(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want = &profile.memory;
    let row = Row::new(
        &profile.name,
        "memory",
        format!(
            "~{} GiB usable memory (± {} %)",
            want.usable_gib, want.tolerance_percent
        ),
    );
    match facts.mem_total_kib() {
        Fact::Present(kib) => {
            let gib = kib as f64 / (1024.0 * 1024.0);
            let deviation = (gib - want.usable_gib as f64) / want.usable_gib as f64 * 100.0;
            let detail = format!(
                "MemTotal {kib} kB = {gib:.1} GiB, {deviation:+.2} % from {} GiB",
                want.usable_gib
            );
            if deviation.abs() <= want.tolerance_percent {
                row.pass(detail)
            } else {
                row.fail(
                    format!("{detail}, outside ± {} %", want.tolerance_percent),
                    "check that every DIMM is seated and detected (iDRAC hardware inventory), that no memory is reserved by a mem= or hugepage setting, then collect the facts again",
                )
            }
        }
        other => row.missing(&other, "MemTotal"),
    }
}

fn storage(profile: &Profile, pci: &Fact<Vec<LspciDevice>>) -> CheckResult {
    let min = profile.storage.nvme_controllers_min;
    let row = Row::new(
        &profile.name,
        "storage",
        format!("at least {min} NVMe controller(s)"),
    );
    let Fact::Present(devices) = pci else {
        return row.missing(pci, "the PCI device list");
    };
    let nvme: Vec<&str> = devices
        .iter()
        .filter(|device| device.class == "0108")
        .map(|device| device.bdf.as_str())
        .collect();
    let detail = format!(
        "{} NVMe controller(s){}",
        nvme.len(),
        list(nvme.iter().copied())
    );
    if nvme.len() >= min as usize {
        row.pass(detail)
    } else {
        row.fail(
            format!("{detail}; expected at least {min}"),
            "install the NVMe drives of the validated configuration and check that the BIOS exposes them (not behind a RAID controller)",
        )
    }
}

fn host_os(profile: &Profile, facts: &NodeFacts) -> CheckResult {
    let want = &profile.host_os;
    let row = Row::new(
        &profile.name,
        "host-os",
        format!("{} {}", want.id, want.version_id),
    );
    match facts.os_release() {
        Fact::Present(release) => {
            let (id, version) = (release.id.as_str(), release.version_id.as_str());
            let detail = format!("os-release: ID={id} VERSION_ID={version}");
            if id == want.id && version == want.version_id {
                row.pass(detail)
            } else {
                row.fail(
                    format!("{detail}; expected {} {}", want.id, want.version_id),
                    format!("install {} {} on the host", want.id, want.version_id),
                )
            }
        }
        other => row.missing(&other, "/etc/os-release"),
    }
}

fn version_check(
    row: Row,
    found: Fact<String>,
    rule: &VersionRule,
    what: &str,
    remediation: &str,
) -> CheckResult {
    match found {
        Fact::Present(version) => {
            if version == rule.validated {
                row.pass(format!("{version} (the validated version)"))
            } else if compare_versions(&version, &rule.min) == Ordering::Less {
                row.fail(
                    format!("{version} is older than the minimum {}", rule.min),
                    remediation,
                )
            } else {
                row.warn(
                    format!(
                        "{version} is not the validated {} (minimum {})",
                        rule.validated, rule.min
                    ),
                    format!("{remediation}, or record a validation of {version}"),
                )
            }
        }
        other => row.missing(&other, what),
    }
}

/// ` (a, b, c)` or nothing for an empty list.
fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(" ({})", items.join(", "))
    }
}

/// The distinct slots holding functions with PCI id `pci_id`, in order.
fn slots_with_id(devices: &[LspciDevice], pci_id: &str) -> Vec<String> {
    let mut slots: Vec<String> = Vec::new();
    for device in devices.iter().filter(|device| device.pci_id() == pci_id) {
        if !slots.iter().any(|slot| slot == device.slot()) {
            slots.push(device.slot().to_owned());
        }
    }
    slots
}

#[cfg(test)]
mod tests;
