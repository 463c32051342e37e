//! THE SEAM to host-setup's facts bundle reader.
//!
//! Every read of a facts bundle (DESIGN.md §6) by validation goes through the one trait
//! [`NodeFacts`]. [`DirFacts`] is a deliberately minimal implementation over the bundle directory so
//! that validation works before `host_setup::facts` lands; at merge the lead replaces `DirFacts` with
//! an implementation backed by `host_setup::facts::Bundle` (and [`Fact`] with its `Fact<T>`), and
//! nothing else in this crate changes. Keep parsing here minimal: host-setup owns the parsers.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// One fact about the host, as the bundle records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    /// The bundle has it.
    Present(T),
    /// The collector looked and the host does not have it (listed in facts.json `absent`).
    Absent,
    /// Not in the bundle: never collected, unreadable or its command failed (the reason says which).
    NotCollected(String),
}

impl<T> Fact<T> {
    /// Applies `f` to a present value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fact<U> {
        match self {
            Fact::Present(value) => Fact::Present(f(value)),
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }

    /// Chains a step that may itself be missing.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Fact<U>) -> Fact<U> {
        match self {
            Fact::Present(value) => f(value),
            Fact::Absent => Fact::Absent,
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }
}

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

/// One PCI function from `lspci -nnk -D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// `DDDD:BB:DD.F`.
    pub address: String,
    /// Class code, 4 hex digits (e.g. `0302`).
    pub class: String,
    /// `vendor:device`, lower-case hex.
    pub id: String,
    /// The description lspci prints.
    pub description: String,
    /// `Kernel driver in use`, if any.
    pub driver: Option<String>,
}

impl PciDevice {
    /// The physical slot (`DDDD:BB:DD`): every function of one adapter shares it.
    pub fn slot(&self) -> &str {
        self.address
            .rsplit_once('.')
            .map_or(self.address.as_str(), |(slot, _)| slot)
    }
}

/// What validation reads about a node. The lead switches the implementation to host_setup::facts.
pub trait NodeFacts {
    /// dmidecode System Information: (Manufacturer, Product Name).
    fn system_product(&self) -> Fact<(String, String)>;
    /// Whether the host booted through UEFI (`/sys/firmware/efi` exists).
    fn uefi_boot(&self) -> Fact<bool>;
    /// lscpu "Model name".
    fn cpu_model(&self) -> Fact<String>;
    /// lscpu topology.
    fn cpu_topology(&self) -> Fact<CpuTopology>;
    /// The flags of the first processor in /proc/cpuinfo.
    fn cpu_flags(&self) -> Fact<Vec<String>>;
    /// A kvm_amd module parameter's value (`Y`/`N`/number), trimmed.
    fn kvm_amd_parameter(&self, name: &str) -> Fact<String>;
    /// Every PCI function.
    fn pci_devices(&self) -> Fact<Vec<PciDevice>>;
    /// MemTotal in KiB.
    fn mem_total_kib(&self) -> Fact<u64>;
    /// /etc/os-release as key -> unquoted value.
    fn os_release(&self) -> Fact<BTreeMap<String, String>>;
    /// `uname -r`.
    fn kernel_release(&self) -> Fact<String>;
    /// The version from `qemu-system-x86_64 --version` (e.g. `9.2.1`).
    fn qemu_version(&self) -> Fact<String>;
    /// Whether a file exists on the host (an absolute path).
    fn host_file(&self, path: &str) -> Fact<()>;
}

/// The minimal directory-backed implementation (replaced by host_setup::facts at merge).
#[derive(Debug)]
pub struct DirFacts {
    root: PathBuf,
    absent: Vec<String>,
    reasons: BTreeMap<String, String>,
}

/// The part of facts.json this reader needs.
#[derive(Debug, Default, serde::Deserialize)]
struct FactsJson {
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    unreadable: BTreeMap<String, String>,
    #[serde(default)]
    failed: BTreeMap<String, String>,
}

