//! `firmware.tee-support` (DESIGN.md §6, the model-dependent check validation adds to the
//! preflight registry): the firmware the launch script passes to `-bios` carries the metadata the
//! model's TEE needs. SEV-SNP needs the SEV metadata, and for measured direct UKI boot its
//! kernel-hashes section (without it QEMU's `kernel-hashes=on` has nowhere to put the hashes);
//! TDX needs the TDVF metadata table. The parsers are guest-image's measurement parsers.

use std::path::{Path, PathBuf};

use cvm_core::{
    check::{CheckResult, Status},
    model::{BootMode, Model, Tee},
};
use guest_image::measure::ovmf::{Ovmf, SevSectionKind};

/// The check id.
pub const ID: &str = "firmware.tee-support";
const TITLE: &str = "the launch firmware carries the metadata the model's TEE needs";

/// The firmware the launch uses: `launch.firmware.path`, else the build's `firmware.fd`.
pub fn launch_firmware(model: &Model, artifacts: &Path) -> PathBuf {
    match &model.launch.firmware {
        Some(firmware) => firmware.path.clone(),
        None => artifacts.join("firmware.fd"),
    }
}

/// Evaluates `firmware.tee-support` for `model` over the firmware in `artifacts`.
pub fn tee_support(model: &Model, artifacts: &Path) -> CheckResult {
    let path = launch_firmware(model, artifacts);
    let result = |status, detail: String, remediation: &str| {
        CheckResult::new(ID, TITLE, status, detail, remediation)
    };
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(err) => {
            return result(
                Status::Skip,
                format!(
                    "firmware not checked: cannot read {}: {err}",
                    path.display()
                ),
                "",
            )
        }
    };
    let shown = path.display();
    let remediation = match model.deployment.tee {
        Tee::Snp => "Use an OVMF built for SEV-SNP (OvmfPkg/AmdSev, e.g. Ubuntu's OVMF.amdsev.fd): it has the SEV metadata and the kernel-hashes page.",
        Tee::Tdx => "Use a TDX-enabled OVMF (TDVF, e.g. Ubuntu's OVMF.fd or OVMF.inteltdx.fd): it has the TDVF metadata table.",
    };
    let ovmf = match Ovmf::parse(&data) {
        Ok(ovmf) => ovmf,
        Err(err) => return result(Status::Fail, format!("{shown} {err:#}"), remediation),
    };
    match model.deployment.tee {
        Tee::Snp => match ovmf.sev_metadata() {
            Err(err) => result(Status::Fail, format!("{shown} {err:#}"), remediation),
            Ok(None) => result(
                Status::Fail,
                format!("{shown} has no SEV metadata: it cannot launch an SEV-SNP guest"),
                remediation,
            ),
            Ok(Some(sections)) => {
                let hashes = sections
                    .iter()
                    .any(|section| section.kind == SevSectionKind::KernelHashes);
                match (model.launch.boot, hashes) {
                    (BootMode::DirectUki, false) => result(
                        Status::Fail,
                        format!("{shown} has SEV metadata but no kernel-hashes section, which launch.boot = \"direct-uki\" needs"),
                        remediation,
                    ),
                    (BootMode::DirectUki, true) => result(
                        Status::Pass,
                        format!("{shown} has SEV metadata ({} sections) with a kernel-hashes section", sections.len()),
                        "",
                    ),
                    (BootMode::Disk, _) => result(
                        Status::Pass,
                        format!("{shown} has SEV metadata ({} sections)", sections.len()),
                        "",
                    ),
                }
            }
        },
        Tee::Tdx => match ovmf.tdvf_metadata() {
            Err(err) => result(Status::Fail, format!("{shown} {err:#}"), remediation),
            Ok(None) => result(
                Status::Fail,
                format!("{shown} has no TDVF metadata table: it cannot launch a TDX guest"),
                remediation,
            ),
            Ok(Some(sections)) => result(
                Status::Pass,
                format!(
                    "{shown} has a TDVF metadata table ({} sections)",
                    sections.len()
                ),
                "",
            ),
        },
    }
}

#[cfg(test)]
mod tests;
