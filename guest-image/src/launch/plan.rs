//! The launch plan: every value the launch script and the domain XML use, taken from the model
//! (validated for its targets here) and from the artifacts directory (sha256 of each file, the
//! expected measurement).

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context, Result};
use cvm_core::{
    error::bad_input,
    hash::sha256_file,
    model::{BootMode, GpuModel, LoadedModel, Model, Network, Tee},
};

use super::qemu::Var;

/// The fw_cfg file OVMF reads the 64-bit MMIO window size from, in MiB.
pub const MMIO64_FW_CFG: &str = "opt/ovmf/X-PciMmio64Mb";

/// The 64-bit MMIO window per GPU (MiB): NVIDIA's and Canonical's value for one GPU's BARs.
pub const MMIO64_MIB_PER_GPU: u64 = 262_144;

/// The address space (MiB) that QEMU's default 40 physical address bits give a named vCPU model.
const DEFAULT_PHYS_ADDRESS_MIB: u64 = 1 << 20;

/// File names in the artifacts directory (DESIGN.md §4).
pub const FIRMWARE_FILE: &str = "firmware.fd";
/// The unified kernel image.
pub const UKI_FILE: &str = "uki.efi";
/// The qcow2 disk.
pub const DISK_FILE: &str = "disk.qcow2";
/// The build manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The measurements.
pub const MEASUREMENTS_FILE: &str = "measurements.json";
/// The default serial console log, beside the launch script.
pub const SERIAL_LOG_FILE: &str = "serial.log";

/// Memory (MiB) from which guests are known to boot for minutes (anchors.md §8.9).
pub const SLOW_BOOT_MEMORY_MIB: u64 = 64 * 1024;
/// vCPU count from which guests are known to boot for minutes (anchors.md §8.9).
pub const SLOW_BOOT_VCPUS: u32 = 64;

/// A PCI device passed through with VFIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Passthrough {
    /// E.g. `GPU (H100)` or `NVSwitch`, for comments and messages.
    pub kind: String,
    /// `DDDD:BB:DD.F`, lower case.
    pub address: String,
}

/// SEV-SNP values.
#[derive(Debug, Clone)]
pub(crate) struct SnpPlan {
    pub policy: u64,
    pub cbitpos: Option<u8>,
    pub reduced_phys_bits: u8,
}

/// TDX values.
#[derive(Debug, Clone)]
pub(crate) struct TdxPlan {
    pub attributes: u64,
    pub quote_generation_port: u32,
}

/// Where a file the launch uses lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// In the artifacts directory, by file name.
    Artifact(&'static str),
    /// A host path (absolute, from the model).
    Host(String),
    /// Relative to the launch script's directory.
    ScriptDir(String),
}

/// A file whose sha256 the script checks before launching.
#[derive(Debug, Clone)]
pub(crate) struct FileCheck {
    /// The variable that holds its path.
    pub var: Var,
    /// The name messages use.
    pub label: String,
    /// Where it is.
    pub location: Location,
    /// The expected sha256; `None` when the file did not exist at render time.
    pub sha256: Option<String>,
    /// Where the expected sha256 came from.
    pub source: &'static str,
}

/// One line of the expected measurement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct MeasurementLine {
    /// E.g. `SEV-SNP launch measurement` or `TDX MRTD`.
    pub label: String,
    /// Hex.
    pub value: String,
}

/// Everything the renderers need.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub tee: Tee,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub vcpu_type: String,
    pub host_phys_bits: bool,
    pub boot: BootMode,
    pub snp: Option<SnpPlan>,
    pub tdx: Option<TdxPlan>,
    pub passthrough: Vec<Passthrough>,
    pub mmio64_mib: Option<u64>,
    pub network: Network,
    pub files: Vec<FileCheck>,
    pub serial_log: Location,
    pub measurement: Vec<MeasurementLine>,
    /// The artifacts directory, absolute and normalized.
    pub artifacts: PathBuf,
    /// The output directory, absolute and normalized.
    pub out: PathBuf,
}

impl Plan {
    /// The artifacts directory relative to the output directory (`None` when they are the same).
    pub fn artifacts_relative(&self) -> Option<String> {
        let relative = relative_path(&self.out, &self.artifacts);
        let text = relative.to_string_lossy().into_owned();
        (!text.is_empty()).then_some(text)
    }