impl DirFacts {
    /// Opens a bundle directory; a missing directory or malformed facts.json is bad input.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        if !root.is_dir() {
            return Err(cvm_core::error::bad_input(format!(
                "--facts {}: not a directory; pass a bundle written by `cargo xtask host collect --out DIR`",
                root.display()
            )));
        }
        let json_path = root.join("facts.json");
        let facts = match std::fs::read_to_string(&json_path) {
            Ok(text) => serde_json::from_str::<FactsJson>(&text).map_err(|err| {
                cvm_core::error::bad_input(format!(
                    "{}: not a facts.json document ({err}); collect the bundle again with `cargo xtask host collect`",
                    json_path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => FactsJson::default(),
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("reading {}", json_path.display())))
            }
        };
        let mut reasons = BTreeMap::new();
        for (path, reason) in facts.unreadable {
            reasons.insert(path, format!("unreadable on the host: {reason}"));
        }
        for (path, reason) in facts.failed {
            reasons.insert(path, format!("its command failed: {reason}"));
        }
        Ok(Self {
            root: root.to_owned(),
            absent: facts.absent,
            reasons,
        })
    }

    /// Reads a bundle-relative file (`cmd/lscpu`, `root/proc/meminfo`).
    fn file(&self, relative: &str) -> Fact<String> {
        if self.absent.iter().any(|path| path == relative) {
            return Fact::Absent;
        }
        match std::fs::read_to_string(self.root.join(relative)) {
            Ok(text) => Fact::Present(text),
            Err(_) => Fact::NotCollected(self.missing_reason(relative)),
        }
    }

    fn exists(&self, relative: &str) -> Fact<()> {
        if self.absent.iter().any(|path| path == relative) {
            Fact::Absent
        } else if self.root.join(relative).exists() {
            Fact::Present(())
        } else {
            Fact::NotCollected(self.missing_reason(relative))
        }
    }

    fn missing_reason(&self, relative: &str) -> String {
        match self.reasons.get(relative) {
            Some(reason) => format!("{relative} is not in the facts bundle ({reason})"),
            None => format!("{relative} was not collected in the facts bundle"),
        }
    }

    /// A parsed value, or NotCollected naming the file when the text has no such value.
    fn parsed<T>(
        &self,
        relative: &str,
        what: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Fact<T> {
        self.file(relative).and_then(|text| match parse(&text) {
            Some(value) => Fact::Present(value),
            None => Fact::NotCollected(format!("{relative} has no {what}")),
        })
    }
}

/// The value after `key:` on the first line that has it (lscpu, meminfo, dmidecode style).
fn colon_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim())
    })
}

impl NodeFacts for DirFacts {
    fn system_product(&self) -> Fact<(String, String)> {
        self.parsed("cmd/dmidecode", "System Information section", |text| {
            let start = text.find("\nSystem Information")?;
            let section = &text[start + 1..];
            let section = section.split("\n\n").next().unwrap_or(section);
            Some((
                colon_value(section, "Manufacturer")?.to_owned(),
                colon_value(section, "Product Name")?.to_owned(),
            ))
        })
    }

    fn uefi_boot(&self) -> Fact<bool> {
        match self.exists("root/sys/firmware/efi") {
            Fact::Present(()) => Fact::Present(true),
            Fact::Absent => Fact::Present(false),
            Fact::NotCollected(reason) => Fact::NotCollected(reason),
        }
    }

    fn cpu_model(&self) -> Fact<String> {
        self.parsed("cmd/lscpu", "\"Model name\"", |text| {
            colon_value(text, "Model name").map(str::to_owned)
        })
    }

    fn cpu_topology(&self) -> Fact<CpuTopology> {
        self.parsed("cmd/lscpu", "CPU topology", |text| {
            let number = |key| colon_value(text, key)?.parse().ok();
            Some(CpuTopology {
                sockets: number("Socket(s)")?,
                cores_per_socket: number("Core(s) per socket")?,
                threads_per_core: number("Thread(s) per core")?,
                cpus: number("CPU(s)")?,
            })
        })
    }

    fn cpu_flags(&self) -> Fact<Vec<String>> {
        self.parsed("root/proc/cpuinfo", "\"flags\" line", |text| {
            Some(
                colon_value(text, "flags")?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            )
        })
    }

    fn kvm_amd_parameter(&self, name: &str) -> Fact<String> {
        self.file(&format!("root/sys/module/kvm_amd/parameters/{name}"))
            .map(|text| text.trim().to_owned())
    }

