//! The deployment model: `cvm.toml` (DESIGN.md §2).
//!
//! Loading is two steps: serde parses the TOML into typed structs (`deny_unknown_fields`,
//! kebab-case keys, explicit defaults), then [`Model::validate`] checks the values against each
//! other. Every error is one line: `FILE:LINE:COLUMN: KEY: what is wrong; what to do`. Files the
//! model names (firmware, vendor artifacts) are checked by the commands that read them, not here,
//! so the examples validate on any machine.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{error::bad_input, hash::is_sha256_hex};

/// The embedded default model: a base SEV-SNP guest on Ubuntu noble.
pub const DEFAULT_MODEL_TOML: &str = include_str!("default-cvm.toml");

/// What error messages call the embedded default model.
pub const DEFAULT_MODEL_NAME: &str = "<embedded default cvm.toml>";

/// One confidential VM: what to build, how to launch it and how it is attested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Model {
    /// Name and TEE.
    pub deployment: Deployment,
    /// The guest image.
    #[serde(default)]
    pub guest: Guest,
    /// The launch configuration (every value here enters the launch script and the measurement).
    #[serde(default)]
    pub launch: Launch,
    /// The attestation service; unset when none is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// What the host is expected to be (checked, not assumed).
    #[serde(default)]
    pub host: Host,
}

/// `[deployment]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Deployment {
    /// Names the output directory `target/cvm/<name>/`.
    pub name: String,
    /// The CPU TEE.
    pub tee: Tee,
}

/// The CPU trusted execution environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

impl Tee {
    /// `snp` or `tdx`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
        }
    }
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[guest]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Guest {
    /// Ubuntu suite of the guest root.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Package mirror; unset means mmdebstrap's default for the suite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// The kernel package: a versioned track such as `linux-image-virtual-6.17` (or the NVIDIA
    /// flavour's `linux-image-nvidia-6.17`).
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// Which stack the guest carries.
    #[serde(default)]
    pub profile: Profile,
    /// Extra packages.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra kernel command-line words.
    #[serde(default)]
    pub extra_cmdline: Vec<String>,
    /// The timestamp every file is clamped to.
    #[serde(default = "default_source_date_epoch")]
    pub source_date_epoch: u64,
    /// Vendor artifacts pinned by sha256, by name.
    #[serde(default)]
    pub files: BTreeMap<String, GuestFile>,
    /// Settings of the `gpu` profile (ignored by `base`).
    #[serde(default)]
    pub gpu: GpuStack,
}

impl Default for Guest {
    fn default() -> Self {
        Self {
            suite: default_suite(),
            mirror: None,
            kernel: default_kernel(),
            profile: Profile::default(),
            packages: Vec::new(),
            extra_cmdline: Vec::new(),
            source_date_epoch: default_source_date_epoch(),
            files: BTreeMap::new(),
            gpu: GpuStack::default(),
        }
    }
}

fn default_suite() -> String {
    "noble".to_owned()
}
fn default_kernel() -> String {
    "linux-image-virtual-6.17".to_owned()
}
fn default_source_date_epoch() -> u64 {
    1_700_000_000
}

/// `guest.profile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// No GPU stack.
    #[default]
    Base,
    /// The NVIDIA confidential-computing stack.
    Gpu,
}

/// `[guest.gpu]`: the NVIDIA confidential-computing stack of the `gpu` profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GpuStack {
    /// The NVIDIA driver branch (`580-server`, `595`, …; 580 or newer). The open kernel modules
    /// come prebuilt and signed for the guest's kernel from the archive's restricted component.
    #[serde(default = "default_nvidia_driver")]
    pub driver: String,
    /// Set the GPUs' ready state (`nvidia-smi conf-compute -srs 1`) only once `attested-flag`
    /// exists; `false` sets it as soon as the driver is up.
    #[serde(default = "default_true")]
    pub ready_after_attestation: bool,
    /// The file the attestation bootstrap creates when GPU attestation succeeded.
    #[serde(default = "default_attested_flag")]
    pub attested_flag: String,
    /// The `[guest.files]` entry holding NVIDIA's attestation tool; when set, the image runs it at
    /// boot and creates `attested-flag` when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_tool: Option<String>,
    /// A directory of RIM files on the build host, copied into the image for air-gapped sites
    /// (relative paths are relative to the model file); the guest then reads RIMs from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rim_store: Option<PathBuf>,
}

impl Default for GpuStack {
    fn default() -> Self {
        Self {
            driver: default_nvidia_driver(),
            ready_after_attestation: true,
            attested_flag: default_attested_flag(),
            attestation_tool: None,
            rim_store: None,
        }
    }
}

