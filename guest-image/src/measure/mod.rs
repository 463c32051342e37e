//! Launch measurements: the SEV-SNP launch digest and the TDX MRTD (issue 4).
//!
//! Three layers: [`ovmf`] parses firmware images, [`snp`] and [`tdx`] compute digests from bytes
//! and launch values, and this module reads files, applies the deployment model exactly as the
//! launch script does ([`measure_artifacts`]) and defines `measurements.json` ([`Measurements`],
//! DESIGN.md §4). [`reference`] runs sev-snp-measure from PyPI for the differential test and the
//! benchmark.

pub mod ovmf;
pub mod reference;
pub mod snp;
pub mod tdx;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cvm_core::{
    error::bad_input,
    model::{BootMode, Model, PageAddOrder, Tee},
};
use serde::{Deserialize, Serialize};

pub use snp::{KernelHashes, SnpParams, Vmm};

/// SHA-384 of `data` (ring's assembly implementation: the firmware pages are most of the work).
pub(crate) fn sha384(data: &[u8]) -> [u8; 48] {
    let digest = ring::digest::digest(&ring::digest::SHA384, data);
    let mut out = [0u8; 48];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The file [`write_measurements`] writes into the artifacts directory.
pub const MEASUREMENTS_FILE: &str = "measurements.json";

/// `measurements.json` (DESIGN.md §4); the manifest's `measurements` is the same object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// Format version: 1.
    pub schema: u32,
    /// The TEE whose measurement is given.
    pub tee: Tee,
    /// The SEV-SNP launch digest and its inputs (when `tee` is `snp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpMeasurement>,
    /// The TDX measurements (when `tee` is `tdx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxMeasurement>,
}

impl Measurements {
    /// The value attestation compares: the SNP launch digest or the TDX MRTD (hex).
    pub fn primary(&self) -> Option<&str> {
        match self.tee {
            Tee::Snp => self.snp.as_ref().map(|snp| snp.measurement.as_str()),
            Tee::Tdx => self.tdx.as_ref().map(|tdx| tdx.mrtd.as_str()),
        }
    }
}

/// `measurements.json` `snp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpMeasurement {
    /// The launch digest, 96 lower-case hex digits.
    pub measurement: String,
    /// What it was computed from.
    pub inputs: SnpInputs,
}

/// The launch values an SNP digest was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpInputs {
    /// vCPU count.
    pub vcpus: u32,
    /// QEMU `-cpu` model; null when a raw signature was given.
    pub vcpu_type: Option<String>,
    /// CPUID 1 EAX signature placed in every VMSA.
    pub vcpu_sig: u32,
    /// SEV features of every VMSA.
    pub guest_features: u64,
    /// Guest policy (not part of the digest; the attestation report carries it beside it). Null
    /// for a raw `measure snp`, which has no model.
    pub policy: Option<u64>,
    /// SHA-256 of the firmware image.
    pub firmware_sha256: String,
    /// SHA-256 of the kernel given to `-kernel` (uki.efi for direct UKI boot); null without one.
    pub kernel_sha256: Option<String>,
    /// The `-append` command line that was measured. Null when none is passed: for direct UKI
    /// boot the command line lives inside uki.efi and is covered by `kernel_sha256`.
    pub cmdline: Option<String>,
}

/// `measurements.json` `tdx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxMeasurement {
    /// MRTD, 96 lower-case hex digits.
    pub mrtd: String,
    /// RTMR1; null: not predicted (see [`tdx`]).
    pub rtmr1: Option<String>,
    /// RTMR2; null: not predicted (see [`tdx`]).
    pub rtmr2: Option<String>,
    /// The page-add order MRTD was computed for.
    pub page_add_order: PageAddOrder,
}

/// What `cargo xtask measure snp --json` prints: the digest beside every input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpReport {
    /// Always `snp`.
    pub tee: Tee,
    /// The launch digest, 96 lower-case hex digits.
    pub measurement: String,
    /// The inputs.
    #[serde(flatten)]
    pub inputs: SnpInputs,
    /// SHA-256 of the initrd; null without one.
    pub initrd_sha256: Option<String>,
    /// `qemu` or `ec2`.
    pub vmm_type: String,
}

/// The vCPU of an SNP measurement: a QEMU model name or a raw signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vcpu {
    /// A QEMU `-cpu` model name (sev-snp-measure `--vcpu-type`).
    Type(String),
    /// A CPUID 1 EAX signature (sev-snp-measure `--vcpu-sig`).
    Sig(u32),
}

