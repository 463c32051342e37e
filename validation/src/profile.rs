//! Node profiles: a validated environment as data (`profiles/<name>.toml`), with explicit
//! tolerances. `--profile NAME|FILE` loads a bundled profile by name or any file with the same keys.

use std::path::Path;

use anyhow::Result;
use cvm_core::error::bad_input;
use serde::{Deserialize, Serialize};

/// The profiles compiled into the binary, by name.
pub const BUNDLED: &[(&str, &str)] = &[("xe7745", include_str!("../profiles/xe7745.toml"))];

/// A validated node type: one section per row of its validated-environment table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    /// Short kebab-case name; the prefix of every check id (`<name>.cpu-model`).
    pub name: String,
    /// One line naming the node type.
    pub title: String,
    /// Server platform and boot mode.
    pub platform: Platform,
    /// CPU model and topology.
    pub cpu: Cpu,
    /// The CPU's trusted execution environment.
    pub tee: Tee,
    /// The GPUs.
    pub gpu: Gpu,
    /// System memory.
    pub memory: Memory,
    /// Local storage.
    pub storage: Storage,
    /// Network adapters, one entry per adapter type.
    #[serde(default)]
    pub nic: Vec<Nic>,
    /// Host operating system.
    pub host_os: HostOs,
    /// Host kernel.
    pub kernel: VersionRule,
    /// Host QEMU.
    pub qemu: VersionRule,
    /// The guest firmware on the host.
    pub ovmf: Ovmf,
}

/// `[platform]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Platform {
    /// dmidecode System Information "Manufacturer".
    pub manufacturer: String,
    /// dmidecode System Information "Product Name".
    pub product: String,
    /// Whether the host must have booted through UEFI.
    pub uefi: bool,
}

/// `[cpu]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cpu {
    /// A substring of lscpu's "Model name", e.g. `AMD EPYC 9555`.
    pub model: String,
    /// The CPU generation, for messages.
    pub generation: String,
    /// Sockets.
    pub sockets: u32,
    /// Physical cores per socket.
    pub cores_per_socket: u32,
    /// Logical CPUs in total.
    pub threads: u32,
}

/// `[tee]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tee {
    /// The TEE, for messages (`sev-snp`).
    pub kind: String,
    /// The /proc/cpuinfo flag the kernel sets when firmware enabled it.
    pub cpuinfo_flag: String,
    /// The kvm_amd module parameter that must read `Y`.
    pub kvm_parameter: String,
}

/// `[gpu]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gpu {
    /// Marketing name, for messages.
    pub name: String,
    /// PCI `vendor:device`, lower-case hex.
    pub pci_id: String,
    /// Exact number of GPUs.
    pub count: u32,
    /// Memory per GPU in GB (not visible to the host while bound to VFIO).
    pub memory_gb: u32,
    /// The host driver every GPU must be bound to.
    pub driver: String,
}

/// `[memory]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Memory {
    /// Usable memory in GiB (MemTotal, the figure `free -g` prints).
    pub usable_gib: u64,
    /// Allowed deviation either way, in percent of `usable-gib`.
    pub tolerance_percent: f64,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Storage {
    /// Minimum number of NVMe controllers (PCI class 0108).
    pub nvme_controllers_min: u32,
}

/// `[[nic]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Nic {
    /// The check id suffix, e.g. `nic-bluefield3`.
    pub id: String,
    /// Marketing name, for messages.
    pub name: String,
    /// PCI `vendor:device`, lower-case hex.
    pub pci_id: String,
    /// Exact number of adapters (PCI slots, not functions).
    pub count: u32,
}

/// `[host-os]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostOs {
    /// os-release `ID`.
    pub id: String,
    /// os-release `VERSION_ID`.
    pub version_id: String,
}

/// A version requirement: below `min` fails, `validated` passes, anything between warns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VersionRule {
    /// The exact version the environment was validated with.
    pub validated: String,
    /// The lowest version accepted (dotted numbers, compared numerically).
    pub min: String,
}

/// `[ovmf]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ovmf {
    /// Absolute path of the firmware image on the host.
    pub path: String,
}

