//! Parsers for what the collector stores: pure functions over the text the real tools print.
//!
//! None of them panics on any input: unknown or malformed lines are ignored, and a value that
//! cannot be found is `None` (the check that needs it then skips or fails with a reason).
//! Validation calls them too, for the XE7745 profile: CPU model, sockets, cores and threads
//! ([`lscpu`], [`cpuinfo`]), memory ([`meminfo`]), GPUs, NICs and NVMe drives by PCI id and
//! class ([`lspci`]), OS release ([`os_release`]), kernel ([`kernel_release`]), QEMU
//! ([`qemu_version`]) and the platform ([`dmidecode`]); UEFI boot is
//! `Bundle::root_exists("/sys/firmware/efi")`.

use std::collections::{BTreeMap, BTreeSet};

use super::CpuidLeaf;

/// Parses a hex number with or without `0x`, surrounded by whitespace.
pub fn hex_u64(text: &str) -> Option<u64> {
    let word = text.trim();
    let digits = word
        .strip_prefix("0x")
        .or_else(|| word.strip_prefix("0X"))
        .unwrap_or(word);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parses a `cpuid/<leaf>` file: four hex words `eax ebx ecx edx`.
pub fn cpuid_leaf(text: &str) -> Option<CpuidLeaf> {
    let words: Vec<u32> = text
        .split_whitespace()
        .map(|word| hex_u64(word).and_then(|value| u32::try_from(value).ok()))
        .collect::<Option<_>>()?;
    match words[..] {
        [eax, ebx, ecx, edx] => Some(CpuidLeaf { eax, ebx, ecx, edx }),
        _ => None,
    }
}

/// What /proc/cpuinfo says about the first processor, plus the processor count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `vendor_id`, e.g. `AuthenticAMD`.
    pub vendor_id: String,
    /// `model name`.
    pub model_name: String,
    /// `cpu family` (decimal).
    pub family: Option<u32>,
    /// `model` (decimal).
    pub model: Option<u32>,
    /// `flags`.
    pub flags: BTreeSet<String>,
    /// How many `processor` entries the file lists.
    pub processors: usize,
}

/// Parses /proc/cpuinfo.
pub fn cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut first = true;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            info.processors += 1;
            first = info.processors == 1;
            continue;
        }
        if !first {
            continue;
        }
        match key {
            "vendor_id" => info.vendor_id = value.to_owned(),
            "model name" => info.model_name = value.to_owned(),
            "cpu family" => info.family = value.parse().ok(),
            "model" => info.model = value.parse().ok(),
            "flags" => info.flags = value.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    info
}

/// `key: value` lines of lscpu, /proc/meminfo-like files and similar.
pub fn colon_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

/// What `lscpu` prints that the checks and profiles use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lscpu {
    /// `Model name`.
    pub model_name: String,
    /// `Vendor ID`.
    pub vendor_id: String,
    /// `CPU(s)`.
    pub cpus: Option<u32>,
    /// `Socket(s)`.
    pub sockets: Option<u32>,
    /// `Core(s) per socket`.
    pub cores_per_socket: Option<u32>,
    /// `Thread(s) per core`.
    pub threads_per_core: Option<u32>,
    /// `Virtualization` (e.g. `AMD-V`, `VT-x`).
    pub virtualization: String,
    /// `Hypervisor vendor` (empty on bare metal).
    pub hypervisor_vendor: String,
}

/// Parses `lscpu`.
pub fn lscpu(text: &str) -> Lscpu {
    let fields = colon_fields(text);
    let text_of = |key: &str| fields.get(key).cloned().unwrap_or_default();
    let number = |key: &str| fields.get(key).and_then(|value| value.parse().ok());
    Lscpu {
        model_name: text_of("Model name"),
        vendor_id: text_of("Vendor ID"),
        cpus: number("CPU(s)"),
        sockets: number("Socket(s)"),
        cores_per_socket: number("Core(s) per socket"),
        threads_per_core: number("Thread(s) per core"),
        virtualization: text_of("Virtualization"),
        hypervisor_vendor: text_of("Hypervisor vendor"),
    }
}

/// Parses /proc/meminfo into KiB values (`MemTotal` -> 1584…).
pub fn meminfo(text: &str) -> BTreeMap<String, u64> {
    colon_fields(text)
        .into_iter()
        .filter_map(|(key, value)| {
            let number = value.split_whitespace().next()?.parse().ok()?;
            Some((key, number))
        })
        .collect()
}

