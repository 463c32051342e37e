//! The guest's readiness line (DESIGN.md §5) and the checks read from it: `e2e.guest-ready`,
//! `e2e.guest-tee`, `e2e.gpu-cc-ready` and `e2e.measurement-match`.

use cvm_core::check::{CheckResult, Status};

/// The readiness line's prefix and object, as guest-image's `cvm-status` prints them.
pub use guest_image::image::status::{CvmStatus, PREFIX as STATUS_PREFIX};

/// What a launched (or emulated) guest left behind for the guest checks.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The serial console log.
    pub serial_log: String,
    /// True when the guest booted non-confidentially under QEMU (`--emulate`).
    pub emulated: bool,
}

/// The last `CVM-STATUS` line of `serial_log`, parsed.
pub fn find_status(serial_log: &str) -> Option<Result<CvmStatus, String>> {
    let line = serial_log.lines().rev().find_map(|line| {
        line.find(STATUS_PREFIX)
            .map(|at| &line[at + STATUS_PREFIX.len()..])
    })?;
    Some(
        serde_json::from_str(line.trim())
            .map_err(|err| format!("malformed CVM-STATUS line ({err}): {}", line.trim())),
    )
}

fn result(id: &str, title: &str, status: Status, detail: String, remediation: &str) -> CheckResult {
    CheckResult::new(id, title, status, detail, remediation)
}

const READY_TITLE: &str = "guest reports ready: CVM-STATUS ready, verity active, no failed units";
const TEE_TITLE: &str = "guest runs inside the model's TEE";
const GPU_TITLE: &str = "guest GPU confidential computing is on";
const MEASUREMENT_TITLE: &str = "guest's TEE-reported measurement equals the predicted one";

/// What the guest checks compare against, from the model and the artifacts.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The TEE name as CVM-STATUS spells it (`sev-snp`, `tdx`).
    pub tee: String,
    /// Whether the model assigns GPUs.
    pub gpus: bool,
    /// The predicted launch measurement (measurements.json), or why there is none.
    pub measurement: Result<String, String>,
}

/// Why the guest checks cannot read a status: the status and detail every dependent check reports.
struct NoStatus {
    status: Status,
    detail: String,
    remediation: &'static str,
}

fn status_of(run: Option<&GuestRun>, why_no_run: &str) -> Result<CvmStatus, NoStatus> {
    let serial_hint = "read the serial log: the guest powers off and says why on any boot failure";
    let Some(run) = run else {
        return Err(NoStatus {
            status: Status::Skip,
            detail: why_no_run.to_owned(),
            remediation: "",
        });
    };
    match find_status(&run.serial_log) {
        None => Err(NoStatus {
            status: Status::Fail,
            detail: "no CVM-STATUS line in the guest's serial log".to_owned(),
            remediation: serial_hint,
        }),
        Some(Err(reason)) => Err(NoStatus {
            status: Status::Fail,
            detail: reason,
            remediation: serial_hint,
        }),
        Some(Ok(status)) => Ok(status),
    }
}

/// `e2e.guest-ready`, `e2e.guest-tee` and `e2e.gpu-cc-ready` over one run; without a run (`None`)
/// they are skipped with `why_no_run`.
pub fn guest_checks(
    run: Option<&GuestRun>,
    why_no_run: &str,
    expected: &Expected,
) -> Vec<CheckResult> {
    match status_of(run, why_no_run) {
        Err(missing) => [
            ("e2e.guest-ready", READY_TITLE),
            ("e2e.guest-tee", TEE_TITLE),
            ("e2e.gpu-cc-ready", GPU_TITLE),
        ]
        .iter()
        .map(|(id, title)| {
            result(
                id,
                title,
                missing.status,
                missing.detail.clone(),
                missing.remediation,
            )
        })
        .collect(),
        Ok(status) => {
            let emulated = run.is_some_and(|run| run.emulated);
            vec![
                ready(&status),
                tee(&status, emulated, expected),
                gpu_cc(&status, emulated, expected),
            ]
        }
    }
}

/// `e2e.measurement-match` over one run; without a run it is skipped with `why_no_run`.
pub fn measurement_check(
    run: Option<&GuestRun>,
    why_no_run: &str,
    expected: &Expected,
) -> CheckResult {
    match status_of(run, why_no_run) {
        Err(missing) => result(
            "e2e.measurement-match",
            MEASUREMENT_TITLE,
            missing.status,
            missing.detail,
            missing.remediation,
        ),
        Ok(status) => measurement(&status, run.is_some_and(|run| run.emulated), expected),
    }
}

