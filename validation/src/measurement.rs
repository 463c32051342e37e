//! `e2e.artifacts-measurement`: the measurement recomputed from the built artifacts, with exactly
//! the launch values the launch script uses (guest-image's `measure_artifacts`), equals the one
//! the build recorded in `measurements.json`. A mismatch means an artifact or the model changed
//! after the build, so attestation would reject the CVM.

use std::path::Path;

use cvm_core::{
    check::{CheckResult, Status},
    model::Model,
};
use guest_image::measure::{measure_artifacts, Measurements, MEASUREMENTS_FILE};

/// The check id.
pub const ID: &str = "e2e.artifacts-measurement";
const TITLE: &str = "measurement recomputed from the artifacts equals the manifest's";
const REBUILD: &str = "Rebuild with `cargo xtask guest build` (the artifacts or the model changed after the build), then register the new measurement.";

/// Evaluates `e2e.artifacts-measurement` for `model` over `artifacts`.
pub fn check(model: &Model, artifacts: &Path) -> CheckResult {
    let result = |status, detail: String, remediation: &str| {
        CheckResult::new(ID, TITLE, status, detail, remediation)
    };
    let path = artifacts.join(MEASUREMENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            return result(
                Status::Skip,
                format!(
                    "measurement not recomputed: cannot read {}: {err}",
                    path.display()
                ),
                "",
            )
        }
    };
    let recorded = match serde_json::from_str::<Measurements>(&text) {
        Ok(recorded) => recorded,
        Err(err) => {
            return result(
                Status::Fail,
                format!("{}: not a measurements file: {err}", path.display()),
                REBUILD,
            )
        }
    };
    let Some(expected) = recorded.primary() else {
        return result(
            Status::Fail,
            format!(
                "{} names TEE {} but has no measurement for it",
                path.display(),
                recorded.tee.as_str()
            ),
            REBUILD,
        );
    };
    let recomputed = match measure_artifacts(model, artifacts) {
        Ok(recomputed) => recomputed,
        Err(err) => {
            return result(
                Status::Fail,
                format!("recomputing the measurement: {err:#}"),
                REBUILD,
            )
        }
    };
    let actual = recomputed.primary().unwrap_or_default();
    if recomputed.tee == recorded.tee && actual.eq_ignore_ascii_case(expected) {
        result(
            Status::Pass,
            format!(
                "{} {actual} equals {}",
                recorded.tee.as_str(),
                path.display()
            ),
            "",
        )
    } else {
        result(
            Status::Fail,
            format!(
                "recomputed {} {actual} but {} records {} {expected}",
                recomputed.tee.as_str(),
                path.display(),
                recorded.tee.as_str()
            ),
            REBUILD,
        )
    }
}

#[cfg(test)]
mod tests;
