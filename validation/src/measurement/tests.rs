//! `e2e.artifacts-measurement` over fake artifacts: the shared AmdSev OVMF as firmware.fd, a few
//! bytes as uki.efi and measurements.json written by guest-image; then tampered variants.

use std::path::Path;

use cvm_core::{
    check::Status::{self, Fail, Pass, Skip},
    model::{BootMode, Model, Tee},
};
use guest_image::measure::{measure_artifacts, write_measurements};

use super::check;

const AMDSEV: &str = "ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd";

fn snp_model() -> Model {
    let mut model = cvm_core::model::load(None).expect("default model").model;
    model.deployment.tee = Tee::Snp;
    model.launch.boot = BootMode::DirectUki;
    model.launch.firmware = None;
    model
}

/// What to do to the artifacts after measurements.json is written.
enum Tamper {
    Nothing,
    Uki(&'static [u8]),
    RemoveMeasurements,
    Measurements(&'static str),
}

/// Builds the fake artifacts, applies `tamper` and asserts the check's status and detail (the
/// artifacts directory shown as `ART`).
#[track_caller]
fn run(tamper: Tamper, expect: (Status, &str)) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let Some(dir) = guest_image::measure::reference::test_firmware_dir(root) else {
        cvm_core::skip::skip(
            "artifacts_measurement",
            "shared/test-data/firmware is not beside this checkout",
        );
        return;
    };
    let artifacts = tempfile::tempdir().expect("tempdir");
    let art = artifacts.path();
    std::fs::copy(dir.join(AMDSEV), art.join("firmware.fd")).expect("copying the firmware");
    std::fs::write(art.join("uki.efi"), b"not really a UKI").expect("writing uki.efi");
    let model = snp_model();
    let measurements = measure_artifacts(&model, art).expect("measuring");
    write_measurements(art, &measurements).expect("writing measurements.json");
    match tamper {
        Tamper::Nothing => {}
        Tamper::Uki(bytes) => std::fs::write(art.join("uki.efi"), bytes).expect("tampering"),
        Tamper::RemoveMeasurements => {
            std::fs::remove_file(art.join("measurements.json")).expect("removing")
        }
        Tamper::Measurements(text) => {
            std::fs::write(art.join("measurements.json"), text).expect("tampering")
        }
    }
    let result = check(&model, art);
    let detail = result.detail.replace(&art.display().to_string(), "ART");
    assert_eq!((result.status, detail.as_str()), expect);
    assert_eq!(result.remediation.is_empty(), result.status != Fail);
}

#[test]
fn artifacts_measurement() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/measurement");
    let expected = std::fs::read_to_string(fixtures.join("expected.txt")).expect("expected.txt");
    let mut lines = expected.lines().filter(|line| !line.starts_with('#'));
    let mut next = || lines.next().expect("expected.txt has one line per case");
    run(Tamper::Nothing, (Pass, next()));
    run(Tamper::Uki(b"a different UKI"), (Fail, next()));
    run(Tamper::RemoveMeasurements, (Skip, next()));
    run(
        Tamper::Measurements("{\"schema\": 1, \"tee\": \"snp\"}"),
        (Fail, next()),
    );
}