fn ready(status: &CvmStatus) -> CheckResult {
    let detail = format!(
        "ready={}, kernel {}, verity {}, firewall {}, failed units: {}",
        status.ready,
        status.kernel,
        status.verity,
        if status.firewall.is_empty() {
            "not reported"
        } else {
            &status.firewall
        },
        if status.failed_units.is_empty() {
            "none".to_owned()
        } else {
            status.failed_units.join(", ")
        }
    );
    if status.ready && status.verity == "active" && status.failed_units.is_empty() {
        result("e2e.guest-ready", READY_TITLE, Status::Pass, detail, "")
    } else {
        result(
            "e2e.guest-ready",
            READY_TITLE,
            Status::Fail,
            detail,
            "read the failed units' lines in the serial log and rebuild the image with the fix: cargo xtask guest build",
        )
    }
}

fn tee(status: &CvmStatus, emulated: bool, expected: &Expected) -> CheckResult {
    let detail = format!("CVM-STATUS tee = {}", status.tee);
    if emulated && status.tee == "none" {
        return result(
            "e2e.guest-tee",
            TEE_TITLE,
            Status::Skip,
            format!("{detail}: the emulated boot runs without a TEE; the TEE is checked when the CVM is launched on the node"),
            "",
        );
    }
    if status.tee == expected.tee {
        result("e2e.guest-tee", TEE_TITLE, Status::Pass, detail, "")
    } else {
        result(
            "e2e.guest-tee",
            TEE_TITLE,
            Status::Fail,
            format!("{detail}; expected {}", expected.tee),
            "launch with the rendered launch script on a host that passes `cargo xtask host check`; a guest without the TEE must never receive keys",
        )
    }
}

fn gpu_cc(status: &CvmStatus, emulated: bool, expected: &Expected) -> CheckResult {
    let detail = format!("CVM-STATUS gpu_cc = {}", status.gpu_cc);
    if !expected.gpus {
        return result(
            "e2e.gpu-cc-ready",
            GPU_TITLE,
            Status::Skip,
            format!("{detail}: the model assigns no GPU (launch.gpus is empty)"),
            "",
        );
    }
    if emulated {
        return result(
            "e2e.gpu-cc-ready",
            GPU_TITLE,
            Status::Skip,
            format!("{detail}: the emulated boot has no GPU passthrough; GPU CC is checked when the CVM is launched on the node"),
            "",
        );
    }
    if status.gpu_cc == "on" {
        result("e2e.gpu-cc-ready", GPU_TITLE, Status::Pass, detail, "")
    } else {
        result(
            "e2e.gpu-cc-ready",
            GPU_TITLE,
            Status::Fail,
            format!("{detail}; expected on"),
            "set every GPU of the host to CC mode on (nvidia_gpu_tools.py --set-cc-mode on --reset-after-cc-mode-switch) and relaunch",
        )
    }
}

fn measurement(status: &CvmStatus, emulated: bool, expected: &Expected) -> CheckResult {
    const ID: &str = "e2e.measurement-match";
    if emulated {
        return result(
            ID,
            MEASUREMENT_TITLE,
            Status::Skip,
            "the emulated boot has no TEE report to compare; the measurement is compared when the CVM is launched on the node".to_owned(),
            "",
        );
    }
    let predicted = match &expected.measurement {
        Ok(predicted) => predicted,
        Err(reason) => {
            return result(
                ID,
                MEASUREMENT_TITLE,
                Status::Fail,
                format!("no predicted measurement: {reason}"),
                "rebuild the artifacts (cargo xtask guest build writes measurements.json)",
            )
        }
    };
    match &status.measurement {
        None => result(
            ID,
            MEASUREMENT_TITLE,
            Status::Fail,
            "CVM-STATUS has no measurement (null)".to_owned(),
            "the guest could not read its TEE report via configfs-tsm; check that the guest kernel has TSM report support",
        ),
        Some(found) if found.eq_ignore_ascii_case(predicted) => result(
            ID,
            MEASUREMENT_TITLE,
            Status::Pass,
            format!("measurement {found} equals measurements.json"),
            "",
        ),
        Some(found) => result(
            ID,
            MEASUREMENT_TITLE,
            Status::Fail,
            format!("the guest reports {found}, measurements.json predicts {predicted}"),
            "the launch differs from what was measured (firmware, kernel, command line, vCPUs or policy): launch with the rendered script from the same build and compare its --dry-run inputs with measurements.json",
        ),
    }
}

#[cfg(test)]
mod tests;
