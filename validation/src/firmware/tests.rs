//! `firmware.tee-support` over the exact OVMF builds in shared/test-data/firmware and a truncated
//! copy, for each TEE and boot mode.

use std::path::{Path, PathBuf};

use cvm_core::{
    check::Status::{self, Fail, Pass, Skip},
    model::{BootMode, Model, Tee},
};

use super::tee_support;

const AMDSEV: &str = "ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd";
const PLUCKY: &str = "ovmf-plucky-2025.02-3ubuntu2-OVMF.fd";

fn firmware_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    guest_image::measure::reference::test_firmware_dir(root)
}

fn model(tee: Tee, boot: BootMode) -> Model {
    let mut model = cvm_core::model::load(None).expect("default model").model;
    model.deployment.tee = tee;
    model.launch.boot = boot;
    model.launch.firmware = None;
    model
}

/// Copies `firmware` (a file in the shared directory, or `None` for no firmware) into a fresh
/// artifacts directory as firmware.fd, keeping its first `keep` bytes when given, and checks it.
#[track_caller]
fn check(
    tee: Tee,
    boot: BootMode,
    firmware: Option<&str>,
    keep: Option<usize>,
    expect: (Status, &str),
) {
    let Some(dir) = firmware_dir() else {
        cvm_core::skip::skip(
            "firmware_tee_support",
            "shared/test-data/firmware is not beside this checkout",
        );
        return;
    };
    let artifacts = tempfile::tempdir().expect("tempdir");
    let target = artifacts.path().join("firmware.fd");
    if let Some(name) = firmware {
        let mut data = std::fs::read(dir.join(name)).expect("reading the test firmware");
        if let Some(keep) = keep {
            data.truncate(keep);
        }
        std::fs::write(&target, data).expect("writing firmware.fd");
    }
    let result = tee_support(&model(tee, boot), artifacts.path());
    let detail = result
        .detail
        .replace(&target.display().to_string(), "firmware.fd");
    assert_eq!((result.status, detail.as_str()), expect);
    assert_eq!(result.remediation.is_empty(), result.status != Fail);
}

#[test]
fn firmware_tee_support() {
    use BootMode::{DirectUki, Disk};
    use Tee::{Snp, Tdx};
    check(
        Snp,
        DirectUki,
        Some(AMDSEV),
        None,
        (
            Pass,
            "firmware.fd has SEV metadata (6 sections) with a kernel-hashes section",
        ),
    );
    check(Snp, DirectUki, Some(PLUCKY), None, (Fail, "firmware.fd has SEV metadata but no kernel-hashes section, which launch.boot = \"direct-uki\" needs"));
    check(
        Snp,
        Disk,
        Some(PLUCKY),
        None,
        (Pass, "firmware.fd has SEV metadata (6 sections)"),
    );
    check(
        Tdx,
        DirectUki,
        Some(PLUCKY),
        None,
        (Pass, "firmware.fd has a TDVF metadata table (6 sections)"),
    );
    // The noble AmdSev build carries a TDVF table too (edk2 2024.02 shares the reset vector).
    check(
        Tdx,
        DirectUki,
        Some(AMDSEV),
        None,
        (Pass, "firmware.fd has a TDVF metadata table (6 sections)"),
    );
    check(Tdx, DirectUki, Some(PLUCKY), Some(1 << 20), (Fail, "firmware.fd has no OVMF footer GUID table 32 bytes before its end: not an OVMF image, or a truncated one"));
    check(Snp, DirectUki, Some(AMDSEV), Some(1 << 20), (Fail, "firmware.fd has no OVMF footer GUID table 32 bytes before its end: not an OVMF image, or a truncated one"));
    check(
        Snp,
        DirectUki,
        None,
        None,
        (
            Skip,
            "firmware not checked: cannot read firmware.fd: No such file or directory (os error 2)",
        ),
    );
}
