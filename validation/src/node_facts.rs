//! The facts the profile rows read, over host-setup's facts bundle (DESIGN.md §6).
//!
//! Validation has no bundle reader or parser of its own: [`NodeFacts`] opens nothing and parses
//! nothing itself; it asks `host_setup::facts::Bundle` for a file and hands the text to the parser
//! in `host_setup::facts::parse`. What it adds is the profile's rule for a file that is present but
//! lacks the value (an `lscpu` without a topology): that is [`Fact::NotCollected`] naming the file,
//! never a guess.

use std::collections::BTreeSet;

use host_setup::facts::parse;
pub use host_setup::facts::{
    parse::{LspciDevice, OsRelease},
    Bundle, Fact,
};

/// CPU topology as lscpu prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// `Socket(s)`.
    pub sockets: u32,
    /// `Core(s) per socket`.
    pub cores_per_socket: u32,
    /// `Thread(s) per core`.
    pub threads_per_core: u32,
    /// `CPU(s)`: logical CPUs.
    pub cpus: u32,
}

/// What the profile rows read about a node, from one facts bundle.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    bundle: &'a Bundle,
}

impl<'a> NodeFacts<'a> {
    /// The facts of `bundle`.
    pub fn new(bundle: &'a Bundle) -> Self {
        Self { bundle }
    }

    /// The parsed text of a bundle file, or `NotCollected` naming the file when the text has no
    /// such value.
    fn parsed<T>(&self, rel: &str, what: &str, parse: impl FnOnce(&str) -> Option<T>) -> Fact<T> {
        self.bundle.text(rel).and_then(|text| match parse(&text) {
            Some(value) => Fact::Present(value),
            None => Fact::NotCollected(format!("{rel} has no {what}")),
        })
    }

    /// dmidecode System Information: (Manufacturer, Product Name).
    pub fn system_product(&self) -> Fact<(String, String)> {
        self.parsed("cmd/dmidecode", "System Information section", |text| {
            let dmi = parse::dmidecode(text);
            (!dmi.manufacturer.is_empty() && !dmi.product_name.is_empty())
                .then_some((dmi.manufacturer, dmi.product_name))
        })
    }

    /// Whether the host booted through UEFI (`/sys/firmware/efi` exists; absent means legacy).
    pub fn uefi_boot(&self) -> Fact<bool> {
        match self.bundle.root_exists("/sys/firmware/efi") {
            Fact::Present(()) => Fact::Present(true),
            Fact::Absent => Fact::Present(false),
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }

    /// lscpu "Model name".
    pub fn cpu_model(&self) -> Fact<String> {
        self.parsed("cmd/lscpu", "\"Model name\"", |text| {
            Some(parse::lscpu(text).model_name).filter(|name| !name.is_empty())
        })
    }

    /// lscpu topology.
    pub fn cpu_topology(&self) -> Fact<CpuTopology> {
        self.parsed("cmd/lscpu", "CPU topology", |text| {
            let lscpu = parse::lscpu(text);
            Some(CpuTopology {
                sockets: lscpu.sockets?,
                cores_per_socket: lscpu.cores_per_socket?,
                threads_per_core: lscpu.threads_per_core?,
                cpus: lscpu.cpus?,
            })
        })
    }

    /// The flags of the first processor in /proc/cpuinfo.
    pub fn cpu_flags(&self) -> Fact<BTreeSet<String>> {
        self.parsed("root/proc/cpuinfo", "\"flags\" line", |text| {
            Some(parse::cpuinfo(text).flags).filter(|flags| !flags.is_empty())
        })
    }

    /// A kvm_amd module parameter's value (`Y`/`N`/number), trimmed.
    pub fn kvm_amd_parameter(&self, name: &str) -> Fact<String> {
        self.bundle
            .root_file(&format!("/sys/module/kvm_amd/parameters/{name}"))
            .map(|text| text.trim().to_owned())
    }

    /// Every PCI function `lspci -nnk -D` listed.
    pub fn pci_devices(&self) -> Fact<Vec<LspciDevice>> {
        self.bundle.cmd("lspci").map(|text| parse::lspci(&text))
    }

    /// MemTotal in KiB.
    pub fn mem_total_kib(&self) -> Fact<u64> {
        self.parsed("root/proc/meminfo", "MemTotal", |text| {
            parse::meminfo(text).get("MemTotal").copied()
        })
    }

    /// /etc/os-release.
    pub fn os_release(&self) -> Fact<OsRelease> {
        self.bundle
            .root_file("/etc/os-release")
            .map(|text| parse::os_release(&text))
    }

    /// `uname -r` as printed (e.g. `6.14.0-37-generic`), when it starts with a version.
    pub fn kernel_release(&self) -> Fact<String> {
        self.parsed("cmd/uname-r", "kernel release", |text| {
            let release = text.trim();
            parse::kernel_release(release).map(|_| release.to_owned())
        })
    }

    /// The version from `qemu-system-x86_64 --version` (e.g. `9.2.1`).
    pub fn qemu_version(&self) -> Fact<String> {
        self.parsed(
            "cmd/qemu-version",
            "\"QEMU emulator version\" line",
            |text| parse::qemu_version(text).map(|version| version.to_string()),
        )
    }

    /// Whether a file exists on the host (an absolute path).
    pub fn host_file(&self, path: &str) -> Fact<()> {
        self.bundle.root_exists(path)
    }
}

#[cfg(test)]
mod tests;
