//! The emulated boot test: QEMU with the model's own firmware, from the disk (the ESP's UKI) or by
//! direct boot of the UKI (`-kernel uki.efi`, the path SEV-SNP measured boot uses). The argument
//! vector is the launch script's ([`crate::launch::emulated_args`]) with the confidential objects,
//! passed-through devices and network left out, so this test exercises the launch wiring. KVM is
//! used only when a probe shows it really runs firmware; otherwise TCG. The guest keeps running
//! after `CVM-STATUS`; QEMU is stopped once the line is read.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use cvm_core::{cmd::Cmd, model::LoadedModel};

use super::status::{self, CvmStatus};
use crate::launch::{self, EmulatedAccel, LaunchPaths};

/// How the guest is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// The firmware boots \EFI\BOOT\BOOTX64.EFI from the disk's ESP.
    Disk,
    /// The firmware boots `-kernel uki.efi` (QEMU's fw_cfg kernel).
    Direct,
}

impl BootMode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Disk => "disk",
            BootMode::Direct => "direct",
        }
    }
}

/// The accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when the probe says it runs firmware, else TCG.
    Auto,
    /// KVM only.
    Kvm,
    /// TCG only.
    Tcg,
}

/// Host firmware for the KVM probe (Debian/Ubuntu ovmf package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";

/// The host's generic OVMF (one image, for `-bios`; Debian/Ubuntu ovmf package), which the
/// emulated direct boot uses: the AmdSev build in firmware.fd loads a `-kernel` blob only when
/// an SEV launch has put the kernel hashes table in encrypted memory (edk2's
/// BlobVerifierLibSevHashes refuses it otherwise) and then boots the disk's ESP instead, so an
/// emulated direct boot with it would not boot the UKI it names.
pub const HOST_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// One boot to run.
pub struct BootRequest<'a> {
    /// The model the artifacts were built from: vCPUs, memory and firmware come from it, as in
    /// the launch script.
    pub model: &'a LoadedModel,
    /// The built artifacts (uki.efi, disk.qcow2, firmware.fd unless the model names a firmware).
    pub artifacts: &'a Path,
    /// The disk to attach (normally `artifacts/disk.qcow2`; the tamper test passes a copy).
    pub disk: PathBuf,
    /// Disk or direct boot.
    pub mode: BootMode,
    /// The accelerator to use (already resolved: Kvm or Tcg).
    pub kvm: bool,
    /// How long to wait for CVM-STATUS.
    pub timeout: Duration,
    /// Where the serial log goes.
    pub serial_log: PathBuf,
}

/// The result of a boot.
#[derive(Debug)]
pub struct BootOutcome {
    /// The status line, when the guest printed one.
    pub status: Option<CvmStatus>,
    /// Seconds from QEMU start to the status line (or to the end).
    pub seconds: f64,
    /// Why the boot failed, when it did: a line of the serial log or what happened.
    pub failure: Option<String>,
    /// The serial log.
    pub serial_log: PathBuf,
}

impl BootOutcome {
    /// True when the guest reported ready with verity active and no failed unit.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
            && self
                .status
                .as_ref()
                .is_some_and(|s| s.ready && s.verity == "active" && s.failed_units.is_empty())
    }
}