fn default_nvidia_driver() -> String {
    "580-server".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_attested_flag() -> String {
    "/run/cvm/gpu-attested".to_owned()
}

/// The driver branch's major version (`580` of `580-server`) when `driver` is a branch name.
pub fn nvidia_branch_major(driver: &str) -> Option<u32> {
    let major = driver.strip_suffix("-server").unwrap_or(driver);
    (major.len() == 3 && major.bytes().all(|b| b.is_ascii_digit()))
        .then(|| major.parse().ok())
        .flatten()
}

/// One entry of `[guest.files]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GuestFile {
    /// Where the file is on the build host (relative paths are relative to the model file).
    pub source: PathBuf,
    /// Its sha256; the build refuses a file that does not match.
    pub sha256: String,
    /// Absolute path inside the image.
    pub dest: String,
    /// Permission bits.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

fn default_file_mode() -> u32 {
    0o644
}

/// `[launch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Launch {
    /// Virtual CPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory, `<N>M` or `<N>G`.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// SEV-SNP vCPU model (unset on TDX, which uses `-cpu host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_type: Option<VcpuType>,
    /// Firmware; unset means the build's `firmware.fd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Boot mode.
    #[serde(default)]
    pub boot: BootMode,
    /// GPUs passed through with VFIO.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// NVSwitch PCI addresses (Hopper HGX in Protected PCIe mode).
    #[serde(default)]
    pub nvswitches: Vec<String>,
    /// 64-bit MMIO window in MiB; unset means sized from the GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmio64_mib: Option<u64>,
    /// The network of the inference endpoint.
    #[serde(default)]
    pub network: Network,
    /// Serial console log path; unset means `serial.log` beside the launch script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_log: Option<String>,
    /// SEV-SNP launch values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpLaunch>,
    /// TDX launch values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxLaunch>,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            vcpus: default_vcpus(),
            memory: default_memory(),
            vcpu_type: None,
            firmware: None,
            boot: BootMode::default(),
            gpus: Vec::new(),
            nvswitches: Vec::new(),
            mmio64_mib: None,
            network: Network::default(),
            serial_log: None,
            snp: None,
            tdx: None,
        }
    }
}

fn default_vcpus() -> u32 {
    2
}
fn default_memory() -> String {
    "4G".to_owned()
}

/// The SEV-SNP vCPU models QEMU offers for confidential guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VcpuType {
    /// Zen 1–3 baseline (QEMU 9.2/10.0).
    #[serde(rename = "EPYC-v4")]
    EpycV4,
    /// Zen 3.
    #[serde(rename = "EPYC-Milan")]
    EpycMilan,
    /// Zen 4.
    #[serde(rename = "EPYC-Genoa")]
    EpycGenoa,
    /// Zen 5 (QEMU newer than 10.0 only).
    #[serde(rename = "EPYC-Turin")]
    EpycTurin,
}

impl VcpuType {
    /// Every model, in generation order.
    pub const ALL: [VcpuType; 4] = [
        VcpuType::EpycV4,
        VcpuType::EpycMilan,
        VcpuType::EpycGenoa,
        VcpuType::EpycTurin,
    ];

    /// The QEMU `-cpu` name.
    pub fn as_str(self) -> &'static str {
        match self {
            VcpuType::EpycV4 => "EPYC-v4",
            VcpuType::EpycMilan => "EPYC-Milan",
            VcpuType::EpycGenoa => "EPYC-Genoa",
            VcpuType::EpycTurin => "EPYC-Turin",
        }
    }

    /// Parses a QEMU `-cpu` name (case-sensitive, as QEMU is).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|model| model.as_str() == name)
    }
}

impl fmt::Display for VcpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `launch.firmware`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Firmware {
    /// Path of the one stateless firmware image.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
}

/// `launch.boot`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// `-kernel uki.efi` with measured kernel hashes.
    #[default]
    DirectUki,
    /// Boot the disk's EFI system partition.
    Disk,
}

/// A GPU family as NVIDIA's confidential-computing support matrix treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuModel {
    /// NVIDIA H100 (Hopper).
    H100,
    /// NVIDIA H200 (Hopper).
    H200,
    /// NVIDIA B200 (Blackwell).
    B200,
    /// NVIDIA RTX PRO 6000 Blackwell Server Edition (10de:2bb5).
    #[serde(rename = "rtx-pro-6000-bse")]
    RtxPro6000Bse,
}

impl GpuModel {
    /// True for Hopper parts (multi-GPU needs Protected PCIe mode with the NVSwitches).
    pub fn is_hopper(self) -> bool {
        matches!(self, GpuModel::H100 | GpuModel::H200)
    }
}

/// One passed-through GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gpu {
    /// PCI address `DDDD:BB:DD.F`.
    pub address: String,
    /// The GPU family.
    pub model: GpuModel,
}

/// `[launch.network]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Network {
    /// How the guest is connected.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Host port forwarded to the guest (mode `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Guest port of the HTTPS inference endpoint.
    #[serde(default = "default_guest_port")]
    pub guest_port: u16,
    /// Host bridge (mode `bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Outbound endpoints the guest may reach (CCM, DSM, artifact hosts) as `host:port`.
    #[serde(default)]
    pub egress: Vec<String>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            mode: NetworkMode::None,
            host_port: None,
            guest_port: default_guest_port(),
            bridge: None,
            egress: Vec::new(),
        }
    }
}