/// The fields of an os-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `ubuntu`.
    pub id: String,
    /// `VERSION_ID`, e.g. `25.10`.
    pub version_id: String,
    /// `VERSION_CODENAME`, e.g. `questing`.
    pub codename: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
}

/// Parses an os-release file (shell-style `KEY=value` lines, values optionally quoted).
pub fn os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_owned();
        match key.trim() {
            "ID" => release.id = value,
            "VERSION_ID" => release.version_id = value,
            "VERSION_CODENAME" => release.codename = value,
            "PRETTY_NAME" => release.pretty_name = value,
            _ => {}
        }
    }
    release
}

/// A dotted version such as a kernel release or a QEMU version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when not given).
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses the leading `A.B[.C]` of `text` (`6.17.0-6-generic` -> 6.17.0).
    pub fn parse_prefix(text: &str) -> Option<Version> {
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let mut parts = text[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(part) if !part.is_empty() => part.parse().ok()?,
            _ => 0,
        };
        Some(Version::new(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `uname -r` (`6.17.0-6-generic`).
pub fn kernel_release(text: &str) -> Option<Version> {
    Version::parse_prefix(text.trim())
}

/// Parses `qemu-system-x86_64 --version`
/// (`QEMU emulator version 9.2.1 (Debian 1:9.2.1+ds-1ubuntu5)`).
pub fn qemu_version(text: &str) -> Option<Version> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("QEMU emulator version ")?;
        Version::parse_prefix(rest)
    })
}

/// Parses `qemu-system-x86_64 -object help` into the object type names.
pub fn qemu_objects(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| line.starts_with(' ') || line.starts_with('\t'))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// One device of `lspci -nnk -D`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LspciDevice {
    /// Domain-qualified address, e.g. `0000:41:00.0`.
    pub bdf: String,
    /// Class description, e.g. `3D controller`.
    pub class_name: String,
    /// Class code, e.g. `0302`.
    pub class: String,
    /// Vendor id, e.g. `10de`.
    pub vendor: String,
    /// Device id, e.g. `2bb5`.
    pub device: String,
    /// The description between the class and the ids.
    pub description: String,
    /// `Kernel driver in use`.
    pub driver: Option<String>,
    /// `Kernel modules`.
    pub modules: Vec<String>,
}

impl LspciDevice {
    /// `vendor:device` in lower-case hex (e.g. `10de:2bb5`).
    pub fn pci_id(&self) -> String {
        format!("{}:{}", self.vendor, self.device)
    }

    /// The physical slot (`DDDD:BB:DD`): every function of one adapter shares it.
    pub fn slot(&self) -> &str {
        self.bdf
            .rsplit_once('.')
            .map_or(&self.bdf, |(slot, _)| slot)
    }
}

/// Parses `lspci -nnk -D`.
pub fn lspci(text: &str) -> Vec<LspciDevice> {
    let mut devices: Vec<LspciDevice> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            let Some(device) = devices.last_mut() else {
                continue;
            };
            if let Some((key, value)) = line.trim().split_once(':') {
                match key.trim() {
                    "Kernel driver in use" => device.driver = Some(value.trim().to_owned()),
                    "Kernel modules" => {
                        device.modules = value
                            .split(',')
                            .map(|module| module.trim().to_owned())
                            .filter(|module| !module.is_empty())
                            .collect()
                    }
                    _ => {}
                }
            }
            continue;
        }
        if let Some(device) = lspci_header(line) {
            devices.push(device);
        }
    }
    devices
}

/// `0000:41:00.0 3D controller [0302]: NVIDIA Corporation GB202GL [RTX PRO 6000 …] [10de:2bb5] (rev a1)`.
fn lspci_header(line: &str) -> Option<LspciDevice> {
    let (bdf, rest) = line.split_once(' ')?;
    if !is_bdf(bdf) {
        return None;
    }
    let (class_part, description) = rest.split_once(": ")?;
    let (class_name, class) = bracketed_suffix(class_part.trim())?;
    let without_rev = match description.rfind(" (rev ") {
        Some(index) => &description[..index],
        None => description,
    };
    let (description, ids) = bracketed_suffix(without_rev.trim())?;
    let (vendor, device) = ids.split_once(':')?;
    Some(LspciDevice {
        bdf: bdf.to_owned(),
        class_name: class_name.to_owned(),
        class: class.to_owned(),
        vendor: vendor.to_ascii_lowercase(),
        device: device.to_ascii_lowercase(),
        description: description.to_owned(),
        driver: None,
        modules: Vec::new(),
    })
}

/// Splits `name [inner]` into (`name`, `inner`) using the last bracket pair.
fn bracketed_suffix(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_suffix(']')?;
    let open = inner.rfind('[')?;
    Some((inner[..open].trim_end(), &inner[open + 1..]))
}

