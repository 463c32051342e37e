//! Launch measurements: the SEV-SNP launch digest, the TDX MRTD and what is known of the TDX
//! RTMRs (issue 4).
//!
//! Three layers: [`ovmf`] parses firmware images, [`snp`], [`tdx`] and [`rtmr`] compute digests
//! from bytes
//! and launch values, and this module reads files, applies the deployment model exactly as the
//! launch script does ([`measure_artifacts`]) and defines `measurements.json` ([`Measurements`],
//! DESIGN.md §4). [`reference`] runs sev-snp-measure from PyPI for the differential test and the
//! benchmark.

pub mod ovmf;
pub mod reference;
pub mod rtmr;
#[cfg(target_arch = "x86_64")]
mod sha384x4;
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
    /// For direct UKI boot: the RTMR events that follow from uki.efi, an unverified RTMR1
    /// candidate and why `rtmr1`/`rtmr2` stay null. Absent for other boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uki_boot: Option<UkiBootPrediction>,
}

/// `measurements.json` `tdx.uki_boot`: what can be derived for `-kernel uki.efi` and how far it
/// is trusted. Nothing here has been compared with a TD's event log by this project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UkiBootPrediction {
    /// Always false: no value here was checked against a TD quote or event log.
    pub verified_on_hardware: bool,
    /// RTMR1 replayed from `rtmr1_events`, for comparison with a quote; see `basis`.
    pub rtmr1_candidate: String,
    /// The RTMR1 events the candidate assumes, in log order.
    pub rtmr1_events: Vec<RtmrEvent>,
    /// Events the Linux EFI stub adds to RTMR2 (among others that are not predicted).
    pub rtmr2_events: Vec<RtmrEvent>,
    /// How the values were derived and under which assumptions.
    pub basis: String,
    /// Why RTMR0 and RTMR2 are not predicted.
    pub not_predicted: NotPredicted,
}

/// One predicted event of a TD event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtmrEvent {
    /// Event type and what was measured.
    pub event: String,
    /// The SHA-384 digest in the event, hex.
    pub digest: String,
}

/// Reasons for the RTMRs `measurements.json` leaves null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotPredicted {
    /// Why RTMR0 is not predicted.
    pub rtmr0: String,
    /// Why RTMR1 is only a candidate.
    pub rtmr1: String,
    /// Why RTMR2 is not predicted.
    pub rtmr2: String,
}

const UKI_BASIS: &str = "RTMR = SHA384(RTMR || event digest) from zero; RTMR1 = [Authenticode SHA-384 of uki.efi (TDVF measures the -kernel image it LoadImage()s before ReadyToBoot), EV_EFI_ACTION 'Calling EFI Application from Boot Option', EV_SEPARATOR, Authenticode SHA-384 of the .linux section (systemd-stub LoadImage()s it; dstack-mr records this event from TDX hardware for UKI disk boot), EV_EFI_ACTION 'Exit Boot Services Invocation', 'Exit Boot Services Returned with Success']; the constant events and the replay rule reproduce Intel tdx-tools' published direct-boot log. RTMR2 events: LOADED_IMAGE::LoadOptions = SHA384(UTF-16LE .cmdline + NUL) and 'Linux initrd' = SHA384(.initrd), measured by the Linux EFI stub when systemd-stub passes them on unchanged";

const NOT_RTMR0: &str = "RTMR0 covers the TD HOB (memory size), the OVMF variable store and QEMU's ACPI tables and table-loader script, which depend on the QEMU version, machine type, vCPUs, memory and devices: capture it from a running TD's event log once per host profile";
const NOT_RTMR1: &str = "only a candidate: it assumes the VMM hands uki.efi to TDVF unmodified (QEMU patches setup headers of -kernel images on some versions; a patched header changes the first event) and that systemd-stub's LoadImage of .linux is measured; not yet compared with a TD quote, so attestation does not use it (rtmr1 stays null)";
const NOT_RTMR2: &str = "systemd-stub also measures the UKI's sections (PCR 11) and possibly credentials or system extensions (PCR 12/13) into RTMR2 when it supports the CC measurement protocol, which depends on the systemd version inside the UKI; only the Linux EFI stub's events are listed";

fn rtmr_event(event: &str, digest: &[u8; 48]) -> RtmrEvent {
    RtmrEvent {
        event: event.to_owned(),
        digest: hex::encode(digest),
    }
}