fn default_guest_port() -> u16 {
    443
}

/// `launch.network.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// No network device.
    #[default]
    None,
    /// QEMU user-mode networking with one port forward.
    User,
    /// A tap device on a host bridge.
    Bridge,
}

/// `[launch.snp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SnpLaunch {
    /// Guest policy.
    #[serde(default = "default_snp_policy")]
    pub policy: u64,
    /// SEV features measured into each VMSA.
    #[serde(default = "default_guest_features")]
    pub guest_features: u64,
    /// C-bit position; unset means read from the host's CPUID at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cbitpos: Option<u8>,
    /// Physical address bits lost to memory encryption.
    #[serde(default = "default_reduced_phys_bits")]
    pub reduced_phys_bits: u8,
}

impl Default for SnpLaunch {
    fn default() -> Self {
        Self {
            policy: default_snp_policy(),
            guest_features: default_guest_features(),
            cbitpos: None,
            reduced_phys_bits: default_reduced_phys_bits(),
        }
    }
}

fn default_snp_policy() -> u64 {
    0x30000
}
fn default_guest_features() -> u64 {
    0x1
}
fn default_reduced_phys_bits() -> u8 {
    1
}

/// `[launch.tdx]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TdxLaunch {
    /// TD attributes (bit 28 = SEPT_VE_DISABLE).
    #[serde(default = "default_tdx_attributes")]
    pub attributes: u64,
    /// vsock port of the host's quote generation service (QGS), CID 2.
    #[serde(default = "default_qgs_port")]
    pub quote_generation_port: u32,
    /// How the VMM adds TDVF pages; unset means derived from `host.qemu-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_add_order: Option<PageAddOrder>,
}

impl Default for TdxLaunch {
    fn default() -> Self {
        Self {
            attributes: default_tdx_attributes(),
            quote_generation_port: default_qgs_port(),
            page_add_order: None,
        }
    }
}

fn default_tdx_attributes() -> u64 {
    0x1000_0000
}
fn default_qgs_port() -> u32 {
    4050
}

/// The order in which the VMM adds and measures TDVF pages (changes the MRTD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageAddOrder {
    /// Upstream KVM / QEMU >= 9: each page added and extended in one pass.
    Single,
    /// Older TDX QEMU: all pages added, then all extended.
    TwoPass,
}

/// `[attestation]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Attestation {
    /// The attestation service.
    pub provider: AttestationProvider,
    /// Fortanix CCM base URL.
    pub ccm_url: String,
    /// Fortanix DSM base URL.
    pub dsm_url: String,
    /// CCM zone id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// CCM application id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// CCM account to select after login (a login that belongs to several accounts); unset: the
    /// login's default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccm_account_id: Option<String>,
    /// DSM security object (the model key) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Environment variable holding the API key (never the key itself).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// NVIDIA RIM service URL (GPU attestation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rim_url: Option<String>,
    /// NVIDIA OCSP URL (GPU attestation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_url: Option<String>,
}

fn default_api_key_env() -> String {
    "FORTANIX_API_KEY".to_owned()
}

/// True for a UUID in its 8-4-4-4-12 hex form.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `attestation.provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationProvider {
    /// Fortanix CCM + DSM.
    Fortanix,
}

/// `[host]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Host {
    /// Expected Ubuntu release of the host, e.g. `25.10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Expected QEMU version on the host, e.g. `9.2.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_version: Option<String>,
}

/// A model together with the file it came from (for error messages and relative paths).
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The validated model.
    pub model: Model,
    /// The file, or `None` for the embedded default.
    pub path: Option<PathBuf>,
    /// The exact text it was parsed from (its sha256 goes into the manifest).
    pub text: String,
}

impl LoadedModel {
    /// The name error messages use for the source.
    pub fn source_name(&self) -> String {
        source_name(self.path.as_deref())
    }

    /// Resolves a path from the model relative to the model file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.path {
            Some(file) if path.is_relative() => file.parent().unwrap_or(Path::new(".")).join(path),
            _ => path.to_owned(),
        }
    }
}

fn source_name(path: Option<&Path>) -> String {
    path.map_or_else(
        || DEFAULT_MODEL_NAME.to_owned(),
        |path| path.display().to_string(),
    )
}

/// Loads `path`, or the embedded default when `None`, and validates it.
pub fn load(path: Option<&Path>) -> Result<LoadedModel> {
    let text = match path {
        None => DEFAULT_MODEL_TOML.to_owned(),
        Some(path) => std::fs::read_to_string(path).map_err(|err| {
            bad_input(format!(
                "{}: cannot read the model: {err}; pass an existing cvm.toml with -c FILE, or leave -c out to use the embedded default",
                path.display()
            ))
        })?,
    };
    let model = parse(&text, path)?;
    Ok(LoadedModel {
        model,
        path: path.map(Path::to_owned),
        text,
    })
}