/// Everything `measure snp` takes, with files by path.
#[derive(Debug, Clone)]
pub struct SnpRequest {
    /// The firmware given to `-bios`.
    pub ovmf: PathBuf,
    /// vCPU count.
    pub vcpus: u32,
    /// vCPU model or signature.
    pub vcpu: Vcpu,
    /// `-kernel`, measured through the kernel-hashes page.
    pub kernel: Option<PathBuf>,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append`.
    pub append: Option<String>,
    /// SEV features.
    pub guest_features: u64,
    /// The VMM.
    pub vmm: Vmm,
    /// The guest policy recorded beside the digest, if known.
    pub policy: Option<u64>,
}

/// Reads an input file named on the command line or by the model; failures are bad input.
fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| {
        bad_input(format!(
            "{}: cannot read the {what}: {err}; pass an existing file",
            path.display()
        ))
    })
}

/// SHA-256 of an input file, raw and hex.
fn sha256_input(path: &Path, what: &str) -> Result<([u8; 32], String)> {
    if !path.is_file() {
        return Err(bad_input(format!(
            "{}: the {what} does not exist or is not a file; pass an existing file",
            path.display()
        )));
    }
    // ring's SHA-256 (SHA-NI assembly) is about twice as fast as sha2's on a UKI of tens of MiB.
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = std::io::Read::read(&mut file, &mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if count == 0 {
            break;
        }
        context.update(&buffer[..count]);
    }
    let mut raw = [0u8; 32];
    raw.copy_from_slice(context.finish().as_ref());
    Ok((raw, hex::encode(raw)))
}

/// The files of an SNP request, read and hashed.
struct SnpPrepared {
    firmware: Vec<u8>,
    params: SnpParams,
    vcpu_type: Option<String>,
    kernel_sha256: Option<String>,
    initrd_sha256: Option<String>,
}

fn prepare_snp(request: &SnpRequest) -> Result<SnpPrepared> {
    let (vcpu_type, vcpu_sig) = match &request.vcpu {
        Vcpu::Type(name) => (Some(name.clone()), snp::vcpu_signature(name)?),
        Vcpu::Sig(sig) => (None, *sig),
    };
    let firmware = read_input(&request.ovmf, "firmware")?;
    let (kernel_hashes, kernel_sha256, initrd_sha256) = match &request.kernel {
        None => (None, None, None),
        Some(kernel) => {
            let (kernel_raw, kernel_hex) = sha256_input(kernel, "kernel")?;
            let initrd = request
                .initrd
                .as_deref()
                .map(|initrd| sha256_input(initrd, "initrd"))
                .transpose()?;
            let hashes = KernelHashes::new(
                kernel_raw,
                initrd.as_ref().map(|(raw, _)| *raw),
                request.append.as_deref(),
            );
            (Some(hashes), Some(kernel_hex), initrd.map(|(_, hex)| hex))
        }
    };
    let params = SnpParams {
        vcpus: request.vcpus,
        vcpu_sig,
        guest_features: request.guest_features,
        vmm: request.vmm,
        kernel_hashes,
    };
    Ok(SnpPrepared {
        firmware,
        params,
        vcpu_type,
        kernel_sha256,
        initrd_sha256,
    })
}

fn snp_digest_hex(request: &SnpRequest, prepared: &SnpPrepared) -> Result<String> {
    let digest = snp::launch_digest(&prepared.firmware, &prepared.params)
        .with_context(|| format!("measuring firmware {}", request.ovmf.display()))?;
    Ok(hex::encode(digest))
}

/// Computes only the SEV-SNP launch digest for `request` (hex); [`measure_snp`] adds the inputs.
pub fn snp_measurement(request: &SnpRequest) -> Result<String> {
    snp_digest_hex(request, &prepare_snp(request)?)
}

/// Computes the SEV-SNP launch digest for `request`, with every input it was computed from.
pub fn measure_snp(request: &SnpRequest) -> Result<SnpReport> {
    let prepared = prepare_snp(request)?;
    let measurement = snp_digest_hex(request, &prepared)?;
    Ok(SnpReport {
        tee: Tee::Snp,
        measurement,
        inputs: SnpInputs {
            vcpus: request.vcpus,
            vcpu_type: prepared.vcpu_type,
            vcpu_sig: prepared.params.vcpu_sig,
            guest_features: request.guest_features,
            policy: request.policy,
            firmware_sha256: cvm_core::hash::sha256_hex(&prepared.firmware),
            kernel_sha256: prepared.kernel_sha256,
            cmdline: request.kernel.as_ref().and(request.append.clone()),
        },
        initrd_sha256: prepared.initrd_sha256,
        vmm_type: match request.vmm {
            Vmm::Qemu => "qemu",
            Vmm::Ec2 => "ec2",
        }
        .to_owned(),
    })
}

/// Computes MRTD of the firmware at `ovmf` for the VMM's page-add order.
pub fn measure_tdx(ovmf: &Path, order: PageAddOrder) -> Result<TdxMeasurement> {
    let firmware = read_input(ovmf, "firmware")?;
    let mrtd = tdx::mrtd(&firmware, order)
        .with_context(|| format!("measuring firmware {}", ovmf.display()))?;
    Ok(TdxMeasurement {
        mrtd: hex::encode(mrtd),
        rtmr1: None,
        rtmr2: None,
        page_add_order: order,
    })
}

/// The page-add order of the model's VMM: `launch.tdx.page-add-order`, else single-pass unless
/// `host.qemu-version` names a QEMU older than 9 (the two-pass TDX trees).
pub fn page_add_order(model: &Model) -> PageAddOrder {
    if let Some(order) = model.tdx().page_add_order {
        return order;
    }
    match model
        .host
        .qemu_version
        .as_deref()
        .and_then(cvm_core::model::parse_version)
    {
        Some((major, _, _)) if major < 9 => PageAddOrder::TwoPass,
        _ => PageAddOrder::Single,
    }
}

/// An artifact the build writes; missing means the build has not run.
fn built_artifact(artifacts: &Path, name: &str) -> Result<PathBuf> {
    let path = artifacts.join(name);
    if !path.is_file() {
        return Err(bad_input(format!(
            "{} is missing; run `cargo xtask guest build` first (or pass --artifacts DIR)",
            path.display()
        )));
    }
    Ok(path)
}

/// The firmware the launch script passes to `-bios`: `launch.firmware` (checked against its
/// pinned sha256) or the build's `firmware.fd`.
fn launch_firmware(model: &Model, artifacts: &Path) -> Result<PathBuf> {
    let Some(firmware) = &model.launch.firmware else {
        return built_artifact(artifacts, "firmware.fd");
    };
    let (_, actual) = sha256_input(&firmware.path, "firmware named by launch.firmware.path")?;
    if !actual.eq_ignore_ascii_case(&firmware.sha256) {
        return Err(bad_input(format!(
            "{}: sha256 is {actual} but launch.firmware.sha256 pins {}; fix the pin or the file",
            firmware.path.display(),
            firmware.sha256
        )));
    }
    Ok(firmware.path.clone())
}

/// Computes the measurement of a built deployment from exactly the launch values the launch
/// script uses: the firmware, for direct UKI boot `-kernel uki.efi` with no initrd and no
/// `-append` (the command line is inside the UKI), the vCPU count and model, guest features and
/// policy (SNP) or the page-add order (TDX).
pub fn measure_artifacts(model: &Model, artifacts: &Path) -> Result<Measurements> {
    let firmware = launch_firmware(model, artifacts)?;
    match model.deployment.tee {
        Tee::Snp => {
            let kernel = match model.launch.boot {
                BootMode::DirectUki => Some(built_artifact(artifacts, "uki.efi")?),
                BootMode::Disk => None,
            };
            let snp_launch = model.snp();
            let report = measure_snp(&SnpRequest {
                ovmf: firmware,
                vcpus: model.launch.vcpus,
                vcpu: Vcpu::Type(model.vcpu_type().as_str().to_owned()),
                kernel,
                initrd: None,
                append: None,
                guest_features: snp_launch.guest_features,
                vmm: Vmm::Qemu,
                policy: Some(snp_launch.policy),
            })?;
            Ok(Measurements {
                schema: 1,
                tee: Tee::Snp,
                snp: Some(SnpMeasurement {
                    measurement: report.measurement,
                    inputs: report.inputs,
                }),
                tdx: None,
            })
        }
        Tee::Tdx => Ok(Measurements {
            schema: 1,
            tee: Tee::Tdx,
            snp: None,
            tdx: Some(measure_tdx(&firmware, page_add_order(model))?),
        }),
    }
}

/// Writes `measurements.json` into `artifacts` (through a temporary file, so a reader never sees
/// half of it).
pub fn write_measurements(artifacts: &Path, measurements: &Measurements) -> Result<()> {
    let path = artifacts.join(MEASUREMENTS_FILE);
    let mut text =
        serde_json::to_string_pretty(measurements).context("serializing measurements")?;
    text.push('\n');
    let temporary = artifacts.join(format!(".{MEASUREMENTS_FILE}.tmp"));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests;