/// True for a domain-qualified PCI address `dddd:bb:dd.f` (hex digits).
pub fn is_bdf(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 12
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b':',
            10 => *byte == b'.',
            11 => (b'0'..=b'7').contains(byte),
            _ => byte.is_ascii_hexdigit(),
        })
}

/// Finds every PCI address in `line`.
fn bdfs_in(line: &str) -> Vec<String> {
    let bytes = line.as_bytes();
    (0..bytes.len().saturating_sub(11))
        .filter(|start| line.is_char_boundary(*start) && line.is_char_boundary(start + 12))
        .map(|start| &line[start..start + 12])
        .filter(|candidate| is_bdf(candidate))
        .map(|bdf| bdf.to_ascii_lowercase())
        .collect()
}

/// An SEV or SEV-SNP firmware API version as dmesg prints it (`SEV-SNP API:1.55 build:21`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirmwareVersion {
    /// API major.
    pub major: u32,
    /// API minor.
    pub minor: u32,
    /// Build number.
    pub build: u32,
}

/// An ASID range from kvm_amd's `SEV-SNP enabled (ASIDs 1 - 99)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsidRange {
    /// The first ASID.
    pub first: u32,
    /// The last ASID.
    pub last: u32,
}

/// What dmesg says about SEV, SEV-SNP, TDX and the IOMMU. Lines may come in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmesg {
    /// `ccp …: SEV-SNP API:1.55 build:21`.
    pub snp_api: Option<FirmwareVersion>,
    /// `ccp …: SEV API:1.55 build:21`.
    pub sev_api: Option<FirmwareVersion>,
    /// The text after `SEV-SNP: RMP table physical range` / `… address`.
    pub rmp_table: Option<String>,
    /// `SEV-SNP: Memory for the RMP table has not been reserved by BIOS`.
    pub rmp_not_reserved: bool,
    /// `SEV-SNP: Segmented RMP using 64GB segments` (Zen 5 firmware).
    pub rmp_segmented: bool,
    /// `kvm_amd: SEV-SNP enabled (ASIDs 1 - 99)`.
    pub snp_asids: Option<AsidRange>,
    /// `kvm_amd: SEV-ES enabled (ASIDs 1 - 99)`.
    pub sev_es_asids: Option<AsidRange>,
    /// kvm_amd lines saying SEV, SEV-ES or SEV-SNP is disabled (`SEV-ES disabled (ASIDs 0 - 0)`).
    pub sev_disabled: Vec<String>,
    /// Lines saying the PSP failed to initialise SEV or SNP (`SEV: failed to INIT`, `DF_FLUSH failed`).
    pub sev_failures: Vec<String>,
    /// Lines where the IOMMU driver refuses SNP (`SNP: IOMMU … SNP cannot be supported`).
    pub snp_iommu_refusals: Vec<String>,
    /// `AMD-Vi: IOMMU SNP support enabled`.
    pub iommu_snp_enabled: bool,
    /// Any `AMD-Vi:` or `DMAR:` line (an IOMMU driver is active).
    pub iommu_driver: bool,
    /// `virt/tdx: module initialized`.
    pub tdx_initialized: bool,
    /// The TDX module version line, when printed.
    pub tdx_module: Option<String>,
    /// TDX failure lines (`virt/tdx: module initialization failed (-5)`, `SEAMCALL … failed`).
    pub tdx_failures: Vec<String>,
}

/// Strips a `[    5.123456] ` timestamp and a `<6>` level prefix.
fn dmesg_message(line: &str) -> &str {
    let mut message = line.trim_start();
    if message.starts_with('<') {
        if let Some(end) = message.find('>') {
            message = &message[end + 1..];
        }
    }
    if message.starts_with('[') {
        if let Some(end) = message.find(']') {
            message = &message[end + 1..];
        }
    }
    message.trim()
}