/// Parses and validates model text; `path` only names the source in errors.
pub fn parse(text: &str, path: Option<&Path>) -> Result<Model> {
    let source = source_name(path);
    let model: Model = toml::from_str(text).map_err(|err| {
        let location = err
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                let key = key_at(text, span.start)
                    .map(|key| format!(" {key}:"))
                    .unwrap_or_default();
                format!("{line}:{column}:{key}")
            })
            .unwrap_or_default();
        let message = err.message().trim().replace('\n', " ");
        let fix = if message.starts_with("unknown field") {
            "remove the key or fix its spelling"
        } else if message.starts_with("missing field") {
            "add it (see `cargo xtask guest inspect --default-model`)"
        } else {
            "see `cargo xtask guest inspect --default-model` for the expected form"
        };
        bad_input(format!("{source}:{location} {message}; {fix}"))
    })?;
    if let Err(problem) = model.validate() {
        let location = locate(text, &problem.key)
            .map(|(line, column)| format!("{line}:{column}:"))
            .unwrap_or_default();
        return Err(bad_input(format!(
            "{source}:{location} {}: {}",
            problem.key, problem.message
        )));
    }
    Ok(model)
}

/// A semantic problem: the dotted key and the message (which ends with the fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `launch.gpus[1].address`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> std::result::Result<(), Problem> {
    Err(Problem {
        key: key.into(),
        message: message.into(),
    })
}

/// Parses `<N>M`, `<N>G` or `<N>T` into MiB.
pub fn parse_memory_mib(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
    let number: u64 = digits.parse().ok()?;
    let factor = match unit {
        "M" | "MiB" => 1,
        "G" | "GiB" => 1024,
        "T" | "TiB" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// True for a PCI address `DDDD:BB:DD.F` (domain, bus, device < 0x20, function < 8), in hex.
pub fn is_pci_address(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 12 || bytes[4] != b':' || bytes[7] != b':' || bytes[10] != b'.' {
        return false;
    }
    let hex = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u32::from_str_radix(s, 16).ok())
    };
    matches!(
        (hex(0..4), hex(5..7), hex(8..10), hex(11..12)),
        (Some(_), Some(_), Some(device), Some(function)) if device < 0x20 && function < 8
    )
}

fn is_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn is_package_name(value: &str) -> bool {
    // Debian policy: lower-case letters, digits, '+', '-', '.'; at least two characters.
    value.len() >= 2
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn is_url(value: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|scheme| {
        value
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|rest| {
                !rest.is_empty()
                    && !rest.starts_with('/')
                    && !rest
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            })
    })
}

/// Ubuntu's kernel flavours the guest can use, by the prefix of their versioned track meta
/// package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlavour {
    /// `linux-image-virtual-X.Y`: the generic kernel, its TEE guest drivers in
    /// `linux-modules-extra-<release>`.
    Virtual,
    /// `linux-image-nvidia-X.Y`: Canonical's kernel for NVIDIA platforms, every module in
    /// `linux-modules-<release>` (no extra package). Its meta package also pulls in the whole
    /// linux-firmware set, so the build installs the kernel image it resolves to instead.
    Nvidia,
}

impl KernelFlavour {
    /// The track meta package's prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            KernelFlavour::Virtual => "linux-image-virtual-",
            KernelFlavour::Nvidia => "linux-image-nvidia-",
        }
    }
}

/// The flavour and track version of `linux-image-virtual-X.Y` or `linux-image-nvidia-X.Y`, if
/// the name has one of those forms.
pub fn kernel_track(package: &str) -> Option<(KernelFlavour, (u32, u32))> {
    [KernelFlavour::Virtual, KernelFlavour::Nvidia]
        .into_iter()
        .find_map(|flavour| {
            let version = package.strip_prefix(flavour.prefix())?;
            let (major, minor) = version.split_once('.')?;
            Some((flavour, (major.parse().ok()?, minor.parse().ok()?)))
        })
}

impl Model {
    /// The embedded default model.
    pub fn default_model() -> Model {
        parse(DEFAULT_MODEL_TOML, None).expect("the embedded default model is valid")
    }

    /// Memory in MiB (valid after [`Model::validate`]).
    pub fn memory_mib(&self) -> u64 {
        parse_memory_mib(&self.launch.memory).unwrap_or(0)
    }

    /// The SNP vCPU model the launch and the measurement use (default `EPYC-v4`).
    pub fn vcpu_type(&self) -> VcpuType {
        self.launch.vcpu_type.unwrap_or(VcpuType::EpycV4)
    }