/// The RTMR prediction for a direct boot of the UKI at `uki`.
pub fn predict_uki_boot(uki: &Path) -> Result<UkiBootPrediction> {
    let data = read_input(uki, "UKI")?;
    let events = rtmr::UkiEvents::of(&data).map_err(|err| {
        bad_input(format!(
            "{}: {err}; pass the UKI the build wrote",
            uki.display()
        ))
    })?;
    let rtmr1 = events.rtmr1_events();
    let names = [
        "EV_EFI_BOOT_SERVICES_APPLICATION uki.efi (Authenticode)",
        "EV_EFI_ACTION Calling EFI Application from Boot Option",
        "EV_SEPARATOR",
        "EV_EFI_BOOT_SERVICES_APPLICATION .linux (Authenticode)",
        "EV_EFI_ACTION Exit Boot Services Invocation",
        "EV_EFI_ACTION Exit Boot Services Returned with Success",
    ];
    let mut rtmr2_events = Vec::new();
    if let Some(digest) = &events.load_options {
        rtmr2_events.push(rtmr_event(
            "EV_EVENT_TAG LOADED_IMAGE::LoadOptions (.cmdline)",
            digest,
        ));
    }
    if let Some(digest) = &events.initrd {
        rtmr2_events.push(rtmr_event("EV_EVENT_TAG Linux initrd (.initrd)", digest));
    }
    Ok(UkiBootPrediction {
        verified_on_hardware: false,
        rtmr1_candidate: hex::encode(rtmr::replay(&rtmr1)),
        rtmr1_events: names
            .iter()
            .zip(&rtmr1)
            .map(|(name, digest)| rtmr_event(name, digest))
            .collect(),
        rtmr2_events,
        basis: UKI_BASIS.to_owned(),
        not_predicted: NotPredicted {
            rtmr0: NOT_RTMR0.to_owned(),
            rtmr1: NOT_RTMR1.to_owned(),
            rtmr2: NOT_RTMR2.to_owned(),
        },
    })
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

/// The bad-input error for an input file that cannot be read.
fn unreadable(path: &Path, what: &str, err: std::io::Error) -> anyhow::Error {
    bad_input(format!(
        "{}: cannot read the {what}: {err}; pass an existing file",
        path.display()
    ))
}

/// Reads an input file named on the command line or by the model; failures are bad input.
fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| unreadable(path, what, err))
}