/// Parses `A.B build:C` after `API:`.
fn api_version(message: &str, marker: &str) -> Option<FirmwareVersion> {
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    let version_text = rest.split_whitespace().next()?;
    let (major, minor) = version_text.split_once('.')?;
    let build = rest
        .split_once("build:")
        .and_then(|(_, after)| {
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0);
    Some(FirmwareVersion {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        build,
    })
}

/// Parses `(ASIDs 1 - 99)`.
fn asid_range(message: &str) -> Option<AsidRange> {
    let start = message.find("(ASIDs ")? + "(ASIDs ".len();
    let inner = message[start..].split(')').next()?;
    let (first, last) = inner.split_once('-')?;
    Some(AsidRange {
        first: first.trim().parse().ok()?,
        last: last.trim().parse().ok()?,
    })
}

/// Parses dmesg (or `journalctl -k`) output; tolerant of any order and of binary noise.
pub fn dmesg(text: &str) -> Dmesg {
    let mut facts = Dmesg::default();
    for line in text.lines() {
        let message = dmesg_message(line);
        if message.contains("SEV-SNP API:") {
            facts.snp_api = api_version(message, "SEV-SNP API:").or(facts.snp_api);
        } else if message.contains("SEV API:") {
            facts.sev_api = api_version(message, "SEV API:").or(facts.sev_api);
        }
        if let Some(rest) = message
            .split_once("RMP table physical range")
            .or_else(|| message.split_once("RMP table physical address"))
            .map(|(_, rest)| rest)
        {
            facts.rmp_table = Some(rest.trim().to_owned());
        }
        if message.contains("Segmented RMP") {
            facts.rmp_segmented = true;
        }
        if message.contains("Memory for the RMP table has not been reserved by BIOS") {
            facts.rmp_not_reserved = true;
        }
        if message.contains("SEV-SNP enabled (ASIDs") {
            facts.snp_asids = asid_range(message);
        }
        if message.contains("SEV-ES enabled (ASIDs") {
            facts.sev_es_asids = asid_range(message);
        }
        let sev_line = message.contains("SEV") || message.contains("SNP");
        if sev_line && message.contains(" disabled (ASIDs") {
            facts.sev_disabled.push(message.to_owned());
        }
        if sev_line
            && (message.contains("failed to INIT")
                || message.contains("SNP initialization failed")
                || message.contains("DF_FLUSH failed"))
        {
            facts.sev_failures.push(message.to_owned());
        }
        if message.contains("SNP: IOMMU") && message.contains("SNP cannot be supported")
            || message.contains("SNP: IOMMU SNP feature not enabled")
        {
            facts.snp_iommu_refusals.push(message.to_owned());
        }
        if message.contains("AMD-Vi:") && message.contains("SNP support enabled") {
            facts.iommu_snp_enabled = true;
        }
        if message.starts_with("AMD-Vi:")
            || message.contains(" AMD-Vi:")
            || message.starts_with("DMAR:")
            || message.contains(" DMAR:")
        {
            facts.iommu_driver = true;
        }
        if let Some(rest) = message.strip_prefix("virt/tdx:") {
            let rest = rest.trim();
            if rest == "module initialized" || rest.starts_with("module initialized") {
                facts.tdx_initialized = true;
            } else if rest.starts_with("TDX module") || rest.starts_with("TDX-Module") {
                facts.tdx_module = Some(rest.to_owned());
            } else if rest.contains("failed") {
                facts.tdx_failures.push(message.to_owned());
            }
        }
    }
    facts
}

/// The memlock limit from `ulimit -l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    /// `unlimited`.
    Unlimited,
    /// A limit in KiB.
    Kib(u64),
}

/// Parses `ulimit -l` (`unlimited` or a number of KiB).
pub fn ulimit_l(text: &str) -> Option<Memlock> {
    let word = text.trim();
    if word == "unlimited" {
        return Some(Memlock::Unlimited);
    }
    word.parse().ok().map(Memlock::Kib)
}

/// One device's mode from gpu-admin-tools (`… GPU 0000:41:00.0 … CC mode is on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMode {
    /// The device's PCI address.
    pub bdf: String,
    /// The mode word: `on`, `off`, `devtools`, `invalid-devtools-only-fix-by-setting-cc-mode`, …
    pub mode: String,
}

/// Parses `nvidia_gpu_tools.py --query-cc-mode 2>&1` (`marker` = `CC mode is`) or
/// `--query-ppcie-mode 2>&1` (`marker` = `PPCIe mode is`): one entry per device line.
pub fn gpu_modes(text: &str, marker: &str) -> Vec<GpuMode> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(marker)?;
            let bdf = bdfs_in(before).into_iter().last()?;
            let mode = after.split_whitespace().next()?.trim_end_matches('.');
            Some(GpuMode {
                bdf,
                mode: mode.to_owned(),
            })
        })
        .collect()
}

/// Parses `gpu-cc-mode` output.
pub fn gpu_cc_modes(text: &str) -> Vec<GpuMode> {
    gpu_modes(text, "CC mode is")
}

/// Parses `gpu-ppcie-mode` output.
pub fn gpu_ppcie_modes(text: &str) -> Vec<GpuMode> {
    gpu_modes(text, "PPCIe mode is")
}