    fn pci_devices(&self) -> Fact<Vec<PciDevice>> {
        self.file("cmd/lspci").map(|text| parse_lspci(&text))
    }

    fn mem_total_kib(&self) -> Fact<u64> {
        self.parsed("root/proc/meminfo", "MemTotal", |text| {
            colon_value(text, "MemTotal")?
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    }

    fn os_release(&self) -> Fact<BTreeMap<String, String>> {
        self.file("root/etc/os-release").map(|text| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(key, value)| {
                    (
                        key.trim().to_owned(),
                        value.trim().trim_matches('"').to_owned(),
                    )
                })
                .collect()
        })
    }

    fn kernel_release(&self) -> Fact<String> {
        self.parsed("cmd/uname-r", "kernel release", |text| {
            text.lines()
                .next()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
        })
    }

    fn qemu_version(&self) -> Fact<String> {
        self.parsed(
            "cmd/qemu-version",
            "\"QEMU emulator version\" line",
            |text| {
                let rest = text
                    .lines()
                    .find_map(|line| line.strip_prefix("QEMU emulator version "))?;
                rest.split_whitespace().next().map(str::to_owned)
            },
        )
    }

    fn host_file(&self, path: &str) -> Fact<()> {
        self.exists(&format!("root{path}"))
    }
}

/// Parses `lspci -nnk -D`: a device line, then tab-indented detail lines.
fn parse_lspci(text: &str) -> Vec<PciDevice> {
    let mut devices: Vec<PciDevice> = Vec::new();
    for line in text.lines() {
        if line.starts_with('\t') || line.starts_with(' ') {
            if let (Some(device), Some(driver)) = (
                devices.last_mut(),
                line.trim().strip_prefix("Kernel driver in use:"),
            ) {
                device.driver = Some(driver.trim().to_owned());
            }
            continue;
        }
        let Some((address, rest)) = line.split_once(' ') else {
            continue;
        };
        // "3D controller [0302]: NVIDIA Corporation GB202GL [...] [10de:2bb5] (rev a1)"
        let Some((class_part, description)) = rest.split_once("]: ") else {
            continue;
        };
        let class = class_part.rsplit('[').next().unwrap_or_default().to_owned();
        let id = description
            .rmatch_indices('[')
            .find_map(|(start, _)| {
                let candidate = description[start + 1..].split(']').next()?;
                crate::profile::parse_pci_id(candidate).map(|_| candidate.to_owned())
            })
            .unwrap_or_default();
        devices.push(PciDevice {
            address: address.to_owned(),
            class,
            id,
            description: description.to_owned(),
            driver: None,
        });
    }
    devices
}

/// No bundle at all: every fact is not collected, for the given reason.
#[derive(Debug)]
pub struct NoFacts(pub String);

impl NoFacts {
    fn missing<T>(&self) -> Fact<T> {
        Fact::NotCollected(self.0.clone())
    }
}

impl NodeFacts for NoFacts {
    fn system_product(&self) -> Fact<(String, String)> {
        self.missing()
    }
    fn uefi_boot(&self) -> Fact<bool> {
        self.missing()
    }
    fn cpu_model(&self) -> Fact<String> {
        self.missing()
    }
    fn cpu_topology(&self) -> Fact<CpuTopology> {
        self.missing()
    }
    fn cpu_flags(&self) -> Fact<Vec<String>> {
        self.missing()
    }
    fn kvm_amd_parameter(&self, _name: &str) -> Fact<String> {
        self.missing()
    }
    fn pci_devices(&self) -> Fact<Vec<PciDevice>> {
        self.missing()
    }
    fn mem_total_kib(&self) -> Fact<u64> {
        self.missing()
    }
    fn os_release(&self) -> Fact<BTreeMap<String, String>> {
        self.missing()
    }
    fn kernel_release(&self) -> Fact<String> {
        self.missing()
    }
    fn qemu_version(&self) -> Fact<String> {
        self.missing()
    }
    fn host_file(&self, _path: &str) -> Fact<()> {
        self.missing()
    }
}

#[cfg(test)]
mod tests;