/// SHA-256 of the file at `path` (hex), as a measurement hashes a kernel or initrd.
pub fn file_sha256(path: &Path, what: &str) -> Result<String> {
    sha256_input(path, what).map(|(_, hex)| hex)
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

/// A firmware file as an SNP measurement reads it.
enum FirmwareInput {
    /// Read whole: an image of an implausible size, which the launch digest checks itself.
    Whole(Vec<u8>),
    /// Streamed through [`snp::file_page_hashes`], with the image's last bytes for the parser.
    Hashed {
        len: usize,
        pages: Vec<snp::LaunchDigest>,
        tail: Vec<u8>,
    },
}

/// The last bytes of a firmware image read for its parser: OVMF's footer table and SEV metadata
/// sit in its last few KiB (the reset vector).
const FIRMWARE_TAIL: usize = 64 << 10;

/// Reads the firmware at `path` for an SNP measurement on up to `threads` threads, keeping its
/// last `tail_bytes`.
fn read_firmware(path: &Path, tail_bytes: usize, threads: usize) -> Result<FirmwareInput> {
    use std::os::unix::fs::FileExt;
    let unreadable = |err| unreadable(path, "firmware", err);
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let len = match usize::try_from(len) {
        Ok(len) if len > 0 && len % 4096 == 0 && len <= MAX_PREHASHED_FIRMWARE => len,
        _ => return read_input(path, "firmware").map(FirmwareInput::Whole),
    };
    let pages = snp::file_page_hashes(&file, len as u64, threads).map_err(unreadable)?;
    let tail_len = len.min(tail_bytes);
    let mut tail = vec![0u8; tail_len];
    file.read_exact_at(&mut tail, (len - tail_len) as u64)
        .map_err(unreadable)?;
    Ok(FirmwareInput::Hashed { len, pages, tail })
}

/// The launch digest of `firmware` (read from `path`); a streamed image whose last bytes did not
/// parse is read whole and measured again, so the answer or the error is the whole image's.
fn snp_digest(
    path: &Path,
    firmware: &FirmwareInput,
    params: &SnpParams,
) -> Result<snp::LaunchDigest> {
    match firmware {
        FirmwareInput::Whole(data) => snp::launch_digest(data, params),
        FirmwareInput::Hashed { len, pages, tail } => {
            let streamed = snp::launch_digest_of(
                snp::Firmware::Hashed {
                    len: *len,
                    pages,
                    tail,
                },
                params,
            );
            match streamed {
                Err(_) if tail.len() < *len => {
                    snp::launch_digest(&read_input(path, "firmware")?, params)
                }
                result => result,
            }
        }
    }
}

/// The files of an SNP request, read and hashed.
struct SnpPrepared {
    firmware: FirmwareInput,
    params: SnpParams,
    vcpu_type: Option<String>,
    kernel_sha256: Option<String>,
    initrd_sha256: Option<String>,
}

/// The largest firmware whose pages are hashed before it is parsed (real OVMF images are 2-4 MiB);
/// anything larger is checked first.
const MAX_PREHASHED_FIRMWARE: usize = 64 << 20;

/// Kernels and initrds from this size on are hashed on their own thread.
const PARALLEL_KERNEL_BYTES: u64 = 1 << 20;

/// SHA-256 of the kernel and initrd of `request` (raw and hex each).
type KernelFileHashes = Option<(([u8; 32], String), Option<([u8; 32], String)>)>;

fn hash_kernel_files(request: &SnpRequest) -> Result<KernelFileHashes> {
    let Some(kernel) = &request.kernel else {
        return Ok(None);
    };
    let kernel = sha256_input(kernel, "kernel")?;
    let initrd = request
        .initrd
        .as_deref()
        .map(|initrd| sha256_input(initrd, "initrd"))
        .transpose()?;
    Ok(Some((kernel, initrd)))
}

fn prepare_snp(request: &SnpRequest) -> Result<SnpPrepared> {
    let (vcpu_type, vcpu_sig) = match &request.vcpu {
        Vcpu::Type(name) => (Some(name.clone()), snp::vcpu_signature(name)?),
        Vcpu::Sig(sig) => (None, *sig),
    };
    // The kernel's SHA-256 (tens of MiB for a UKI) runs on its own thread while this one reads
    // and hashes the firmware pages; the launch digest's chain needs both.
    let (firmware, kernel_files) = std::thread::scope(|scope| {
        // A small kernel is hashed here afterwards: a thread would cost more than it saves.
        let big = |path: &Option<PathBuf>| {
            path.as_deref()
                .and_then(|path| std::fs::metadata(path).ok())
                .is_some_and(|metadata| metadata.len() >= PARALLEL_KERNEL_BYTES)
        };
        let kernel = (big(&request.kernel) || big(&request.initrd))
            .then(|| scope.spawn(|| hash_kernel_files(request)));
        // The kernel's thread has a core of its own.
        let threads = snp::hashing_threads() - usize::from(kernel.is_some());
        let firmware = read_firmware(&request.ovmf, FIRMWARE_TAIL, threads);
        let kernel_files = match kernel {
            None => hash_kernel_files(request),
            Some(worker) => worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        };
        (firmware, kernel_files)
    });
    let firmware = firmware?;
    let (kernel_hashes, kernel_sha256, initrd_sha256) = match kernel_files? {
        None => (None, None, None),
        Some(((kernel_raw, kernel_hex), initrd)) => {
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
    let digest = snp_digest(&request.ovmf, &prepared.firmware, &prepared.params)
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
            firmware_sha256: match &prepared.firmware {
                FirmwareInput::Whole(data) => cvm_core::hash::sha256_hex(data),
                FirmwareInput::Hashed { .. } => sha256_input(&request.ovmf, "firmware")?.1,
            },
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
        uki_boot: None,
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
        Tee::Tdx => {
            let mut tdx = measure_tdx(&firmware, page_add_order(model))?;
            if model.launch.boot == BootMode::DirectUki {
                tdx.uki_boot = Some(predict_uki_boot(&built_artifact(artifacts, "uki.efi")?)?);
            }
            Ok(Measurements {
                schema: 1,
                tee: Tee::Tdx,
                snp: None,
                tdx: Some(tdx),
            })
        }
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