/// Parses `lsmod` into module names (the header line is skipped).
pub fn lsmod(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip_while(|line| line.starts_with("Module"))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "Module")
        .map(str::to_owned)
        .collect()
}

/// Kernel command-line parameters in order: `iommu=pt` -> (`iommu`, Some(`pt`)).
pub fn cmdline(text: &str) -> Vec<(String, Option<String>)> {
    text.split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
            None => (word.to_owned(), None),
        })
        .collect()
}

/// Parses a CPU list such as `0-255` or `0-3,8,10-11` into the CPU count; empty text is zero.
pub fn cpu_list_len(text: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in text
        .trim()
        .split(',')
        .filter(|part| !part.trim().is_empty())
    {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?),
            None => {
                let single = part.parse::<u32>().ok()?;
                (single, single)
            }
        };
        count = count.checked_add(last.checked_sub(first)?.checked_add(1)?)?;
    }
    Some(count)
}

/// A kvm module parameter is on when it reads `Y` or `1`.
pub fn param_enabled(text: &str) -> Option<bool> {
    match text.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// The system identity from `dmidecode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    /// System Information / Manufacturer (e.g. `Dell Inc.`).
    pub manufacturer: String,
    /// System Information / Product Name (e.g. `PowerEdge XE7745`).
    pub product_name: String,
    /// BIOS Information / Version.
    pub bios_version: String,
    /// BIOS Information lists `UEFI is supported`.
    pub uefi_supported: bool,
}

/// Parses `dmidecode` (all types).
pub fn dmidecode(text: &str) -> Dmi {
    let mut dmi = Dmi::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            section = line.trim();
            continue;
        }
        let trimmed = line.trim();
        match section {
            "System Information" => {
                if let Some(value) = trimmed.strip_prefix("Manufacturer:") {
                    dmi.manufacturer = value.trim().to_owned();
                } else if let Some(value) = trimmed.strip_prefix("Product Name:") {
                    dmi.product_name = value.trim().to_owned();
                }
            }
            "BIOS Information" => {
                if let Some(value) = trimmed.strip_prefix("Version:") {
                    dmi.bios_version = value.trim().to_owned();
                } else if trimmed == "UEFI is supported" {
                    dmi.uefi_supported = true;
                }
            }
            _ => {}
        }
    }
    dmi
}

/// A Redfish BIOS attribute value, normalized: numbers may come as integers or strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BiosValue {
    /// A string value (e.g. `Enabled`).
    Text(String),
    /// An integer, or a string holding only an integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Anything else (null, objects), kept as JSON text.
    Other(String),
}

impl BiosValue {
    /// The value as an integer, when it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            BiosValue::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// True when the value says enabled (`Enabled`, `On`, `true`).
    pub fn is_enabled(&self) -> bool {
        match self {
            BiosValue::Text(text) => {
                ["enabled", "on"].contains(&text.to_ascii_lowercase().as_str())
            }
            BiosValue::Bool(value) => *value,
            _ => false,
        }
    }
}

impl std::fmt::Display for BiosValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BiosValue::Text(text) | BiosValue::Other(text) => f.write_str(text),
            BiosValue::Int(value) => write!(f, "{value}"),
            BiosValue::Bool(value) => write!(f, "{value}"),
        }
    }
}

/// Reads the `Attributes` object of a Redfish `Bios` document; `None` when it has none.
pub fn bios_attributes(document: &serde_json::Value) -> Option<BTreeMap<String, BiosValue>> {
    let attributes = document.get("Attributes")?.as_object()?;
    Some(
        attributes
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    serde_json::Value::String(text) => match text.trim().parse::<i64>() {
                        Ok(number) => BiosValue::Int(number),
                        Err(_) => BiosValue::Text(text.clone()),
                    },
                    serde_json::Value::Number(number) => match number.as_i64() {
                        Some(number) => BiosValue::Int(number),
                        None => BiosValue::Other(number.to_string()),
                    },
                    serde_json::Value::Bool(flag) => BiosValue::Bool(*flag),
                    other => BiosValue::Other(other.to_string()),
                };
                (name.clone(), value)
            })
            .collect(),
    )
}

/// The attribute names a Redfish `BiosRegistry` document defines
/// (`RegistryEntries.Attributes[].AttributeName`).
pub fn bios_registry_names(document: &serde_json::Value) -> BTreeSet<String> {
    document
        .pointer("/RegistryEntries/Attributes")
        .and_then(|list| list.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|entry| entry.get("AttributeName")?.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