    /// The absolute path of a location (for the domain XML, which libvirt needs absolute).
    pub fn absolute(&self, location: &Location) -> String {
        match location {
            Location::Artifact(name) => self.artifacts.join(name).to_string_lossy().into_owned(),
            Location::Host(path) => path.clone(),
            Location::ScriptDir(relative) => normalize(&self.out.join(relative))
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// The file check for `var`.
    pub fn file(&self, var: Var) -> Option<&FileCheck> {
        self.files.iter().find(|file| file.var == var)
    }
}

/// The 64-bit MMIO window for `model`: the model's value, else 256 GiB per GPU rounded up to a
/// power of two; `None` without GPUs.
pub fn mmio64_mib(model: &Model) -> Option<u64> {
    if let Some(mib) = model.launch.mmio64_mib {
        return Some(mib);
    }
    let gpus = model.launch.gpus.len() as u64;
    (gpus > 0).then(|| (MMIO64_MIB_PER_GPU * gpus).next_power_of_two())
}

/// Warnings for models in the range where guests boot for minutes (anchors.md §8.9: eager memory
/// acceptance in older TDVF/OVMF, vCPU bring-up that grows with the square of the vCPU count).
pub fn boot_time_warnings(model: &Model) -> Vec<String> {
    let mut warnings = Vec::new();
    let memory_mib = model.memory_mib();
    if memory_mib >= SLOW_BOOT_MEMORY_MIB {
        warnings.push(format!(
            "launch.memory = {:?} ({} GiB): confidential guests this large can take minutes to boot when the firmware accepts all memory up front (kata-containers#13535: 64 GiB TDs past 90 s with eager-accept OVMF, under 15 s with lazy acceptance); use a firmware with lazy memory acceptance (Ubuntu's OVMF builds) and allow for a long boot",
            model.launch.memory,
            memory_mib / 1024
        ));
    }
    if model.launch.vcpus >= SLOW_BOOT_VCPUS {
        warnings.push(format!(
            "launch.vcpus = {}: confidential guests with this many vCPUs boot slowly, growing with the square of the count (Dstack-TEE/dstack#1220: 64 vCPUs about 50 s, 248 vCPUs about 10 minutes); use fewer vCPUs or allow for a long boot",
            model.launch.vcpus
        ));
    }
    warnings
}

/// Builds the plan for `loaded`, reading hashes and measurements from `artifacts`.
pub(crate) fn plan(loaded: &LoadedModel, artifacts: &Path, out: &Path) -> Result<Plan> {
    let mut plan = model_plan(loaded)?;
    let model = &loaded.model;
    plan.artifacts = checked_dir(artifacts, "--artifacts")?;
    plan.out = checked_dir(out, "--out")?;
    let manifest = read_manifest(&plan.artifacts)?;

    let firmware = match &model.launch.firmware {
        Some(firmware) => {
            let path = normalize(
                &std::path::absolute(loaded.resolve(&firmware.path)).with_context(|| {
                    format!("resolving launch.firmware.path {}", firmware.path.display())
                })?,
            );
            let text = checked_text(&path, "launch.firmware.path", &loaded.source_name())?;
            FileCheck {
                var: Var::Firmware,
                label: "firmware".to_owned(),
                location: Location::Host(text),
                sha256: Some(firmware.sha256.to_ascii_lowercase()),
                source: "the model (launch.firmware.sha256)",
            }
        }
        None => artifact_check(Var::Firmware, FIRMWARE_FILE, &plan.artifacts, &manifest)?,
    };
    plan.files = vec![firmware];
    if model.launch.boot == BootMode::DirectUki {
        plan.files.push(artifact_check(
            Var::Uki,
            UKI_FILE,
            &plan.artifacts,
            &manifest,
        )?);
    }
    plan.files.push(artifact_check(
        Var::Disk,
        DISK_FILE,
        &plan.artifacts,
        &manifest,
    )?);
    plan.measurement = read_measurements(model, &plan)?;
    Ok(plan)
}

/// The plan's model values alone (no files, no measurement, empty directories).
pub(crate) fn model_plan(loaded: &LoadedModel) -> Result<Plan> {
    let model = &loaded.model;
    // The model was validated when it was loaded; a hand-built one is validated here.
    model.validate().map_err(|problem| {
        bad_input(format!(
            "{}: {}: {}",
            loaded.source_name(),
            problem.key,
            problem.message
        ))
    })?;
    let serial_log = match &model.launch.serial_log {
        None => Location::ScriptDir(SERIAL_LOG_FILE.to_owned()),
        Some(path) if Path::new(path).is_absolute() => Location::Host(path.clone()),
        Some(path) => Location::ScriptDir(path.clone()),
    };

    let mut passthrough: Vec<Passthrough> = model
        .launch
        .gpus
        .iter()
        .map(|gpu| Passthrough {
            kind: format!("GPU ({})", gpu_model_name(gpu.model)),
            address: gpu.address.to_ascii_lowercase(),
        })
        .collect();
    passthrough.extend(model.launch.nvswitches.iter().map(|address| Passthrough {
        kind: "NVSwitch".to_owned(),
        address: address.to_ascii_lowercase(),
    }));

    let memory_mib = model.memory_mib();
    let mmio64_mib = mmio64_mib(model);
    let host_phys_bits = model.deployment.tee == Tee::Snp
        && mmio64_mib.is_some_and(|window| {
            // OVMF puts the window above RAM (and the 32-bit hole), aligned to its size.
            (memory_mib + 4096).div_ceil(window) * window + window > DEFAULT_PHYS_ADDRESS_MIB
        });

    let snp = (model.deployment.tee == Tee::Snp).then(|| {
        let snp = model.snp();
        SnpPlan {
            policy: snp.policy,
            cbitpos: snp.cbitpos,
            reduced_phys_bits: snp.reduced_phys_bits,
        }
    });
    let tdx = (model.deployment.tee == Tee::Tdx).then(|| {
        let tdx = model.tdx();
        TdxPlan {
            attributes: tdx.attributes,
            quote_generation_port: tdx.quote_generation_port,
        }
    });

    Ok(Plan {
        tee: model.deployment.tee,
        name: model.deployment.name.clone(),
        vcpus: model.launch.vcpus,
        memory_mib,
        vcpu_type: model.vcpu_type().as_str().to_owned(),
        host_phys_bits,
        boot: model.launch.boot,
        snp,
        tdx,
        passthrough,
        mmio64_mib,
        network: model.launch.network.clone(),
        files: Vec::new(),
        serial_log,
        measurement: Vec::new(),
        artifacts: PathBuf::new(),
        out: PathBuf::new(),
    })
}

/// Makes a directory path absolute and normalized, and refuses paths the outputs cannot carry.
fn checked_dir(path: &Path, flag: &str) -> Result<PathBuf> {
    let absolute = normalize(
        &std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?,
    );
    checked_text(&absolute, flag, "command line")?;
    Ok(absolute)
}

/// The path as UTF-8 text without control characters (newlines cannot be carried into QEMU
/// options or XML attributes faithfully), else a one-line bad-input error naming `what`.
fn checked_text(path: &Path, what: &str, source: &str) -> Result<String> {
    let Some(text) = path.to_str() else {
        return Err(bad_input(format!(
            "{source}: {what}: {:?} is not UTF-8; use a path the domain XML can carry",
            path
        )));
    };
    if text.chars().any(char::is_control) {
        return Err(bad_input(format!(
            "{source}: {what}: {text:?} contains a control character (e.g. a newline); use a path without them"
        )));
    }
    Ok(text.to_owned())
}

/// `artifacts` entries of manifest.json: file name -> sha256.
fn read_manifest(artifacts: &Path) -> Result<Option<BTreeMap<String, String>>> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        artifacts: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        sha256: String,
    }
    let path = artifacts.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let manifest: Manifest = serde_json::from_str(&text).map_err(|err| {
        bad_input(format!(
            "{}: {err}; expected {{\"artifacts\": {{\"uki.efi\": {{\"sha256\": …, \"size\": …}}, …}}}}, rebuild with cargo xtask guest build",
            path.display()
        ))
    })?;
    for (name, entry) in &manifest.artifacts {
        if !cvm_core::hash::is_sha256_hex(&entry.sha256) {
            return Err(bad_input(format!(
                "{}: artifacts.{name}.sha256: {:?} is not a sha256; rebuild with cargo xtask guest build",
                path.display(),
                entry.sha256
            )));
        }
    }
    Ok(Some(
        manifest
            .artifacts
            .into_iter()
            .map(|(name, entry)| (name, entry.sha256.to_ascii_lowercase()))
            .collect(),
    ))
}