    /// The SNP launch values, defaults filled in.
    pub fn snp(&self) -> SnpLaunch {
        self.launch.snp.clone().unwrap_or_default()
    }

    /// The TDX launch values, defaults filled in.
    pub fn tdx(&self) -> TdxLaunch {
        self.launch.tdx.clone().unwrap_or_default()
    }

    /// Checks the values against each other. The first problem found is returned.
    pub fn validate(&self) -> std::result::Result<(), Problem> {
        let deployment = &self.deployment;
        if !is_name(&deployment.name) {
            return problem(
                "deployment.name",
                format!("{:?} is not a valid name; use 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit", deployment.name),
            );
        }
        self.validate_guest()?;
        self.validate_launch()?;
        if let Some(attestation) = &self.attestation {
            for (key, value) in [
                ("attestation.ccm-url", &attestation.ccm_url),
                ("attestation.dsm-url", &attestation.dsm_url),
            ] {
                if !is_url(value, &["https"]) {
                    return problem(key, format!("{value:?} is not an https:// URL; attestation services are only reached over HTTPS"));
                }
            }
            for (key, value) in [
                ("attestation.rim-url", &attestation.rim_url),
                ("attestation.ocsp-url", &attestation.ocsp_url),
            ] {
                if let Some(value) = value {
                    if !is_url(value, &["https", "http"]) && !value.starts_with("file://") {
                        return problem(key, format!("{value:?} is not a URL; give an https:// service URL or a file:// directory for air-gapped sites"));
                    }
                }
            }
            if let Some(account) = &attestation.ccm_account_id {
                if !is_uuid(account) {
                    return problem("attestation.ccm-account-id", format!("{account:?} is not a CCM account id; copy the account's UUID from CCM (Accounts), e.g. \"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\""));
                }
            }
            let env = &attestation.api_key_env;
            if env.is_empty()
                || !env
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return problem("attestation.api-key-env", format!("{env:?} is not an environment variable name; name the variable that holds the API key (e.g. FORTANIX_API_KEY), never the key itself"));
            }
        }
        if let Some(release) = &self.host.release {
            if !matches!(release.as_str(), "24.04" | "25.04" | "25.10" | "26.04") {
                return problem("host.release", format!("{release:?} is not a supported host release; use 24.04, 25.04, 25.10 or 26.04"));
            }
        }
        if let Some(version) = &self.host.qemu_version {
            if parse_version(version).is_none() {
                return problem(
                    "host.qemu-version",
                    format!(
                        "{version:?} is not a version; write it as QEMU prints it, e.g. \"9.2.1\""
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_guest(&self) -> std::result::Result<(), Problem> {
        let guest = &self.guest;
        if guest.suite != "noble" {
            return problem(
                "guest.suite",
                format!(
                    "{:?} is not supported; the guest is Ubuntu 24.04, set suite = \"noble\"",
                    guest.suite
                ),
            );
        }
        if let Some(mirror) = &guest.mirror {
            if !is_url(mirror, &["http", "https", "file"]) {
                return problem("guest.mirror", format!("{mirror:?} is not a mirror URL; give http(s)://HOST/PATH, or remove the key to use mmdebstrap's default"));
            }
        }
        if guest.kernel.contains("-hwe-") {
            return problem("guest.kernel", format!("{:?} is a moving meta package; pin a versioned track such as \"linux-image-virtual-6.17\"", guest.kernel));
        }
        match kernel_track(&guest.kernel) {
            Some((_, (major, minor))) if (major, minor) >= (6, 11) => {}
            Some(_) => return problem("guest.kernel", format!("{:?} is older than 6.11, which lacks the SNP/TDX guest support the image needs; use \"linux-image-virtual-6.17\"", guest.kernel)),
            None => return problem("guest.kernel", format!("{:?} is not a versioned kernel track; use the form \"linux-image-virtual-X.Y\" (or \"linux-image-nvidia-X.Y\") with X.Y >= 6.11, e.g. \"linux-image-virtual-6.17\"", guest.kernel)),
        }
        for (index, package) in guest.packages.iter().enumerate() {
            if !is_package_name(package) {
                return problem(format!("guest.packages[{index}]"), format!("{package:?} is not a Debian package name; use the bare name, e.g. \"ca-certificates\""));
            }
        }
        for (index, word) in guest.extra_cmdline.iter().enumerate() {
            if word.is_empty()
                || word
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"')
            {
                return problem(format!("guest.extra-cmdline[{index}]"), format!("{word:?} is not one kernel command-line word; give one word per list entry, without spaces or quotes"));
            }
        }
        if guest.source_date_epoch == 0 {
            return problem(
                "guest.source-date-epoch",
                "0 is not a usable timestamp; use a fixed positive Unix time such as 1700000000",
            );
        }
        for (name, file) in &guest.files {
            let key = format!("guest.files.{name}");
            if !is_sha256_hex(&file.sha256) {
                return problem(
                    format!("{key}.sha256"),
                    format!(
                        "{:?} is not a sha256; give 64 hex digits (sha256sum FILE)",
                        file.sha256
                    ),
                );
            }
            if !file.dest.starts_with('/')
                || file.dest.split('/').any(|part| part == "..")
                || file.dest.ends_with('/')
            {
                return problem(format!("{key}.dest"), format!("{:?} is not an absolute file path inside the image; use e.g. \"/usr/local/bin/{name}\"", file.dest));
            }
            if file.mode > 0o7777 || file.mode & 0o6000 != 0 {
                return problem(format!("{key}.mode"), format!("{:#o} is not allowed; use plain permission bits such as 0o755 (setuid/setgid files are forbidden in the image)", file.mode));
            }
        }
        let gpu = &guest.gpu;
        match nvidia_branch_major(&gpu.driver) {
            Some(major) if major >= 580 => {}
            _ => return problem("guest.gpu.driver", format!("{:?} is not an NVIDIA driver branch of 580 or newer; use e.g. \"580-server\" or \"595\" (the open kernel modules of that branch are installed)", gpu.driver)),
        }
        if !gpu.attested_flag.starts_with('/')
            || gpu.attested_flag.split('/').any(|part| part == "..")
            || gpu.attested_flag.ends_with('/')
        {
            return problem(
                "guest.gpu.attested-flag",
                format!(
                    "{:?} is not an absolute file path; use e.g. \"/run/cvm/gpu-attested\"",
                    gpu.attested_flag
                ),
            );
        }
        if let Some(tool) = &gpu.attestation_tool {
            if !guest.files.contains_key(tool) {
                return problem("guest.gpu.attestation-tool", format!("{tool:?} names no [guest.files] entry; add [guest.files.{tool}] with source, sha256 and dest, or remove the key"));
            }
        }
        Ok(())
    }

    fn validate_launch(&self) -> std::result::Result<(), Problem> {
        let launch = &self.launch;
        let tee = self.deployment.tee;
        if !(1..=512).contains(&launch.vcpus) {
            return problem(
                "launch.vcpus",
                format!("{} is out of range; use 1 to 512", launch.vcpus),
            );
        }
        match parse_memory_mib(&launch.memory) {
            None => {
                return problem(
                    "launch.memory",
                    format!(
                        "{:?} is not a memory size; write it as \"<N>M\" or \"<N>G\", e.g. \"64G\"",
                        launch.memory
                    ),
                )
            }
            Some(mib) if mib < 512 => {
                return problem(
                    "launch.memory",
                    format!(
                        "{:?} is too small; a guest needs at least \"512M\"",
                        launch.memory
                    ),
                )
            }
            Some(mib) if mib > 4 * 1024 * 1024 => {
                return problem(
                    "launch.memory",
                    format!(
                        "{:?} is larger than 4 TiB; use a size the host can back",
                        launch.memory
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(firmware) = &launch.firmware {
            if !is_sha256_hex(&firmware.sha256) {
                return problem(
                    "launch.firmware.sha256",
                    format!(
                        "{:?} is not a sha256; give 64 hex digits (sha256sum {})",
                        firmware.sha256,
                        firmware.path.display()
                    ),
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, gpu) in launch.gpus.iter().enumerate() {
            if !is_pci_address(&gpu.address) {
                return problem(format!("launch.gpus[{index}].address"), format!("{:?} is not a PCI address; write DDDD:BB:DD.F as lspci -D prints it, e.g. \"0000:41:00.0\"", gpu.address));
            }
            if !seen.insert(gpu.address.to_ascii_lowercase()) {
                return problem(
                    format!("launch.gpus[{index}].address"),
                    format!(
                        "{} is listed twice; each GPU can be passed to one CVM once",
                        gpu.address
                    ),
                );
            }
        }
        for (index, address) in launch.nvswitches.iter().enumerate() {
            if !is_pci_address(address) {
                return problem(format!("launch.nvswitches[{index}]"), format!("{address:?} is not a PCI address; write DDDD:BB:DD.F as lspci -D prints it"));
            }
        }
        self.validate_gpu_topology()?;
        if let Some(mib) = launch.mmio64_mib {
            if mib < 1024 || !mib.is_power_of_two() {
                return problem("launch.mmio64-mib", format!("{mib} is not a usable 64-bit MMIO window; use a power of two of at least 1024 (MiB), e.g. 262144 for one GPU"));
            }
        }
        let network = &launch.network;
        match network.mode {
            NetworkMode::None if network.host_port.is_some() || network.bridge.is_some() => {
                return problem("launch.network.mode", "is \"none\" but host-port or bridge is set; set mode = \"user\" or \"bridge\", or remove them");
            }
            NetworkMode::User if network.host_port.is_none() => {
                return problem("launch.network.host-port", "is missing; mode = \"user\" forwards one host port to the guest's endpoint, e.g. host-port = 8443");
            }
            NetworkMode::Bridge => match &network.bridge {
                None => return problem("launch.network.bridge", "is missing; mode = \"bridge\" needs the host bridge name, e.g. bridge = \"br0\""),
                Some(bridge) if bridge.is_empty() || bridge.len() > 15 || !bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => {
                    return problem("launch.network.bridge", format!("{bridge:?} is not a Linux interface name; use up to 15 letters, digits, '-', '_' or '.'"));
                }
                Some(_) => {}
            },
            _ => {}
        }
        if network.guest_port == 0 {
            return problem(
                "launch.network.guest-port",
                "0 is not a port; use the guest's HTTPS port, e.g. 443",
            );
        }
        for (index, endpoint) in network.egress.iter().enumerate() {
            let valid = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return problem(format!("launch.network.egress[{index}]"), format!("{endpoint:?} is not HOST:PORT; list each outbound endpoint as e.g. \"ccm.example.com:443\""));
            }
        }
        if let Some(serial) = &launch.serial_log {
            if serial.is_empty() || serial.bytes().any(|b| b.is_ascii_control()) {
                return problem("launch.serial-log", format!("{serial:?} is not a usable path; give a file path without control characters"));
            }
        }
        match tee {
            Tee::Snp => {
                if launch.tdx.is_some() {
                    return problem("launch.tdx", "is set but deployment.tee = \"snp\"; remove [launch.tdx] or set tee = \"tdx\"");
                }
                let snp = self.snp();
                if snp.policy & (1 << 17) == 0 {
                    return problem("launch.snp.policy", format!("{:#x} has bit 17 clear, but the SNP ABI requires it to be one; use e.g. 0x30000", snp.policy));
                }
                if snp.policy & (1 << 19) != 0 {
                    return problem("launch.snp.policy", format!("{:#x} sets bit 19 (DEBUG), which lets the host read guest memory; clear it, e.g. 0x30000", snp.policy));
                }
                if snp.policy >> 25 != 0 {
                    return problem(
                        "launch.snp.policy",
                        format!(
                            "{:#x} sets bits above 24, which are reserved; use e.g. 0x30000",
                            snp.policy
                        ),
                    );
                }
                if snp.guest_features & 1 == 0 {
                    return problem("launch.snp.guest-features", format!("{:#x} lacks bit 0 (SNPActive), which every SNP guest has; use e.g. 0x1", snp.guest_features));
                }
                if let Some(cbitpos) = snp.cbitpos {
                    if !(32..=63).contains(&cbitpos) {
                        return problem("launch.snp.cbitpos", format!("{cbitpos} is not a C-bit position; AMD EPYC parts use 47 or 51 (CPUID 0x8000001F EBX[5:0]), or remove the key to read it from the host"));
                    }
                }
                if !(1..=63).contains(&snp.reduced_phys_bits) {
                    return problem(
                        "launch.snp.reduced-phys-bits",
                        format!(
                            "{} is out of range; use 1 (what QEMU expects on EPYC)",
                            snp.reduced_phys_bits
                        ),
                    );
                }
            }
            Tee::Tdx => {
                if launch.snp.is_some() {
                    return problem("launch.snp", "is set but deployment.tee = \"tdx\"; remove [launch.snp] or set tee = \"snp\"");
                }
                if launch.vcpu_type.is_some() {
                    return problem(
                        "launch.vcpu-type",
                        "is an SEV-SNP setting; TDX guests run with -cpu host, remove the key",
                    );
                }
                let tdx = self.tdx();
                if tdx.attributes & 1 != 0 {
                    return problem("launch.tdx.attributes", format!("{:#x} sets bit 0 (DEBUG), which lets the host read guest state; clear it, e.g. 0x10000000", tdx.attributes));
                }
                if tdx.quote_generation_port == 0 {
                    return problem(
                        "launch.tdx.quote-generation-port",
                        "0 is not a vsock port; use the QGS port, 4050 by default",
                    );
                }
            }
        }
        Ok(())
    }

    /// NVIDIA's confidential-computing support matrix (reference corrections, point 14).
    fn validate_gpu_topology(&self) -> std::result::Result<(), Problem> {
        let gpus = &self.launch.gpus;
        let nvswitches = &self.launch.nvswitches;
        if gpus.is_empty() {
            if !nvswitches.is_empty() {
                return problem("launch.nvswitches", "NVSwitches are passed through only with Hopper GPUs in Protected PCIe mode; add the GPUs or remove the NVSwitches");
            }
            return Ok(());
        }
        let first = gpus[0].model;
        if let Some((index, gpu)) = gpus.iter().enumerate().find(|(_, gpu)| gpu.model != first) {
            return problem(
                format!("launch.gpus[{index}].model"),
                format!(
                    "{:?} differs from launch.gpus[0]; NVIDIA supports one GPU family per CVM",
                    gpu.model
                ),
            );
        }
        if first == GpuModel::RtxPro6000Bse && gpus.len() > 1 {
            return problem("launch.gpus", format!("{} RTX PRO 6000 Blackwell Server Edition GPUs in one CVM is not supported in CC mode (one GPU per CVM); use one model file per GPU", gpus.len()));
        }
        if first.is_hopper() {
            if gpus.len() > 1 && nvswitches.is_empty() {
                return problem("launch.nvswitches", format!("{} Hopper GPUs in one CVM need Protected PCIe mode with the NVSwitches passed through too; list their PCI addresses", gpus.len()));
            }
            if gpus.len() == 1 && !nvswitches.is_empty() {
                return problem("launch.nvswitches", "are only passed through for multi-GPU Hopper (Protected PCIe); remove them for a single GPU");
            }
        } else if !nvswitches.is_empty() {
            return problem("launch.nvswitches", "are only passed through for Hopper GPUs in Protected PCIe mode; Blackwell multi-GPU uses CC mode without them, remove them");
        }
        if self.deployment.tee == Tee::Tdx && self.launch.vcpu_type.is_some() {
            return problem(
                "launch.vcpu-type",
                "is an SEV-SNP setting; TDX guests run with -cpu host, remove the key",
            );
        }
        Ok(())
    }
}

/// Parses `X.Y[.Z]` (with an optional suffix after the numbers) into a comparable triple.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let numeric: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|part| !part.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().map_or(Some(0), |part| part.parse().ok())?;
    Some((major, minor, patch))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// Finds the 1-based line and column of a dotted key such as `launch.gpus[1].address` in `text`,
/// falling back to the nearest enclosing key or table that is written out.
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let document = toml_edit::Document::parse(text).ok()?;
    let mut path: Vec<Segment> = Vec::new();
    for part in key.split('.') {
        match part.split_once('[') {
            Some((name, rest)) => {
                path.push(Segment::Key(name.to_owned()));
                let index = rest.trim_end_matches(']').parse().ok()?;
                path.push(Segment::Index(index));
            }
            None => path.push(Segment::Key(part.to_owned())),
        }
    }
    let mut best = None;
    let mut item = document.as_item();
    for segment in &path {
        let next = match segment {
            Segment::Key(name) => item.get(name.as_str()),
            Segment::Index(index) => item.get(*index),
        };
        let Some(next) = next else { break };
        // Prefer the key's own position over its value's when the parent table records it.
        if let Segment::Key(name) = segment {
            if let Some(span) = item
                .as_table_like()
                .and_then(|table| table.get_key_value(name))
                .and_then(|(key, _)| key.span())
            {
                best = Some(span.start);
            } else if let Some(span) = next.span() {
                best = Some(span.start);
            }
        } else if let Some(span) = next.span() {
            best = Some(span.start);
        }
        item = next;
    }
    best.map(|offset| line_column(text, offset))
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The dotted key whose key or value span contains byte `offset` (for serde errors, which give a
/// span but not the key).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = toml_edit::Document::parse(text).ok()?;
    let mut found = None;
    walk(document.as_item(), String::new(), offset, &mut found);
    found
}

fn walk(item: &toml_edit::Item, prefix: String, offset: usize, found: &mut Option<String>) {
    let Some(table) = item.as_table_like() else {
        if let Some(array) = item.as_array() {
            for (index, value) in array.iter().enumerate() {
                let key = format!("{prefix}[{index}]");
                if value.span().is_some_and(|span| span.contains(&offset)) {
                    *found = Some(key.clone());
                }
                if let Some(inline) = value.as_inline_table() {
                    walk_inline(inline, key, offset, found);
                }
            }
        }
        if let Some(array) = item.as_array_of_tables() {
            for (index, table) in array.iter().enumerate() {
                walk_table_like(table, format!("{prefix}[{index}]"), offset, found);
            }
        }
        return;
    };
    walk_table_like(table, prefix, offset, found);
}

fn walk_table_like(
    table: &dyn toml_edit::TableLike,
    prefix: String,
    offset: usize,
    found: &mut Option<String>,
) {
    for (name, child) in table.iter() {
        let key = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        let key_span = table.get_key_value(name).and_then(|(key, _)| key.span());
        let inside = key_span.is_some_and(|span| span.contains(&offset) || span.end == offset)
            || child.span().is_some_and(|span| span.contains(&offset));
        if inside {
            *found = Some(key.clone());
        }
        walk(child, key, offset, found);
    }
}

fn walk_inline(
    table: &toml_edit::InlineTable,
    prefix: String,
    offset: usize,
    found: &mut Option<String>,
) {
    walk_table_like(table, prefix, offset, found);
}

/// Loads a model for a command: `-c FILE` or the embedded default, with context on failure.
pub fn load_for_command(path: Option<&Path>) -> Result<LoadedModel> {
    load(path).with_context(|| "loading the deployment model".to_owned())
}

#[cfg(test)]
mod tests;