/// True when KVM can really run firmware here: a tiny firmware-less probe would not tell, so the
/// probe boots OVMF with `-accel kvm` for a few seconds and looks for any serial output.
pub fn kvm_runs_firmware(work: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() || !Path::new(OVMF_CODE).exists() {
        return false;
    }
    let log = work.join("kvm-probe.log");
    let _ = fs::remove_file(&log);
    let result = Cmd::new("qemu-system-x86_64")
        .args([
            "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-bios")
        .arg(OVMF_CODE)
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .timeout(Duration::from_secs(8))
        .output();
    let printed = fs::read(&log)
        .map(|bytes| !bytes.is_empty())
        .unwrap_or(false);
    let _ = fs::remove_file(&log);
    // A timeout is the normal end of the probe (OVMF waits for a boot device).
    let _ = result;
    printed
}

/// Resolves `accel` to "use KVM?".
pub fn resolve_accel(accel: Accel, work: &Path) -> Result<bool> {
    match accel {
        Accel::Tcg => Ok(false),
        Accel::Auto => Ok(kvm_runs_firmware(work)),
        Accel::Kvm => {
            if kvm_runs_firmware(work) {
                Ok(true)
            } else {
                bail!("KVM cannot run firmware on this host (the probe printed nothing): use --accel tcg or auto")
            }
        }
    }
}

/// The QEMU command line for `request`: the launch script's wiring for the model with its boot
/// mode set to `request.mode`, without the confidential objects.
pub fn qemu_command(request: &BootRequest<'_>) -> Result<Cmd> {
    let mut model = request.model.clone();
    model.model.launch.boot = match request.mode {
        BootMode::Disk => cvm_core::model::BootMode::Disk,
        BootMode::Direct => cvm_core::model::BootMode::DirectUki,
    };
    let firmware = match (request.mode, &model.model.launch.firmware) {
        (BootMode::Direct, _) => {
            if !Path::new(HOST_OVMF).is_file() {
                bail!("{HOST_OVMF} is missing: the emulated direct boot needs the host's generic OVMF; install the ovmf package");
            }
            PathBuf::from(HOST_OVMF)
        }
        (BootMode::Disk, Some(firmware)) => model.resolve(&firmware.path),
        (BootMode::Disk, None) => request.artifacts.join(launch::FIRMWARE_FILE),
    };
    let uki = request.artifacts.join("uki.efi");
    let paths = LaunchPaths {
        firmware: &firmware,
        uki: &uki,
        disk: &request.disk,
        serial_log: &request.serial_log,
    };
    let accel = if request.kvm {
        EmulatedAccel::Kvm
    } else {
        EmulatedAccel::Tcg
    };
    let argv = launch::emulated_args(&model, &paths, accel)?;
    Ok(Cmd::new("qemu-system-x86_64").args(argv))
}

/// Boots and waits for CVM-STATUS, a failure marker, QEMU's exit or the timeout.
pub fn boot(request: &BootRequest<'_>) -> Result<BootOutcome> {
    let work = request
        .serial_log
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let command = qemu_command(request)?;
    let _ = fs::remove_file(&request.serial_log);
    let started = Instant::now();
    let mut child = command.spawn_background()?;
    let mut outcome = BootOutcome {
        status: None,
        seconds: 0.0,
        failure: None,
        serial_log: request.serial_log.clone(),
    };
    loop {
        thread::sleep(Duration::from_millis(250));
        let log = fs::read(&request.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Some(found) = status::find_in_log(&log) {
            match found {
                Ok(parsed) => outcome.status = Some(parsed),
                Err(err) => outcome.failure = Some(format!("unreadable CVM-STATUS line: {err}")),
            }
            break;
        }
        if let Some(line) = status::boot_failure(&log) {
            // Let the guest finish printing its reason (it powers off by itself).
            thread::sleep(Duration::from_secs(2));
            outcome.failure = Some(line);
            break;
        }
        if let Some(exit) = child.try_wait().context("waiting for QEMU")? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            outcome.failure = Some(format!(
                "QEMU exited ({exit}) before the guest reported CVM-STATUS{}",
                if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", stderr.trim())
                }
            ));
            break;
        }
        if started.elapsed() > request.timeout {
            outcome.failure = Some(format!(
                "no CVM-STATUS within {} s",
                request.timeout.as_secs()
            ));
            break;
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    if outcome.failure.is_none() {
        if let Some(status) = &outcome.status {
            if !status.ready || status.verity != "active" || !status.failed_units.is_empty() {
                outcome.failure = Some(format!(
                    "the guest is not ready: verity {}, firewall {}, failed units [{}]",
                    status.verity,
                    status.firewall,
                    status.failed_units.join(", ")
                ));
            }
        }
    }
    Ok(outcome)
}

/// The last `lines` lines of the serial log, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