/// Loads `name_or_file`: a bundled profile name, else a file path.
pub fn load(name_or_file: &str) -> Result<Profile> {
    if let Some((_, text)) = BUNDLED.iter().find(|(name, _)| *name == name_or_file) {
        return parse(text, &format!("bundled profile {name_or_file}"));
    }
    let path = Path::new(name_or_file);
    let text = std::fs::read_to_string(path).map_err(|err| {
        bad_input(format!(
            "--profile {name_or_file}: not a bundled profile ({}) and not a readable file ({err}); pass a bundled name or a profile TOML file",
            bundled_names()
        ))
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks a profile; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Profile> {
    let profile: Profile = toml::from_str(text).map_err(|err| {
        let message = err.message().replace('\n', " ");
        let location = err
            .span()
            .filter(|span| !(span.start == 0 && span.end >= text.trim_end().len()))
            .map(|span| {
                let (line, column) = cvm_core::model::line_column(text, span.start);
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        bad_input(format!(
            "{source}{location}: {}; fix the profile (see validation/profiles/xe7745.toml for every key)",
            message.trim()
        ))
    })?;
    profile.check(source)?;
    Ok(profile)
}

impl Profile {
    fn check(&self, source: &str) -> Result<()> {
        let is_id = |value: &str| {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !is_id(&self.name) {
            return Err(bad_input(format!(
                "{source}: name = {:?} is not a kebab-case id; use lower-case letters, digits and '-'",
                self.name
            )));
        }
        let mut pci_ids = vec![("gpu.pci-id", &self.gpu.pci_id)];
        pci_ids.extend(self.nic.iter().map(|nic| ("nic.pci-id", &nic.pci_id)));
        for (key, value) in pci_ids {
            if parse_pci_id(value).is_none() {
                return Err(bad_input(format!(
                    "{source}: {key} = {value:?} is not a PCI id; write vendor:device as 4+4 lower-case hex digits, e.g. 10de:2bb5"
                )));
            }
        }
        for nic in &self.nic {
            if !is_id(&nic.id) {
                return Err(bad_input(format!(
                    "{source}: nic.id = {:?} is not a kebab-case id",
                    nic.id
                )));
            }
        }
        if !(self.memory.tolerance_percent >= 0.0 && self.memory.tolerance_percent < 100.0) {
            return Err(bad_input(format!(
                "{source}: memory.tolerance-percent = {} is out of range; give a percentage in [0, 100)",
                self.memory.tolerance_percent
            )));
        }
        for (key, rule) in [("kernel", &self.kernel), ("qemu", &self.qemu)] {
            for (field, value) in [("validated", &rule.validated), ("min", &rule.min)] {
                if numeric_version(value).is_empty() {
                    return Err(bad_input(format!(
                        "{source}: {key}.{field} = {value:?} has no version number; write e.g. \"9.2.1\""
                    )));
                }
            }
            if compare_versions(&rule.validated, &rule.min) == std::cmp::Ordering::Less {
                return Err(bad_input(format!(
                    "{source}: {key}.validated = {:?} is below {key}.min = {:?}; lower min or fix validated",
                    rule.validated, rule.min
                )));
            }
        }
        if !self.ovmf.path.starts_with('/') {
            return Err(bad_input(format!(
                "{source}: ovmf.path = {:?} is not absolute; give the firmware's path on the host",
                self.ovmf.path
            )));
        }
        Ok(())
    }
}

fn bundled_names() -> String {
    BUNDLED
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `vendor:device` into its two lower-case hex halves.
pub fn parse_pci_id(value: &str) -> Option<(&str, &str)> {
    let (vendor, device) = value.split_once(':')?;
    let is_hex4 = |part: &str| {
        part.len() == 4
            && part
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    (is_hex4(vendor) && is_hex4(device)).then_some((vendor, device))
}

/// The leading dotted numbers of a version string: `6.14.0-37-generic` -> `[6, 14, 0]`,
/// `9.2.1` -> `[9, 2, 1]`.
pub fn numeric_version(value: &str) -> Vec<u64> {
    let mut numbers = Vec::new();
    for part in value.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let Ok(number) = digits.parse() else { break };
        numbers.push(number);
        if digits.len() != part.len() {
            break;
        }
    }
    numbers
}

/// Compares the numeric parts of two versions, missing parts counting as zero.
pub fn compare_versions(left: &str, right: &str) -> std::cmp::Ordering {
    let (left, right) = (numeric_version(left), numeric_version(right));
    let len = left.len().max(right.len());
    let pad = |mut numbers: Vec<u64>| {
        numbers.resize(len, 0);
        numbers
    };
    pad(left).cmp(&pad(right))
}

#[cfg(test)]
mod tests;