/// The check for an artifact: the manifest's sha256 when there is a manifest, else the sha256 of
/// the file as it is now, else none (the script then refuses to launch).
fn artifact_check(
    var: Var,
    name: &'static str,
    artifacts: &Path,
    manifest: &Option<BTreeMap<String, String>>,
) -> Result<FileCheck> {
    let (sha256, source) = match manifest {
        Some(manifest) => (manifest.get(name).cloned(), "manifest.json"),
        None => {
            let path = artifacts.join(name);
            if path.is_file() {
                (Some(sha256_file(&path)?.0), "the file at render time")
            } else {
                (None, "none (the file was missing at render time)")
            }
        }
    };
    Ok(FileCheck {
        var,
        label: name.to_owned(),
        location: Location::Artifact(name),
        sha256,
        source,
    })
}

/// The expected measurement from measurements.json (DESIGN.md §4), after checking that it was
/// computed for this model and these files.
fn read_measurements(model: &Model, plan: &Plan) -> Result<Vec<MeasurementLine>> {
    let path = plan.artifacts.join(MEASUREMENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let file = path.display();
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| bad_input(format!("{file}: {err}; run cargo xtask measure again")))?;
    let stale = |what: String| {
        bad_input(format!(
            "{file}: {what}; it was computed for other launch values, run cargo xtask measure again"
        ))
    };
    let tee = value.get("tee").and_then(|tee| tee.as_str()).unwrap_or("");
    if tee != model.deployment.tee.as_str() {
        return Err(stale(format!(
            "tee is {tee:?} but the model's is {:?}",
            model.deployment.tee.as_str()
        )));
    }
    let hex_field = |object: &serde_json::Value, key: &str| -> Result<Option<String>> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(hex))
                if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(Some(hex.to_ascii_lowercase()))
            }
            Some(other) => Err(bad_input(format!(
                "{file}: {key}: {other} is not a hex string; run cargo xtask measure again"
            ))),
        }
    };
    match model.deployment.tee {
        Tee::Snp => {
            let snp = value.get("snp").cloned().unwrap_or_default();
            let Some(measurement) = hex_field(&snp, "measurement")? else {
                return Err(bad_input(format!(
                    "{file}: snp.measurement is missing; run cargo xtask measure again"
                )));
            };
            let inputs = snp.get("inputs").cloned().unwrap_or_default();
            if let Some(vcpus) = inputs.get("vcpus").and_then(number) {
                if vcpus != u64::from(model.launch.vcpus) {
                    return Err(stale(format!(
                        "snp.inputs.vcpus is {vcpus} but launch.vcpus is {}",
                        model.launch.vcpus
                    )));
                }
            }
            if let Some(vcpu_type) = inputs.get("vcpu_type").and_then(|v| v.as_str()) {
                if vcpu_type != plan.vcpu_type {
                    return Err(stale(format!(
                        "snp.inputs.vcpu_type is {vcpu_type:?} but the launch uses {:?}",
                        plan.vcpu_type
                    )));
                }
            }
            let snp_values = model.snp();
            for (key, expected) in [
                ("policy", snp_values.policy),
                ("guest_features", snp_values.guest_features),
            ] {
                if let Some(found) = inputs.get(key).and_then(number) {
                    if found != expected {
                        return Err(stale(format!(
                            "snp.inputs.{key} is {found:#x} but the model's is {expected:#x}"
                        )));
                    }
                }
            }
            for (key, var) in [
                ("firmware_sha256", Var::Firmware),
                ("kernel_sha256", Var::Uki),
            ] {
                let recorded = hex_field(&inputs, key)?;
                let launched = plan.file(var).and_then(|file| file.sha256.clone());
                if let (Some(recorded), Some(launched)) = (recorded, launched) {
                    if recorded != launched {
                        return Err(stale(format!(
                            "snp.inputs.{key} is {recorded} but the launch uses a file with sha256 {launched}"
                        )));
                    }
                }
            }
            Ok(vec![MeasurementLine {
                label: "SEV-SNP launch measurement:".to_owned(),
                value: measurement,
            }])
        }
        Tee::Tdx => {
            let tdx = value.get("tdx").cloned().unwrap_or_default();
            let Some(mrtd) = hex_field(&tdx, "mrtd")? else {
                return Err(bad_input(format!(
                    "{file}: tdx.mrtd is missing; run cargo xtask measure again"
                )));
            };
            let mut lines = vec![MeasurementLine {
                label: "TDX MRTD:".to_owned(),
                value: mrtd,
            }];
            for key in ["rtmr1", "rtmr2"] {
                if let Some(value) = hex_field(&tdx, key)? {
                    lines.push(MeasurementLine {
                        label: format!("TDX {}:", key.to_ascii_uppercase()),
                        value,
                    });
                }
            }
            Ok(lines)
        }
    }
}

/// A JSON number, or a string holding a decimal or `0x` hex number.
fn number(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        },
        _ => None,
    }
}

/// Removes `.` and resolves `..` lexically (no symlinks are followed: the directories may not
/// exist yet).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `to` relative to `from`, both absolute and normalized; empty when they are the same.
pub(crate) fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for component in &to[common..] {
        relative.push(component);
    }
    relative
}

/// The GPU model names used in comments.
pub(crate) fn gpu_model_name(model: GpuModel) -> &'static str {
    match model {
        GpuModel::H100 => "H100",
        GpuModel::H200 => "H200",
        GpuModel::B200 => "B200",
        GpuModel::RtxPro6000Bse => "RTX PRO 6000 Blackwell Server Edition",
    }
}
