//! The guest checks over recorded serial logs (tests/data/serial), one line of data per case.

use std::path::Path;

use cvm_core::check::Status::{self, Fail, Pass, Skip};

use super::{find_status, guest_checks, measurement_check, Expected, GuestRun};

/// The measurement the serial logs report: 48 bytes as 96 hex digits.
fn predicted() -> String {
    "ab".repeat(48)
}

fn log(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/serial")
            .join(name),
    )
    .unwrap()
}

/// Reads `log_name` as an emulated or hardware run and asserts the four statuses, in the order
/// guest-ready, guest-tee, gpu-cc-ready, measurement-match.
#[track_caller]
fn check(
    log_name: &str,
    emulated: bool,
    gpus: bool,
    predicted: Result<&str, &str>,
    expect: [Status; 4],
) {
    let run = GuestRun {
        serial_log: log(log_name),
        emulated,
    };
    let expected = Expected {
        tee: "sev-snp".to_owned(),
        gpus,
        measurement: predicted.map(str::to_owned).map_err(str::to_owned),
    };
    let mut results = guest_checks(Some(&run), "unused", &expected);
    results.push(measurement_check(Some(&run), "unused", &expected));
    let found: Vec<(&str, Status)> = results
        .iter()
        .map(|result| (result.id.as_str(), result.status))
        .collect();
    let ids = [
        "e2e.guest-ready",
        "e2e.guest-tee",
        "e2e.gpu-cc-ready",
        "e2e.measurement-match",
    ];
    let want: Vec<(&str, Status)> = ids.into_iter().zip(expect).collect();
    assert_eq!(
        found,
        want,
        "{log_name}:\n{}",
        results
            .iter()
            .map(|result| format!("{} {}", result.id, result.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn emulated_boot_never_passes_tee_gpu_or_measurement() {
    check(
        "emulated-ready.log",
        true,
        true,
        Ok(&predicted()),
        [Pass, Skip, Skip, Skip],
    );
    check(
        "emulated-ready.log",
        true,
        false,
        Ok(&predicted()),
        [Pass, Skip, Skip, Skip],
    );
}

#[test]
fn snp_guest_on_the_node_passes() {
    check(
        "snp-ready.log",
        false,
        true,
        Ok(&predicted()),
        [Pass, Pass, Pass, Pass],
    );
}

#[test]
fn measurement_differs_from_the_prediction() {
    check(
        "snp-ready.log",
        false,
        true,
        Ok(&"cd".repeat(48)),
        [Pass, Pass, Pass, Fail],
    );
    check(
        "snp-ready.log",
        false,
        true,
        Err("cannot read measurements.json"),
        [Pass, Pass, Pass, Fail],
    );
}

#[test]
fn failed_unit_and_gpu_cc_off_fail() {
    check(
        "snp-failed-unit.log",
        false,
        true,
        Ok(&predicted()),
        [Fail, Pass, Fail, Pass],
    );
}

#[test]
fn no_tee_on_hardware_fails() {
    check(
        "no-tee-on-hardware.log",
        false,
        false,
        Ok(&predicted()),
        [Pass, Fail, Skip, Fail],
    );
}

#[test]
fn missing_or_malformed_status_fails_everything() {
    check("no-status.log", false, true, Ok(&predicted()), [Fail; 4]);
    check(
        "malformed-status.log",
        true,
        true,
        Ok(&predicted()),
        [Fail; 4],
    );
}

#[test]
fn no_run_skips_with_the_reason() {
    let expected = Expected {
        tee: "sev-snp".to_owned(),
        gpus: true,
        measurement: Ok(predicted()),
    };
    let reason = "the guest did not run: emulated boot not available: guest boot is not implemented in this build";
    let mut results = guest_checks(None, reason, &expected);
    results.push(measurement_check(None, reason, &expected));
    assert_eq!(results.len(), 4);
    for result in results {
        assert_eq!(
            (result.status, result.detail.as_str()),
            (Skip, reason),
            "{}",
            result.id
        );
    }
}

#[test]
fn the_last_status_line_counts() {
    let text = format!("{}\n{}", log("snp-failed-unit.log"), log("snp-ready.log"));
    let status = find_status(&text).unwrap().unwrap();
    assert!(status.ready);
    assert_eq!(status.measurement.as_deref(), Some(predicted().as_str()));
}
